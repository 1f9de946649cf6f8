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
//! `spool.max_bytes`; one topic may hold at most `spool.held_topic_max_percent` of it, and
//! past that the forwarder parks its records instead, so one missing topic can never fill
//! the spool and turn every webhook into 503 `spool_full`.
//!
//! The lanes live behind one mutex, and adding to a lane, and dropping an emptied one, are
//! done under it: so a record is held exactly when its topic has a lane.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::frame::{self, Outcome, Spooled};
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
    /// Its topic's lane already holds its share of the spool: park it.
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
    shared: Arc<Shared>,
    max_lane_bytes: u64,
    metrics: SpoolMetrics,
}

impl Held {
    /// Finds the records held in `spool_dir/held` (an unreadable file is left where it is,
    /// with a warning: it is not counted).
    pub fn open(
        spool_dir: &Path,
        shared: Arc<Shared>,
        max_lane_bytes: u64,
        metrics: SpoolMetrics,
    ) -> io::Result<Self> {
        let held = Self {
            dir: spool_dir.join("held"),
            lanes: Mutex::new(BTreeMap::new()),
            shared,
            max_lane_bytes,
            metrics,
        };
        for (topic, seq, bytes) in held.scan()? {
            let mut lanes = held.lock();
            let lane = lanes.entry(topic.clone()).or_insert_with(Lane::new);
            lane.records.insert(seq, bytes);
            lane.bytes += bytes;
            held.account(&topic, lane.records.len(), bytes as i64);
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
        let mut state = self.shared.lock();
        if let Some(highest) = highest.filter(|h| *h >= state.next_seq) {
            state.next_seq = highest + 1;
            state.active_damaged = true;
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `record` if its topic is held, or (`start` true) holds it and so starts
    /// holding its topic. Blocks on file writes.
    pub fn hold(&self, record: &Spooled, start: bool) -> Holding {
        let mut lanes = self.lock();
        if !start && !lanes.contains_key(&record.topic) {
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
        let lane = lanes.entry(record.topic.clone()).or_insert_with(Lane::new);
        if !lane.records.contains_key(&record.seq) && lane.bytes + size > self.max_lane_bytes {
            return Holding::OverShare;
        }
        let dir = self.dir.join(&record.topic);
        let written = super::durable::create_dir(&dir)
            .and_then(|()| super::durable::replace(&file(&dir, record.seq), &[&bytes]));
        if let Err(error) = written {
            if lane.records.is_empty() {
                lanes.remove(&record.topic);
            }
            return Holding::Failed(error);
        }
        if let Some(old) = lane.records.insert(record.seq, size) {
            lane.bytes -= old;
            self.account(&record.topic, lane.records.len(), -(old as i64));
        }
        lane.bytes += size;
        self.account(&record.topic, lane.records.len(), size as i64);
        Holding::Held
    }

    /// For each topic whose retry is due, its oldest held records (at most `batch`).
    /// Blocks on file reads.
    pub fn due(&self, batch: usize) -> Vec<(String, Vec<Spooled>)> {
        let now = Instant::now();
        let lanes = self.lock();
        let mut due = Vec::new();
        for (topic, lane) in lanes.iter().filter(|(_, l)| l.due <= now) {
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
            if !records.is_empty() {
                due.push((topic.clone(), records));
            }
        }
        due
    }

    /// Whether any topic is held.
    pub fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// When the next topic is due (none: nothing is held).
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().values().map(|l| l.due).min()
    }

    /// Removes `seqs` (now in Kafka, or parked) from `topic`'s lane; a lane left empty is
    /// dropped, and the topic flows again. Blocks on file removals.
    pub fn release(&self, topic: &str, seqs: &[u64]) -> io::Result<()> {
        let dir = self.dir.join(topic);
        let mut lanes = self.lock();
        let Some(lane) = lanes.get_mut(topic) else {
            return Ok(());
        };
        for seq in seqs {
            match std::fs::remove_file(file(&dir, *seq)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if let Some(size) = lane.records.remove(seq) {
                lane.bytes -= size;
                self.account(topic, lane.records.len(), -(size as i64));
            }
        }
        lane.backoff = FIRST_BACKOFF;
        if lane.records.is_empty() {
            lanes.remove(topic);
            let _ = std::fs::remove_dir(&dir);
            tracing::info!(%topic, "Kafka takes the held topic again; its events are all forwarded.");
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// `topic`'s oldest record failed again: try later (backing off).
    pub fn retry_later(&self, topic: &str) {
        if let Some(lane) = self.lock().get_mut(topic) {
            lane.due = Instant::now() + lane.backoff;
            lane.backoff = (lane.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Publishes a lane's change: its count, and the bytes (which count towards the
    /// spool's `max_bytes`).
    fn account(&self, topic: &str, events: usize, delta: i64) {
        self.metrics
            .held_events
            .with_label_values(&[topic])
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        self.metrics.held_bytes.add(delta);
        let mut state = self.shared.lock();
        state.held_bytes = state.held_bytes.saturating_add_signed(delta);
        if delta < 0 {
            state.full = false;
        }
    }

    /// Every held file: (topic, sequence number, bytes).
    fn scan(&self) -> io::Result<Vec<(String, u64, u64)>> {
        let mut found = Vec::new();
        let topics = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e),
        };
        for topic in topics {
            let topic = topic?;
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
}

fn file(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.frame"))
}

/// Whether `topic` can name a directory of its own (Kafka's topic characters).
fn safe_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The record in a held file.
fn read(path: &Path) -> io::Result<Spooled> {
    let bytes = std::fs::read(path)?;
    match frame::read(&mut bytes.as_slice(), bytes.len() as u64)? {
        Outcome::Frame(record, _) => Ok(record),
        Outcome::End | Outcome::Torn => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an intact frame",
        )),
    }
}
