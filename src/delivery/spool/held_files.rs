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

/// Every intact held file under `held`: (topic, sequence number, bytes). What is not a
/// topic's directory, or not a whole frame, is left where it is (the latter with an
/// ERROR: an operator must look).
pub(super) fn scan(held: &Path) -> io::Result<Vec<(String, u64, u64)>> {
    let mut found = Vec::new();
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
                Ok(_) => found.push((name.clone(), seq, entry.metadata()?.len())),
                Err(error) => {
                    tracing::error!(%error, file = %path.display(), "A held spool file is not an intact record: left where it is for an operator, not forwarded.");
                }
            }
        }
    }
    Ok(found)
}
