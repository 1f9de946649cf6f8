//! The spool's append-only log: numbered segment files, and the state the writer
//! (`writer.rs`), the readers (`read.rs`), the forwarder and the held and parked records
//! share. Segments are `<first sequence number, 20 digits>.seg` in the spool directory.
//! Start-up recovery of the segments: `recover.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, oneshot};

use crate::delivery::DeliveryError;
use crate::metrics::SpoolMetrics;

/// One segment file.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    /// Bytes written and fsynced; readers never read past this.
    pub len: u64,
    /// Sequence number of its last record, if it has one.
    pub last_seq: Option<u64>,
}

/// What readers and the writer share.
#[derive(Debug)]
pub struct LogState {
    /// By first sequence number.
    pub segments: BTreeMap<u64, Segment>,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// Total bytes of all segments.
    pub bytes: u64,
    /// Bytes of held records (`held.rs`): they count towards `max_bytes` too.
    pub held_bytes: u64,
    /// Bytes in `parked/`: on the same disk, so they count towards `max_bytes` too.
    pub parked_bytes: u64,
    /// False after a failed write or fsync, until one succeeds.
    pub healthy: bool,
    /// True after an append was refused for lack of room, until forwarding frees some.
    pub full: bool,
    /// True when the active segment holds bytes past its recorded length that could not be
    /// cut off (a failed write, then a failed truncate): nothing more may be appended to it.
    pub active_damaged: bool,
}

/// The log, shared by the writer thread, the spool handle and the forwarder.
#[derive(Debug)]
pub struct Shared {
    pub dir: PathBuf,
    pub state: Mutex<LogState>,
    /// Signalled after every commit.
    pub committed: Notify,
    /// The forwarder's cursor: the first sequence number not yet acknowledged by Kafka.
    pub forwarded_to: AtomicU64,
    pub metrics: SpoolMetrics,
    /// Tests: this many of the next writes fail, as a failing disk's would.
    #[cfg(test)]
    pub failing_writes: std::sync::atomic::AtomicU32,
}

impl LogState {
    /// What the spool uses of its disk, against `spool.max_bytes`: segments, held and
    /// parked records.
    pub fn used(&self) -> u64 {
        self.bytes + self.held_bytes + self.parked_bytes
    }
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The I/O seam of the unit tests: a write that fails where nothing outside the
    /// process could make one fail on cue. Always `Ok` outside tests.
    pub(super) fn injected_fault(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self
            .failing_writes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(std::io::Error::other("an injected write failure"));
        }
        Ok(())
    }

    /// Brings the size gauges up to date (after a commit, a forward, a reclaim).
    pub fn update_gauges(&self) {
        let state = self.lock();
        let pending = state
            .next_seq
            .saturating_sub(self.forwarded_to.load(Ordering::Acquire));
        self.metrics
            .bytes
            .set(i64::try_from(state.used()).unwrap_or(i64::MAX));
        self.metrics
            .events
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        if pending == 0 {
            self.metrics.oldest_age.set(0.0);
        }
    }
}

/// An append request: an encoded payload (sequence number 0) and where to answer.
pub(crate) struct Append {
    pub payload: Vec<u8>,
    pub reply: oneshot::Sender<Result<u64, DeliveryError>>,
}

/// The first sequence numbers of the segments in `dir`, sorted (from their names).
pub(super) fn segment_firsts(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse::<u64>().ok()
        })
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// Where records Kafka refuses outright, and damaged bytes, are kept for an operator.
pub fn parked_dir(dir: &Path) -> PathBuf {
    dir.join("parked")
}

/// Limits the writer enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub segment_bytes: u64,
}
