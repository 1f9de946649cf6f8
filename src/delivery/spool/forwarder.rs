//! Forwards spooled records to Kafka, in order, and remembers how far it got.
//!
//! Reads committed frames (`read.rs`) from the oldest unforwarded position, hands a batch to the
//! publisher in sequence order (the idempotent producer keeps per-partition order), and
//! waits for every ack. The cursor — the first sequence number not yet acknowledged — only
//! moves past a contiguous run of acknowledged records, and is made durable (`cursor.rs`)
//! before segments wholly below it are deleted.
//! If a record fails, the forwarder waits (backing off up to 5 s) and re-sends from it;
//! records after it that Kafka did acknowledge are remembered and not sent again, unless
//! they share the failed record's topic and key: those go out again after it, so the last
//! copy of each key's records is in order (a record stuck for minutes used to multiply
//! every record behind it; at-least-once still: consumers de-duplicate on the CloudEvents
//! id). Every failed attempt is counted in
//! `spool_forward_failures_total` (not `events_failed_total`: no sender was answered 503
//! for it). A record Kafka refuses *itself* (too large for the broker,
//! invalid: a final `DeliveryError`, `TooLarge` or `Unacceptable`) would block every record behind it forever, so
//! after `PARK_AFTER` refusals in a row it is written, as a frame, to `parked/<seq>.frame`
//! (with Kafka's reason in `parked/<seq>.reason`) in the spool directory (fsynced), counted
//! in `spool_parked_total` and logged as an error, and the cursor moves past it: kept for
//! an operator (`qminder-bridge spool parked list|replay`), never silently dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cursor::Cursor;
use super::frame::{self, Spooled};
use super::inspect;
use super::log::Shared;
use super::read::{Position, read_batch, reclaim};
use crate::delivery::{Deliver, Delivered, DeliveryError};
use crate::metrics::Metrics;
/// Refusals of one record in a row (each after a back-off) before it is parked.
pub const PARK_AFTER: u32 = 3;

/// The forwarder's settings and collaborators.
pub(crate) struct Forwarder {
    pub shared: Arc<Shared>,
    pub cursor: Cursor,
    pub deliver: Arc<dyn Deliver>,
    pub metrics: Metrics,
    pub batch: usize,
    /// Records below this number were in the spool at start-up (counted as replayed).
    pub replay_below: u64,
    /// Forwarding waits until the topics exist (when the bridge creates them).
    pub topics_ready: watch::Receiver<bool>,
    /// Where records Kafka refuses outright are kept (`<spool dir>/parked`).
    pub parked_dir: PathBuf,
}

/// The first back-off after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the forwarder stands.
struct Progress {
    /// The first sequence number Kafka has not acknowledged (the cursor).
    next: u64,
    /// Where the reader stands; `None` to look up `next` afresh.
    position: Option<Position>,
    backoff: Duration,
    /// The record Kafka last refused outright, and how many times in a row.
    refused: Option<(u64, u32)>,
    /// The cursor last made durable.
    stored: u64,
    /// Records above the cursor that Kafka has already acknowledged (they were behind one
    /// that failed): not sent again when the failed one is retried.
    taken: std::collections::BTreeSet<u64>,
}

