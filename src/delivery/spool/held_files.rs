//! The files of held records: `held/<topic>/<seq, 20 digits>.frame`, one whole frame
//! each, and how a spool directory's held records are found again at start.

use std::io;
use std::path::{Path, PathBuf};

use super::frame::{self, Spooled};

/// The file of held record `seq` in a topic's directory.
pub(super) fn file(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.frame"))
}

/// Whether `topic` can name a directory of its own (Kafka's topic characters).
pub(super) fn safe_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The record in a held file.
pub(super) fn read(path: &Path) -> io::Result<Spooled> {
    frame::read_file(path)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an intact frame"))
}

/// What [`scan`] found under `held/`.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// Every intact held file: (topic, sequence number, bytes).
    pub records: Vec<(String, u64, u64)>,
    /// Held files that were not an intact frame, moved to `parked/` (see [`park_damaged`]).
    pub parked: u64,
}

/// The held files under `held` (in the spool directory). What is not a topic's directory
/// is left alone; a file that is not a whole frame is parked as damage.
pub(super) fn scan(held: &Path) -> io::Result<Found> {
    let mut found = Found::default();
    let topics = match std::fs::read_dir(held) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for topic in topics {
        let topic = topic?;
        if !topic.file_type()?.is_dir() {
            continue;
        }
        let name = topic.file_name().to_string_lossy().into_owned();
        for entry in std::fs::read_dir(topic.path())? {
            let entry = entry?;
            let path = entry.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".frame"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            match read(&path) {
                Ok(_) => found
                    .records
                    .push((name.clone(), seq, entry.metadata()?.len())),
                Err(error) => {
                    found.parked += u64::from(park_damaged(held, &name, seq, &path, &error))
                }
            }
        }
    }
    Ok(found)
}

/// Moves a held file that is not an intact frame (an acknowledged event, damaged on disk)
/// to `parked/damaged-held-<topic>-<seq>.bin`, where damaged segment bytes go: counted
/// and alerted on, listed by `spool parked list`. A rename on the same filesystem, so it
/// needs no free space. True if it was moved; if not, it stays, and the ERROR says so.
fn park_damaged(held: &Path, topic: &str, seq: u64, path: &Path, error: &io::Error) -> bool {
    let parked = held
        .parent()
        .map(super::log::parked_dir)
        .unwrap_or_default();
    let to = parked.join(format!("damaged-held-{topic}-{seq:020}.bin"));
    let moved = super::durable::create_dir(&parked).and_then(|()| std::fs::rename(path, &to));
    match moved {
        Ok(()) => {
            tracing::error!(%error, file = %path.display(), parked = %to.display(), "A held spool file is not an intact record: parked its bytes for an operator.");
            true
        }
        Err(moving) => {
            tracing::error!(%error, %moving, file = %path.display(), "A held spool file is not an intact record and cannot be parked: left where it is for an operator, not forwarded.");
            false
        }
    }
}
