//! The spool's append-only log: numbered segment files, and the state the writer
//! (`writer.rs`), the readers (`read.rs`), the forwarder and the held and parked records
//! share. Segments are `<first sequence number, 20 digits>.seg` in the spool directory.
//! Start-up recovery of the segments: `recover.rs`.

use std::collections::BTreeMap;
use std::ops::Range;
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
    /// Damaged stretches recovery found and left in place: readers step over them.
    pub holes: Vec<Range<u64>>,
    /// Whether a hole's bytes are not yet copied to `parked/` (the disk was full): the
    /// segment is not deleted until they are.
    pub unparked: bool,
}

/// What readers and the writer share. Its fields are private: every change goes through a
/// method below, and each method keeps these invariants:
/// - `next_seq` never goes down, and is above every record and every segment's name;
/// - `bytes` is the sum of the segments' committed lengths;
/// - segments are named for their first number and never overlap.
#[derive(Debug)]
pub struct LogState {
    /// By first sequence number.
    segments: BTreeMap<u64, Segment>,
    /// The sequence number the next record gets.
    next_seq: u64,
    /// Total bytes of all segments.
    bytes: u64,
    /// Bytes of held records (`held.rs`): they count towards `max_bytes` too.
    held_bytes: u64,
    /// Bytes in `parked/`: on the same disk, so they count towards `max_bytes` too.
    parked_bytes: u64,
    /// False after a failed write or fsync, until one succeeds.
    healthy: bool,
    /// True after an append was refused for lack of room, until forwarding frees some.
    full: bool,
    /// True when the active segment holds bytes past its recorded length that could not be
    /// cut off (a failed write, then a failed truncate): nothing more may be appended to it.
    active_damaged: bool,
}

impl LogState {
    /// The state recovery found: `segments` as settled on disk, numbering from `next_seq`
    /// (raised above every segment's name and record, whatever it was given).
    pub fn recovered(segments: BTreeMap<u64, Segment>, next_seq: u64) -> Self {
        let floor = segments
            .iter()
            .map(|(&first, s)| s.last_seq.map_or(first, |l| l.saturating_add(1)).max(first))
            .max()
            .unwrap_or(0);
        Self {
            bytes: segments.values().map(|s| s.len).sum(),
            segments,
            next_seq: next_seq.max(floor),
            held_bytes: 0,
            parked_bytes: 0,
            healthy: true,
            full: false,
            active_damaged: false,
        }
    }

    /// What the spool uses of its disk, against `spool.max_bytes`: segments, held and
    /// parked records.
    pub fn used(&self) -> u64 {
        self.bytes + self.held_bytes + self.parked_bytes
    }

    /// Whether a new webhook may be taken: the disk works, the spool has room.
    pub fn accepts(&self, max_bytes: u64) -> bool {
        self.healthy && !self.full && self.used() < max_bytes
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn full(&self) -> bool {
        self.full
    }

    pub fn active_damaged(&self) -> bool {
        self.active_damaged
    }

    /// The segments, by first sequence number (read only).
    pub fn segments(&self) -> &BTreeMap<u64, Segment> {
        &self.segments
    }

    /// Bytes of all segments.
    pub fn segment_bytes(&self) -> u64 {
        self.bytes
    }

    /// The committed length of the segment named `first` (0 if there is none).
    pub fn len_of(&self, first: u64) -> u64 {
        self.segments.get(&first).map_or(0, |s| s.len)
    }

    /// A new, empty segment at `path`, named for the next number; its name.
    pub fn start_segment(&mut self, path: PathBuf) -> u64 {
        let first = self.next_seq;
        self.segments.insert(
            first,
            Segment {
                path,
                len: 0,
                last_seq: None,
                holes: Vec::new(),
                unparked: false,
            },
        );
        self.active_damaged = false;
        first
    }

    /// A batch was written and fsynced to segment `active`: `written` bytes after its
    /// committed length `start_len`, records numbered up to `next_seq` (exclusive).
    pub fn committed(&mut self, active: u64, start_len: u64, written: u64, next_seq: u64) {
        self.next_seq = self.next_seq.max(next_seq);
        // Added, not assigned: the forwarder may have reclaimed segments meanwhile.
        self.bytes += written;
        self.healthy = true;
        if let Some(segment) = self.segments.get_mut(&active) {
            segment.len = start_len + written;
            segment.last_seq = Some(next_seq - 1);
        }
    }

    /// A write or fsync failed. `Cut::Failed` when its bytes could not be cut off: they may
    /// be on disk, numbered up to `next_seq`, so those numbers are never given again and
    /// nothing more goes into that segment.
    pub fn write_failed(&mut self, cut: Cut, next_seq: u64) {
        self.healthy = false;
        if cut == Cut::Failed {
            self.active_damaged = true;
            self.next_seq = self.next_seq.max(next_seq);
        }
    }

    /// A write and fsync worked again (the writer's probe).
    pub fn disk_works(&mut self) {
        self.healthy = true;
    }

    /// An append was refused for lack of room; true if the spool was not full before.
    pub fn refused_for_room(&mut self) -> bool {
        !std::mem::replace(&mut self.full, true)
    }

    /// The segment named `first` was deleted from disk.
    pub fn reclaimed(&mut self, first: u64) {
        if let Some(segment) = self.segments.remove(&first) {
            self.bytes = self.bytes.saturating_sub(segment.len);
            self.full = false;
        }
    }

    /// Held records grew (positive) or shrank by `delta` bytes.
    pub fn held_changed(&mut self, delta: i64) {
        self.held_bytes = self.held_bytes.saturating_add_signed(delta);
        if delta < 0 {
            self.full = false;
        }
    }

    /// `parked/` now holds `bytes` in all (counted at start).
    pub fn parked_total(&mut self, bytes: u64) {
        self.parked_bytes = bytes;
    }

    /// `bytes` more were parked.
    pub fn parked(&mut self, bytes: u64) {
        self.parked_bytes += bytes;
    }

    /// A record numbered `seq` exists outside the log (a held file): number above it, in a
    /// segment of its own.
    pub fn number_above(&mut self, seq: u64) {
        if seq >= self.next_seq {
            self.next_seq = seq + 1;
            self.active_damaged = true;
        }
    }

    /// The invariants above, checked (the model test asks after every step).
    #[cfg(test)]
    pub fn check(&self) -> Result<(), String> {
        let sum: u64 = self.segments.values().map(|s| s.len).sum();
        if sum != self.bytes {
            return Err(format!("bytes {} but segments hold {sum}", self.bytes));
        }
        let mut floor = 0;
        for (&first, segment) in &self.segments {
            if first < floor {
                return Err(format!("segment {first} overlaps the one before it"));
            }
            floor = segment.last_seq.map_or(first, |l| l + 1).max(first);
        }
        if self.next_seq < floor {
            return Err(format!("next_seq {} below {floor}", self.next_seq));
        }
        Ok(())
    }
}

/// Whether a failed write's bytes could be cut off the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Done,
    Failed,
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
    /// Commit times by sequence number, for `backfill` (`watermark.rs`).
    pub checkpoints: super::watermark::Checkpoints,
    pub metrics: SpoolMetrics,
    /// Tests: this many of the next writes fail, as a failing disk's would.
    #[cfg(test)]
    pub failing_writes: std::sync::atomic::AtomicU32,
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
            .next_seq()
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
