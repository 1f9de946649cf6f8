//! The spool directory's exclusive lock: `<spool dir>/lock`, held with `flock(2)` (std's
//! `File::try_lock`) by the running bridge from the spool's opening to its stop, and by
//! `qminder-bridge spool parked replay`. A second holder is refused at once with a message
//! that says who holds it; the kernel releases the lock when the holder's process ends,
//! however it ends, so a crashed bridge never leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (creating both if needed), or says that someone holds it.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another process holds the spool directory {} (its lock {}): a running \
                     bridge, or another spool command. Stop it first",
                    dir.display(),
                    path.display()
                ),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether someone holds the lock of `dir` now (false if there is no lock file).
    pub fn is_held(dir: &Path) -> io::Result<bool> {
        let path = dir.join("lock");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!DirLock::is_held(dir.path()).unwrap());
        let first = DirLock::acquire(dir.path()).unwrap();
        assert!(DirLock::is_held(dir.path()).unwrap());
        let refused = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        assert!(refused.to_string().contains("Stop it first"), "{refused}");
        drop(first);
        assert!(!DirLock::is_held(dir.path()).unwrap());
        DirLock::acquire(dir.path()).unwrap();
    }
}
