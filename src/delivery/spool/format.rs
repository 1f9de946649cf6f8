//! The spool's on-disk format version: a `format` file in the spool directory, one line,
//! `qminder-bridge spool format <n>`.
//!
//! Format 1 is the frame layout of `frame.rs` and the cursor of `cursor.rs`; releases up
//! to 2026-12-05 wrote it without the file, so a spool without one is format 1. A release
//! reads every format up to its own, and refuses a newer one (a downgrade with a backlog)
//! rather than misread it: nothing on disk is touched then.

use std::io;
use std::path::{Path, PathBuf};

/// The format this release writes.
pub const CURRENT: u32 = 1;

const PREFIX: &str = "qminder-bridge spool format ";

fn path(dir: &Path) -> PathBuf {
    dir.join("format")
}

/// The format of the spool in `dir`, if this release can read it; else an error that says
/// what to do.
pub fn read(dir: &Path) -> io::Result<u32> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(1),
        Err(e) => return Err(e),
    };
    let Some(version) = text
        .strip_suffix('\n')
        .and_then(|line| line.strip_prefix(PREFIX))
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a spool format file ({text:?}); if it was edited, write \
                 \"{PREFIX}{CURRENT}\" back unless a newer release wrote this spool",
                path.display()
            ),
        ));
    };
    if version > CURRENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the spool in {} was written by a newer release (spool format {version}; \
                 this release reads up to {CURRENT}): run the newer release until `qminder-bridge \
                 spool status` shows nothing to forward, or point this one at another directory",
                dir.display()
            ),
        ));
    }
    Ok(version)
}

/// Checks the format of the spool in `dir` and records it when the file is missing (a new
/// spool, or one written before the file existed). A file that cannot be written (a full
/// disk) is not an error: without it the spool is format 1, which is what is on disk.
pub fn check_and_record(dir: &Path) -> io::Result<u32> {
    let version = read(dir)?;
    if !path(dir).exists() {
        let line = format!("{PREFIX}{version}\n");
        if let Err(error) = super::durable::replace(&path(dir), &[line.as_bytes()]) {
            tracing::warn!(%error, "Cannot write the spool's format file yet; will try at the next start.");
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_without_a_format_file_is_format_1_and_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_and_record(dir.path()).unwrap(), 1);
        let written = std::fs::read_to_string(dir.path().join("format")).unwrap();
        assert_eq!(written, "qminder-bridge spool format 1\n");
        assert_eq!(read(dir.path()).unwrap(), 1);
    }

    #[test]
    fn a_newer_or_unreadable_format_is_refused_and_left_as_it_is() {
        for (text, said) in [
            ("qminder-bridge spool format 2\n", "newer release"),
            ("qminder-bridge spool format 1", "not a spool format file"),
            ("format 1\n", "not a spool format file"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("format"), text).unwrap();
            let error = check_and_record(dir.path()).unwrap_err().to_string();
            assert!(error.contains(said), "{text:?}: {error}");
            let left = std::fs::read_to_string(dir.path().join("format")).unwrap();
            assert_eq!(left, text);
        }
    }
}
