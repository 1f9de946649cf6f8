//! The spool's one way to write a whole file so that a crash leaves either the old file or
//! the complete new one: write a temporary file beside it, fsync it, rename it into place,
//! fsync the directory. Used for the cursor, parked records and repaired segments.
//! And the one way the spool creates files and directories: 0600 and 0700 whatever the
//! process's umask, since they hold personal data.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Options that create a file readable and writable by the bridge's user only.
pub(super) fn private() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Creates `dir` and its missing parents, 0700, durably; an existing `dir` (made by an
/// earlier release, or by a volume mount) is made 0700 where the bridge may.
pub(super) fn create_dir(dir: &Path) -> std::io::Result<()> {
    let new: Vec<&Path> = dir.ancestors().take_while(|d| !d.is_dir()).collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    make_private(dir, 0o700);
    // A new directory's entry is durable only once its parent is fsynced: what is written
    // in it (a held record, then a cursor moved past it) must not vanish with it.
    for created in new {
        sync_parent(created)?;
    }
    Ok(())
}

/// Sets `path`'s mode, where the bridge may (an earlier release's files were 0644).
pub(super) fn make_private(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o777 != mode
    {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    }
}

/// Durably creates or replaces `path` with `parts`, concatenated.
pub(super) fn replace(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    replace_with(path, |file| {
        parts.iter().try_for_each(|part| file.write_all(part))
    })
}

/// Durably creates or replaces `path` with what `write` writes: a temporary file beside
/// it, fsynced, renamed over it, the directory fsynced. A failed write removes the
/// temporary file (on a full disk it holds the space the failure was about).
pub(super) fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = private()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut file| {
            write(&mut file)?;
            file.sync_all()
        });
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Durably removes `path`, and `also` if it exists (in the same directory).
pub(super) fn remove(path: &Path, also: &Path) -> std::io::Result<()> {
    fs::remove_file(path)?;
    match fs::remove_file(also) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    sync_parent(path)
}

/// fsyncs the directory holding `path`, so that a rename or removal in it is durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        super::replace(&path, &[b"old"]).unwrap();
        super::replace(&path, &[b"new ", b"parts"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new parts");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn removes_a_file_and_its_companion_if_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let (frame, reason) = (dir.path().join("1.frame"), dir.path().join("1.reason"));
        super::replace(&frame, &[b"f"]).unwrap();
        super::replace(&reason, &[b"r"]).unwrap();
        super::remove(&frame, &reason).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        super::replace(&frame, &[b"f"]).unwrap();
        super::remove(&frame, &reason).unwrap();
        assert!(
            super::remove(&frame, &reason).is_err(),
            "the frame itself must exist"
        );
    }
}
