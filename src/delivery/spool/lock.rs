//! The spool directory's exclusive lock: `flock(2)` (std's `File::try_lock`) on the spool
//! directory itself, held by the running bridge from the spool's opening to its stop, and
//! by `qminder-bridge spool parked replay`. Not on a file in it: a lock file can be
//! unlinked, and the next bridge would lock a new inode and write the same segments. A second holder is refused at once with a message
//! that says who holds it; the kernel releases the lock when the holder's process ends,
//! however it ends, so a crashed bridge never leaves a stale lock behind.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    /// The directory.
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (creating it if needed), or says that someone holds it.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        super::durable::create_dir(dir)?;
        let path = dir.to_owned();
        let file = File::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another process holds the spool directory {} (a lock on the directory \
                     itself): a running bridge, or another spool command. Stop it first",
                    dir.display(),
                ),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether someone holds the lock of `dir` now (false if there is no such directory).
    pub fn is_held(dir: &Path) -> io::Result<bool> {
        let file = match File::open(dir) {
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

    #[test]
    fn the_lock_holds_even_when_its_file_is_unlinked() {
        // Issue 20, row 7: with the lock on a file, unlinking it let a second bridge lock a
        // new inode and write the same segments.
        let dir = tempfile::tempdir().unwrap();
        let _first = DirLock::acquire(dir.path()).unwrap();
        let _ = fs::remove_file(dir.path().join("lock"));
        assert!(DirLock::acquire(dir.path()).is_err(), "a second holder");
        assert!(DirLock::is_held(dir.path()).unwrap());
    }
}
