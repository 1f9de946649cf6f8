//! Held topics: the records of a topic Kafka refuses for now, set aside so the other
//! topics flow.
//!
//! When Kafka cannot take a record for a reason confined to its topic — it says so
//! (`TopicRefused`: missing, not writable, no such partition), or other topics' records
//! were acknowledged in the same attempt while this one failed — the forwarder holds the
//! record here instead of waiting on it, and from then on every later record of that topic
//! too, until the topic's held records are all in Kafka: so one topic's records stay in
//! order, and no other topic waits. Each held record is one file,
//! `held/<topic>/<seq, 20 digits>.frame` (a whole frame, written durably before the log's
//! cursor moves past it), so a restart finds them again. [`drain`](super::drain) retries
//! each topic's oldest held records with a back-off. Held bytes count towards
//! `spool.max_bytes`; one topic may hold at most `spool.held_topic_max_percent` of it: past
//! that, new webhooks for that topic alone are answered 503 `spool_full` (the records
//! already in the log past the share are parked), so one missing topic can never fill the
//! spool and turn every webhook into 503.
//!
//! The lanes live behind one mutex, and adding to a lane, and dropping an emptied one, are
//! done under it: so a record is held exactly when its topic has a lane. What the async
//! tasks and the ingress ask without blocking (any lane? which topics are over their
//! share?) is kept beside it, updated under it.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::frame::{self, Spooled};
use super::held_files::{file, read, safe_name, scan};
use super::log::Shared;
use crate::metrics::SpoolMetrics;

/// The first wait before a held topic is tried again; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What became of a record offered to [`Held::hold`].
#[derive(Debug)]
pub(crate) enum Holding {
    /// Its topic is not held (and it was offered only if it were): send it.
    NotHeld,
    /// Durably held.
    Held,
    /// Its topic's lane already holds its share of the spool: park it (and new webhooks
    /// for the topic are refused until the lane shrinks).
    OverShare,
    /// It could not be written: it stays in the log, where it is.
    Failed(io::Error),
}

/// One topic's held records.
#[derive(Debug)]
struct Lane {
    /// Sequence number → bytes on disk.
    records: BTreeMap<u64, u64>,
    bytes: u64,
    due: Instant,
    backoff: Duration,
}

/// The held topics of one spool.
pub(crate) struct Held {
    dir: PathBuf,
    lanes: Mutex<BTreeMap<String, Lane>>,
    /// How many lanes there are (read without the lanes' lock, which file writes hold).
    count: AtomicUsize,
    /// Topics whose lane holds its share: the ingress refuses their new webhooks.
    over_share: Mutex<HashSet<String>>,
    shared: Arc<Shared>,
    max_lane_bytes: u64,
    metrics: SpoolMetrics,
}

/// How long a lane handed to the drainer waits before it may be handed out again (the
/// drainer settles it long before: this only keeps one attempt per lane at a time).
const IN_FLIGHT: Duration = Duration::from_secs(3600);

impl Held {
    /// Finds the records held in `spool_dir/held` (a file that is not an intact record is
    /// parked as damage: `held_files::scan`).
    pub fn open(
        spool_dir: &Path,
        shared: Arc<Shared>,
        max_lane_bytes: u64,
        metrics: SpoolMetrics,
    ) -> io::Result<Self> {
        let held = Self {
            dir: spool_dir.join("held"),
            lanes: Mutex::new(BTreeMap::new()),
            count: AtomicUsize::new(0),
            over_share: Mutex::new(HashSet::new()),
            shared,
            max_lane_bytes,
            metrics,
        };
        let found = scan(&held.dir)?;
        held.metrics.parked.inc_by(found.parked);
        for (topic, seq, bytes) in found.records {
            let mut lanes = held.lock();
            let lane = lanes.entry(topic.clone()).or_insert_with(Lane::new);
            lane.records.insert(seq, bytes);
            lane.bytes += bytes;
            held.account(&topic, lane, bytes as i64);
            held.count.store(lanes.len(), Ordering::Release);
        }
        held.keep_numbers_apart();
        Ok(held)
    }

    /// A held record's number is never given again (only a hand-emptied log could make
    /// the writer's numbering fall below it): the next append starts a fresh segment above.
    fn keep_numbers_apart(&self) {
        let highest = self
            .lock()
            .values()
            .filter_map(|l| l.records.keys().next_back().copied())
            .max();
        if let Some(highest) = highest {
            self.shared.lock().number_above(highest);
        }
    }

    /// The lowest sequence number held, if any.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.lock()
            .values()
            .filter_map(|lane| lane.records.keys().next().copied())
            .min()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `record` if its topic is held, or (`start` true) holds it and so starts
    /// holding its topic. Blocks on file writes.
    pub fn hold(&self, record: &Spooled, start: bool) -> Holding {
        let mut lanes = self.lock();
        let held_bytes = lanes.get(&record.topic).map(|l| l.bytes);
        if !start && held_bytes.is_none() {
            return Holding::NotHeld;
        }
        if !safe_name(&record.topic) {
            return Holding::Failed(io::Error::other(format!(
                "the topic name {:?} cannot name a directory",
                record.topic
            )));
        }
        let bytes = frame::encode(record);
        let size = bytes.len() as u64;
        let again = lanes
            .get(&record.topic)
            .is_some_and(|l| l.records.contains_key(&record.seq));
        if !again && held_bytes.unwrap_or(0) + size > self.max_lane_bytes {
            if held_bytes.is_some() {
                self.refuse(&record.topic, true);
            }
            return Holding::OverShare;
        }
        let dir = self.dir.join(&record.topic);
        let written = (self.shared.injected_fault())
            .and_then(|()| super::durable::create_dir(&dir))
            .and_then(|()| super::durable::replace(&file(&dir, record.seq), &[&bytes]));
        if let Err(error) = written {
            return Holding::Failed(error);
        }
        let lane = lanes.entry(record.topic.clone()).or_insert_with(Lane::new);
        let delta = size as i64
            - lane
                .records
                .insert(record.seq, size)
                .map_or(0, |old| old as i64);
        lane.bytes = lane.bytes.saturating_add_signed(delta);
        self.account(&record.topic, lane, delta);
        self.count.store(lanes.len(), Ordering::Release);
        Holding::Held
    }

