//! Forwards spooled records to Kafka, in order, and remembers how far it got.
//!
//! Reads committed frames (`read.rs`) from the oldest unforwarded position, hands a batch
//! to the publisher in sequence order (the idempotent producer keeps per-partition order),
//! and waits for every answer. The cursor — the first sequence number that still needs
//! something — only moves past a contiguous run of records that need nothing more
//! (`steps.rs`), and is made durable (`cursor.rs`); segments wholly below it are deleted.
//! If a record fails, the forwarder waits (backing off up to 5 s) and re-sends from it;
//! records after it that Kafka did acknowledge are remembered and not sent again, unless
//! they share the failed record's topic and key: those go out again after it, so the last
//! copy of each key's records is in order (at-least-once: consumers de-duplicate on the
//! CloudEvents id). Every failed attempt is counted in `spool_forward_failures_total` (not
//! `events_failed_total`: no sender was answered 503 for it).
//! A record Kafka refuses for its topic's sake (missing, not writable) is held aside with
//! every later record of that topic (`held.rs`, retried by `drain.rs`), so no other topic
//! waits on it. A record Kafka refuses *itself* (a final `DeliveryError`: too large,
//! invalid) would block every record behind it forever, so after `PARK_AFTER` refusals in
//! a row it is parked (`park.rs`) and the cursor moves past it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::breaker::Breaker;
pub use super::breaker::{BREAKER_AFTER, PARK_AFTER};
use super::cursor::Cursor;
use super::frame::{self, Spooled};
use super::held::{Held, Holding};
use super::log::Shared;
use super::park::{Parked, Parking};
use super::read::{Position, read_batch, reclaim};
use super::steps::{Forwarded, Step, account, done_prefix, taken_behind, to_hold};
use crate::delivery::{Deliver, DeliveryError};
use crate::metrics::Metrics;

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
    /// Where records that must leave the stream are kept for an operator.
    pub parking: Parking,
    /// Topics Kafka refuses for now, and their records.
    pub held: Arc<Held>,
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
    /// The cursor last made durable.
    stored: u64,
    /// Records above the cursor that Kafka has already acknowledged (they were behind one
    /// that failed): not sent again when the failed one is retried.
    taken: std::collections::BTreeSet<u64>,
    /// Stops parking while Kafka refuses every record alike.
    breaker: Breaker,
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
            stored: next,
            taken: std::collections::BTreeSet::new(),
            breaker: Breaker::new(self.metrics.spool.park_breaker_open.clone()),
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
            match self.forward(&mut progress, &records).await {
                Forwarded::Retry => back_off(&mut progress.backoff, &mut stop).await,
                Forwarded::Moved => {}
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

    /// Hands `records` to Kafka in order (holding aside those of held topics) and moves the
    /// cursor past the run that needs nothing more.
    async fn forward(&self, progress: &mut Progress, records: &[Spooled]) -> Forwarded {
        self.update_gauges(progress.next, records.first().map(|r| r.received_ms));
        tracing::debug!(
            first = records[0].seq,
            count = records.len(),
            "Forwarding spooled events."
        );
        let steps = self.attempt(progress, records).await;
        progress.breaker.saw(&steps);
        let done = done_prefix(&steps);
        tracing::debug!(
            done,
            of = records.len(),
            "Kafka answered for spooled events."
        );
        progress
            .taken
            .extend(taken_behind(&records[done..], &steps[done..]));
        if done > 0 {
            progress.next = records[done - 1].seq.saturating_add(1);
            progress.taken = progress.taken.split_off(&progress.next);
            self.persist(progress).await;
            self.update_gauges(progress.next, records.get(done).map(|r| r.received_ms));
        }
        let Some(failed) = records.get(done) else {
            progress.backoff = FIRST_BACKOFF;
            return Forwarded::Moved;
        };
        // Re-read from the first record that needs more.
        progress.position = None;
        if let Some(error) = steps[done].error() {
            if progress.breaker.may_park(failed.seq, &steps, error)
                && self.parking.park(failed, error.to_string()).await == Parked::Kept
            {
                progress.breaker.parked(error);
                progress.next = failed.seq.saturating_add(1);
                self.persist(progress).await;
                progress.backoff = FIRST_BACKOFF;
                return Forwarded::Moved;
            }
            tracing::warn!(%error, seq = failed.seq, retry_in_ms = progress.backoff.as_millis(), "Could not forward a spooled event; will retry.");
        }
        Forwarded::Retry
    }

    /// One attempt at `records`: those of held topics are held without sending, the rest
    /// are sent (but for those Kafka took before), and then those Kafka refuses for their
    /// topic's sake are held. What became of each, in order.
    async fn attempt(&self, progress: &Progress, records: &[Spooled]) -> Vec<Step> {
        let mut steps: Vec<Option<Step>> = records
            .iter()
            .map(|r| progress.taken.contains(&r.seq).then_some(Step::Taken))
            .collect();
        let unsent: Vec<usize> = (0..records.len()).filter(|i| steps[*i].is_none()).collect();
        for (i, step) in self.set_aside(records, &unsent, false).await {
            steps[i] = Some(step);
        }
        let sending: Vec<usize> = (0..records.len()).filter(|i| steps[*i].is_none()).collect();
        let answers = sending
            .iter()
            .map(|i| self.deliver.deliver(&records[*i].record()));
        let answers = futures_util::future::join_all(answers).await;
        for (i, answer) in sending.into_iter().zip(answers) {
            steps[i] = Some(Step::Sent(answer));
        }
        let mut steps: Vec<Step> = steps
            .into_iter()
            .map(|s| s.unwrap_or(Step::Taken))
            .collect();
        account(&self.metrics, records, &steps, self.replay_below);
        let hold = to_hold(records, &steps);
        for (i, step) in self.set_aside(records, &hold, true).await {
            steps[i] = step;
        }
        steps
    }

    /// Holds `records[which]` with their topics (starting to hold a topic only if `start`),
    /// parking those past their topic's share. Returns what became of each that is held,
    /// parked, or could not be written (it stays in the log, and is retried).
    async fn set_aside(
        &self,
        records: &[Spooled],
        which: &[usize],
        start: bool,
    ) -> Vec<(usize, Step)> {
        if which.is_empty() || (!start && !self.held.any()) {
            return Vec::new();
        }
        let chosen: Vec<(usize, Spooled)> =
            which.iter().map(|i| (*i, records[*i].clone())).collect();
        let held = Arc::clone(&self.held);
        let holdings = tokio::task::spawn_blocking(move || hold_in_order(&held, chosen, start))
            .await
            .unwrap_or_default();
        let mut steps = Vec::new();
        for (i, holding) in holdings {
            let record = &records[i];
            let step = match holding {
                Holding::NotHeld => continue,
                Holding::Held => Step::SetAside,
                Holding::OverShare => {
                    let why = format!(
                        "its topic {} is held (Kafka refuses it for now) and has used its share \
                         of the spool (spool.held_topic_max_percent)",
                        record.topic
                    );
                    match self.parking.park(record, why).await {
                        Parked::Kept => Step::SetAside,
                        // Kept in the log (never sent past the held ones), retried.
                        Parked::NotWritten => {
                            let why = "it cannot be parked".to_owned();
                            Step::Sent(Err(DeliveryError::SpoolUnavailable(why)))
                        }
                    }
                }
                Holding::Failed(error) => {
                    tracing::error!(%error, seq = record.seq, topic = %record.topic, "Cannot hold a spooled event aside; it stays in the log, and holds up the ones behind it.");
                    Step::Sent(Err(DeliveryError::SpoolUnavailable(error.to_string())))
                }
            };
            steps.push((i, step));
        }
        steps
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

/// Waits `backoff` (or until stopped), then doubles it, up to [`MAX_BACKOFF`].
async fn back_off(backoff: &mut Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// Holds `chosen` in order. Once one of a topic's records could not be written, none of
/// its later records is held (nor sent): each must stay behind it, in the log.
fn hold_in_order(held: &Held, chosen: Vec<(usize, Spooled)>, start: bool) -> Vec<(usize, Holding)> {
    let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut holdings = Vec::with_capacity(chosen.len());
    for (i, record) in chosen {
        let holding = if failed.contains(&record.topic) {
            let why = "an earlier event of its topic could not be held";
            Holding::Failed(std::io::Error::other(why))
        } else {
            held.hold(&record, start)
        };
        if matches!(holding, Holding::Failed(_)) {
            failed.insert(record.topic);
        }
        holdings.push((i, holding));
    }
    holdings
}