impl Forwarder {
    /// Runs until `stop` turns true or its sender is gone (finishing the batch in hand):
    /// read a batch, forward it, back off after a failure, wait for the writer when there
    /// is nothing to read.
    pub async fn run(mut self, next: u64, mut stop: watch::Receiver<bool>) {
        self.update_gauges(next, None);
        tokio::select! {
            _ = self.topics_ready.wait_for(|ready| *ready) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let mut progress = Progress {
            next,
            position: None,
            backoff: FIRST_BACKOFF,
            refused: None,
            stored: next,
            taken: std::collections::BTreeSet::new(),
        };
        while !*stop.borrow() && stop.has_changed().is_ok() {
            self.update_gauges(progress.next, None);
            let records = match self.read(&mut progress).await {
                Ok(records) => records,
                Err(error) => {
                    // Forwarding stops here until it can read on: the events behind stay
                    // spooled (spool_oldest_age_seconds grows, and its alert fires).
                    tracing::error!(%error, next = progress.next, retry_in_ms = progress.backoff.as_millis(), "Cannot read the spool; forwarding is stuck until it can.");
                    back_off(&mut progress.backoff, &mut stop).await;
                    continue;
                }
            };
            if records.is_empty() {
                tokio::select! {
                    () = self.shared.committed.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                // The writer may have rolled a segment Kafka has all of: delete it (and
                // store a cursor that could not be stored before).
                self.persist(&mut progress).await;
                continue;
            }
            if self.forward(&mut progress, &records).await {
                back_off(&mut progress.backoff, &mut stop).await;
            }
        }
        self.update_gauges(progress.next, None);
    }

    /// The next batch of committed records from `progress.next` on (off the runtime:
    /// file reads block).
    async fn read(&self, progress: &mut Progress) -> std::io::Result<Vec<Spooled>> {
        let shared = Arc::clone(&self.shared);
        let (next, batch) = (progress.next, self.batch);
        let mut position = progress.position.take();
        let read = tokio::task::spawn_blocking(move || {
            let records = read_batch(&shared, &mut position, next, batch);
            (records, position)
        })
        .await;
        match read {
            Ok((Ok(records), position)) => {
                progress.position = position;
                Ok(records)
            }
            Ok((Err(error), _)) => Err(error),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Hands `records` to Kafka in order and moves the cursor past the acknowledged run.
    /// True when a record failed and is to be retried after a back-off (false also when
    /// it was parked instead).
    async fn forward(&self, progress: &mut Progress, records: &[Spooled]) -> bool {
        self.update_gauges(progress.next, records.first().map(|r| r.received_ms));
        tracing::debug!(
            first = records[0].seq,
            count = records.len(),
            "Forwarding spooled events."
        );
        // Records Kafka took in an earlier try (behind one that failed) are not sent again.
        let pending: Vec<_> = records
            .iter()
            .filter(|r| !progress.taken.contains(&r.seq))
            .map(|r| self.deliver.deliver(&r.record()))
            .collect();
        let mut results = futures_util::future::join_all(pending).await.into_iter();
        let outcomes: Vec<Option<Result<Delivered, DeliveryError>>> = records
            .iter()
            .map(|r| {
                (!progress.taken.contains(&r.seq))
                    .then(|| results.next())
                    .flatten()
            })
            .collect();
        let ok = |o: &Option<Result<Delivered, DeliveryError>>| {
            o.as_ref()
                .is_none_or(|r| matches!(r, Ok(Delivered::Kafka { .. })))
        };
        let acked = outcomes.iter().take_while(|o| ok(o)).count();
        tracing::debug!(
            acked,
            of = records.len(),
            "Kafka answered for spooled events."
        );
        let newly: Vec<&Spooled> = records
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, Some(Ok(Delivered::Kafka { .. }))))
            .map(|(r, _)| r)
            .collect();
        self.count_forwarded(&newly);
        progress
            .taken
            .extend(taken_behind(&records[acked..], &outcomes[acked..]));
        if acked > 0 {
            progress.next = records[acked - 1].seq.saturating_add(1);
            progress.taken = progress.taken.split_off(&progress.next);
            self.persist(progress).await;
            self.update_gauges(progress.next, records.get(acked).map(|r| r.received_ms));
        }
        let Some(failed) = records.get(acked) else {
            progress.backoff = FIRST_BACKOFF;
            return false;
        };
        // Re-read from the first record that was not acknowledged.
        progress.position = None;
        if let Some(Some(Err(error))) = outcomes.get(acked) {
            self.metrics
                .spool
                .forward_failures
                .with_label_values(&[error.reason()])
                .inc();
            if refused_enough(progress, failed, error) && self.park(failed, error).await {
                progress.next = failed.seq.saturating_add(1);
                self.persist(progress).await;
                progress.refused = None;
                progress.backoff = FIRST_BACKOFF;
                return false;
            }
            tracing::warn!(%error, seq = failed.seq, retry_in_ms = progress.backoff.as_millis(), "Could not forward a spooled event; will retry.");
        }
        true
    }

    fn count_forwarded(&self, records: &[&Spooled]) {
        for record in records {
            self.metrics
                .events_forwarded
                .with_label_values(&[&record.label, &record.topic])
                .inc();
            self.metrics.spool.forwarded.inc();
            if record.seq < self.replay_below {
                self.metrics.spool.replayed.inc();
            }
        }
    }

    /// Keeps a record Kafka refuses outright in `parked/`, durably. False if it could not
    /// be written (the forwarder then keeps retrying it: nothing is dropped).
    async fn park(&self, record: &Spooled, why: &DeliveryError) -> bool {
        let dir = self.parked_dir.clone();
        let mut payload = frame::encode_payload(&record.record(), record.received_ms);
        frame::set_seq(&mut payload, record.seq);
        let seq = record.seq;
        let reason = why.to_string();
        let written =
            tokio::task::spawn_blocking(move || park_frame(&dir, seq, &payload, &reason)).await;
        match written {
            Ok(Ok(path)) => {
                self.metrics.spool.parked.inc();
                tracing::error!(
                    seq,
                    event_type = %record.label,
                    topic = %record.topic,
                    file = %path.display(),
                    "Kafka refuses a spooled event outright (too large or invalid); parked it for an operator and went on with the next."
                );
                true
            }
            Ok(Err(error)) => {
                tracing::error!(%error, seq, "Cannot park a spooled event Kafka refuses; retrying it.");
                false
            }
            Err(error) => {
                tracing::error!(%error, seq, "The parking task failed; retrying the event.");
                false
            }
        }
    }

    /// Makes `progress.next` durable (unless it is already), and deletes segments wholly
    /// below it. Deleting does not wait
    /// for the cursor: every record below `next` is in Kafka, and on a full disk it is the
    /// deletion that makes room for the cursor (a stale cursor after a crash only means
    /// starting at the oldest segment left).
    async fn persist(&self, progress: &mut Progress) {
        let next = progress.next;
        let cursor = (progress.stored != next).then(|| self.cursor.clone());
        let shared = Arc::clone(&self.shared);
        let done = tokio::task::spawn_blocking(move || {
            let reclaimed = reclaim(&shared, next);
            (reclaimed, cursor.map(|c| c.store(next)))
        })
        .await;
        match done {
            Ok((reclaimed, stored)) => {
                if let Err(error) = reclaimed {
                    tracing::warn!(%error, "Cannot delete forwarded spool segments yet; will retry.");
                }
                match stored {
                    Some(Err(error)) => {
                        tracing::error!(%error, "Cannot store the spool cursor; events may be forwarded twice after a restart.")
                    }
                    Some(Ok(())) => progress.stored = next,
                    None => {}
                }
            }
            Err(error) => tracing::error!(%error, "The spool cursor task failed."),
        }
    }

    /// Publishes the cursor to the gauges, and the age of the oldest unforwarded event.
    fn update_gauges(&self, next: u64, oldest_ms: Option<u64>) {
        self.shared
            .forwarded_to
            .store(next, std::sync::atomic::Ordering::Release);
        self.shared.update_gauges();
        if let Some(ms) = oldest_ms {
            let now = frame::now_ms();
            self.metrics
                .spool
                .oldest_age
                .set(now.saturating_sub(ms) as f64 / 1000.0);
        }
    }
}

/// Of the records from the first failure on, the ones Kafka acknowledged that need not be
/// sent again: all but those behind a failed record of the same topic and key, which go
/// out again after it so that the last copy of each key's records is in order.
fn taken_behind(
    records: &[Spooled],
    outcomes: &[Option<Result<Delivered, DeliveryError>>],
) -> Vec<u64> {
    let mut stuck: std::collections::HashSet<(&str, Option<&str>)> = Default::default();
    let mut taken = Vec::new();
    for (record, outcome) in records.iter().zip(outcomes) {
        let class = (record.topic.as_str(), record.key.as_deref());
        match outcome {
            Some(Ok(Delivered::Kafka { .. })) if !stuck.contains(&class) => taken.push(record.seq),
            Some(_) => {
                stuck.insert(class);
            }
            None => {}
        }
    }
    taken
}

/// Whether Kafka has now refused `failed` itself [`PARK_AFTER`] times in a row.
fn refused_enough(progress: &mut Progress, failed: &Spooled, error: &DeliveryError) -> bool {
    if !error.is_final() {
        return false;
    }
    let times = match progress.refused {
        Some((seq, n)) if seq == failed.seq => n + 1,
        _ => 1,
    };
    progress.refused = Some((failed.seq, times));
    times >= PARK_AFTER
}

/// Waits `backoff` (or until stopped), then doubles it, up to [`MAX_BACKOFF`].
async fn back_off(backoff: &mut Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// Writes one frame to `dir/<seq>.frame`, durably, and why Kafka refused it beside it
/// (`<seq>.reason`, for `spool parked list`).
fn park_frame(dir: &Path, seq: u64, payload: &[u8], reason: &str) -> std::io::Result<PathBuf> {
    super::durable::create_dir(dir)?;
    let path = dir.join(format!("{seq:020}.frame"));
    super::durable::replace(&inspect::reason_path(&path), &[reason.as_bytes(), b"\n"])?;
    super::durable::replace(&path, &[&frame::header(payload), payload])?;
    Ok(path)
}
