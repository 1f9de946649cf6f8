//! Read-only views of a spool directory, for `qminder-bridge spool status|parked list|
//! parked export` (and [`remove_parked`], the one write, for `parked replay` under the
//! directory's lock): the views never write a byte, so they are safe next to a running
//! bridge (whose directory they then show as a snapshot). The backlog is counted by reading every frame
//! from the cursor on, as recovery and the forwarder find them (`scan.rs`, through a bounded
//! window): intact frames around damage are counted, torn and damaged stretches reported.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cursor::Cursor;
use super::frame::{self, Spooled};
use super::log::{parked_dir, segment_path};
use super::scan::scan;

/// What `spool status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The first sequence number Kafka has not acknowledged.
    pub cursor: u64,
    /// Segment files on disk.
    pub segments: usize,
    /// Intact records from the cursor on, not yet acknowledged by Kafka.
    pub backlog_events: u64,
    /// Their bytes on disk, frame headers included.
    pub backlog_bytes: u64,
    /// When the oldest of them was received (ms since the Unix epoch).
    pub oldest_received_ms: Option<u64>,
    /// Stretches of segments that are not intact frames: torn tails and damage.
    pub unreadable_tails: usize,
    /// Items in `parked/`.
    pub parked: usize,
    /// Events held aside by topic (`held/<topic>/`), for topics Kafka refused.
    pub held: Vec<(String, usize)>,
}

/// One item of `parked/`: a record Kafka refused, or damaged bytes recovery set aside.
#[derive(Debug, Clone)]
pub struct ParkedItem {
    /// The file name without its extension: what `parked replay` takes.
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
    pub kind: ParkedKind,
}

#[derive(Debug, Clone)]
pub enum ParkedKind {
    /// A whole record, and why Kafka refused it (if recorded).
    Record {
        record: Box<Spooled>,
        reason: Option<String>,
    },
    /// Bytes found damaged in a segment at start-up (not a readable record).
    Damaged,
    /// A `.frame` file that does not hold an intact frame.
    Unreadable,
}

/// The `.reason` file kept next to a parked frame.
pub fn reason_path(frame: &Path) -> PathBuf {
    frame.with_extension("reason")
}

/// Durably removes a parked frame and its reason: the one write here, for `spool parked
/// replay` once Kafka acknowledged the record (under the directory's lock).
pub fn remove_parked(frame: &Path) -> io::Result<()> {
    super::durable::remove(frame, &reason_path(frame))
}

/// Reads the status of the spool in `dir`.
pub fn status(dir: &Path) -> io::Result<Status> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory (spool.dir)", dir.display()),
        ));
    }
    super::format::read(dir)?;
    let cursor = Cursor::new(dir).load()?;
    let mut status = Status {
        cursor,
        segments: 0,
        backlog_events: 0,
        backlog_bytes: 0,
        oldest_received_ms: None,
        unreadable_tails: 0,
        parked: parked(dir)?.len(),
        held: held(dir)?,
    };
    for first in super::log::segment_firsts(dir)? {
        // A running bridge's forwarder may delete a segment it has passed meanwhile.
        let counted = scan(&segment_path(dir, first), first, |record, size| {
            if record.seq >= cursor {
                status.backlog_events += 1;
                status.backlog_bytes += size;
                let oldest = status.oldest_received_ms.get_or_insert(record.received_ms);
                *oldest = (*oldest).min(record.received_ms);
            }
        });
        let found = match counted {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        status.segments += 1;
        status.unreadable_tails += found.damaged.len() + usize::from(found.torn.is_some());
    }
    Ok(status)
}

/// How many events each held topic has in `held/`.
fn held(dir: &Path) -> io::Result<Vec<(String, usize)>> {
    let topics = match fs::read_dir(dir.join("held")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut held = Vec::new();
    for topic in topics {
        let topic = topic?;
        // A running bridge removes a topic's directory once its lane is empty.
        let entries = match fs::read_dir(topic.path()) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let frames = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".frame"))
            .count();
        held.push((topic.file_name().to_string_lossy().into_owned(), frames));
    }
    held.sort();
    Ok(held)
}

/// Every item of `parked/`, sorted by name (records by sequence number).
pub fn parked(dir: &Path) -> io::Result<Vec<ParkedItem>> {
    super::format::read(dir)?;
    let parked = parked_dir(dir);
    let entries = match fs::read_dir(&parked) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut items = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        let kind = match ext {
            "frame" => read_frame(&path)?,
            "bin" => ParkedKind::Damaged,
            _ => continue,
        };
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let size = fs::metadata(&path)?.len();
        items.push(ParkedItem {
            id,
            path,
            size,
            kind,
        });
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(items)
}

fn read_frame(path: &Path) -> io::Result<ParkedKind> {
    Ok(match frame::read_file(path)? {
        Some(record) => ParkedKind::Record {
            record: Box::new(record),
            reason: fs::read_to_string(reason_path(path))
                .ok()
                .map(|r| r.trim().to_owned()),
        },
        None => ParkedKind::Unreadable,
    })
}
