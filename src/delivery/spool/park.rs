//! Parking: a spooled record that must leave the stream without reaching Kafka (Kafka
//! refuses it itself, or its held topic has used up its share of the spool) is written,
//! as a frame, to `parked/<seq>.frame` with the reason beside it (`<seq>.reason`, for
//! `spool parked list`), durably, counted in `spool_parked_total` and logged at ERROR:
//! kept for an operator (`qminder-bridge spool parked list|replay`), never silently
//! dropped. A parked file is never overwritten: a second record with the same number (only
//! after a hand-edited spool) gets a suffixed name.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::frame::{self, Spooled};
use super::inspect;
use super::log::Shared;
use crate::metrics::Metrics;

/// Where parked records go, and what counts them (their bytes count towards the spool's
/// `max_bytes`: they are on its disk).
#[derive(Clone)]
pub(crate) struct Parking {
    pub dir: PathBuf,
    pub metrics: Metrics,
    pub shared: Arc<Shared>,
}

impl Parking {
    /// Keeps `record` in `parked/`, durably. When it could not be written, the caller keeps
    /// it where it is: nothing is dropped.
    pub async fn park(&self, record: &Spooled, why: String) -> Parked {
        let dir = self.dir.clone();
        let bytes = frame::encode(record);
        let size = (bytes.len() + why.len() + 1) as u64;
        let seq = record.seq;
        let reason = why.clone();
        let written =
            tokio::task::spawn_blocking(move || park_frame(&dir, seq, &bytes, &reason)).await;
        match written {
            Ok(Ok(path)) => {
                self.metrics.spool.parked.inc();
                self.shared.lock().parked(size);
                self.shared.update_gauges();
                tracing::error!(
                    seq,
                    event_type = %record.label,
                    topic = %record.topic,
                    file = %path.display(),
                    reason = %why,
                    "Parked a spooled event for an operator (see `qminder-bridge spool parked list`) and went on with the next."
                );
                Parked::Kept
            }
            Ok(Err(error)) => {
                tracing::error!(%error, seq, "Cannot park a spooled event; keeping it and retrying.");
                Parked::NotWritten
            }
            Err(error) => {
                tracing::error!(%error, seq, "The parking task failed; keeping the event and retrying.");
                Parked::NotWritten
            }
        }
    }
}

/// What became of a record to park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Parked {
    /// In `parked/`, fsynced: it may leave the log.
    Kept,
    /// Not written: it stays where it is.
    NotWritten,
}

/// Writes one frame to `dir/<seq>.frame` (never over an existing one), durably, and why
/// beside it.
fn park_frame(dir: &Path, seq: u64, frame: &[u8], reason: &str) -> std::io::Result<PathBuf> {
    super::durable::create_dir(dir)?;
    let mut path = dir.join(format!("{seq:020}.frame"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{seq:020}-{n}.frame"));
        n += 1;
    }
    super::durable::replace(&inspect::reason_path(&path), &[reason.as_bytes(), b"\n"])?;
    super::durable::replace(&path, &[frame])?;
    Ok(path)
}

/// The bytes of every file in `dir` (`parked/`), 0 if there is none.
pub(super) fn size_of(dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0;
    for entry in entries {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}