    /// Whether new webhooks for `topic` are refused: its held records fill its share.
    pub fn refuses(&self, topic: &str) -> bool {
        self.count.load(Ordering::Acquire) > 0 && self.over_share().contains(topic)
    }

    fn over_share(&self) -> MutexGuard<'_, HashSet<String>> {
        self.over_share.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(&self, topic: &str, refuse: bool) {
        let mut over = self.over_share();
        if refuse && over.insert(topic.to_owned()) {
            tracing::warn!(%topic, "A held topic's events fill its share of the spool (spool.held_topic_max_percent): its new webhooks are answered 503 until Kafka takes it again.");
        } else if !refuse {
            over.remove(topic);
        }
    }

    /// For each topic whose retry is due, its oldest held records (at most `batch`); the
    /// topic is not due again until [`settle`](Self::settle)d. Blocks on file reads.
    pub fn due(&self, batch: usize) -> Vec<(String, Vec<Spooled>)> {
        let now = Instant::now();
        let mut lanes = self.lock();
        let mut due = Vec::new();
        for (topic, lane) in lanes.iter_mut().filter(|(_, l)| l.due <= now) {
            let dir = self.dir.join(topic);
            let records: Vec<Spooled> = lane
                .records
                .keys()
                .take(batch)
                .filter_map(|seq| match read(&file(&dir, *seq)) {
                    Ok(record) => Some(record),
                    Err(error) => {
                        tracing::error!(%error, seq, %topic, "Cannot read a held spool event; it stays held.");
                        None
                    }
                })
                .collect();
            if records.is_empty() {
                lane.back_off();
            } else {
                lane.due = now + IN_FLIGHT;
                due.push((topic.clone(), records));
            }
        }
        due
    }

    /// Whether any topic is held (without waiting for the lanes' lock).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// When the next topic is due: `None` when nothing is held, or when the lanes are
    /// busy (file writes hold their lock; the drainer then looks again soon).
    pub fn next_due(&self) -> Option<Instant> {
        let lanes = self.lanes.try_lock().ok()?;
        lanes.values().map(|l| l.due).min()
    }

    /// After the drainer's attempt at `topic`: removes `seqs` (now in Kafka, or parked)
    /// from its lane, durably, and makes the lane due again — at once if the attempt went
    /// through, after a back-off if its oldest record `failed` (or a file could not be
    /// removed). A lane left empty is dropped, and the topic flows again. Blocks on files.
    pub fn settle(&self, topic: &str, seqs: &[u64], failed: bool) -> io::Result<()> {
        let dir = self.dir.join(topic);
        let mut lanes = self.lock();
        let Some(lane) = lanes.get_mut(topic) else {
            return Ok(());
        };
        let removed = remove_all(&dir, seqs);
        for seq in &removed.done {
            if let Some(size) = lane.records.remove(seq) {
                lane.bytes -= size;
                self.account(topic, lane, -(size as i64));
            }
        }
        if failed || removed.error.is_some() {
            lane.back_off();
        } else {
            lane.backoff = FIRST_BACKOFF;
            lane.due = Instant::now();
        }
        if lane.records.is_empty() {
            lanes.remove(topic);
            self.count.store(lanes.len(), Ordering::Release);
            self.refuse(topic, false);
            let _ = std::fs::remove_dir(&dir);
            tracing::info!(%topic, "Kafka takes the held topic again; its events are all forwarded.");
        } else if !removed.done.is_empty() {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        std::fs::File::open(&self.dir)?.sync_all()?;
        removed.error.map_or(Ok(()), Err)
    }

    /// Publishes a lane's change: its count, its share (once below it, the topic's
    /// webhooks are taken again), and the bytes (which count towards `max_bytes`).
    fn account(&self, topic: &str, lane: &Lane, delta: i64) {
        self.metrics
            .held_events
            .with_label_values(&[topic])
            .set(i64::try_from(lane.records.len()).unwrap_or(i64::MAX));
        if lane.bytes < self.max_lane_bytes {
            self.refuse(topic, false);
        }
        self.metrics.held_bytes.add(delta);
        self.shared.lock().held_changed(delta);
    }
}

impl Lane {
    fn new() -> Self {
        Self {
            records: BTreeMap::new(),
            bytes: 0,
            due: Instant::now() + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF * 2,
        }
    }

    /// Not due again before its back-off, which doubles (up to [`MAX_BACKOFF`]).
    fn back_off(&mut self) {
        self.due = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// What [`remove_all`] removed, and the error that stopped it.
struct Removed {
    done: Vec<u64>,
    error: Option<io::Error>,
}

/// Removes the held files of `seqs` in `dir` (one already gone counts as removed).
fn remove_all(dir: &Path, seqs: &[u64]) -> Removed {
    let mut removed = Removed {
        done: Vec::new(),
        error: None,
    };
    for seq in seqs {
        match std::fs::remove_file(file(dir, *seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                removed.error = Some(e);
                break;
            }
            _ => removed.done.push(*seq),
        }
    }
    removed
}
