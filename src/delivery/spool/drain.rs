//! Drains held topics: tries each held topic's oldest records again when its back-off is
//! due, each topic in a task of its own (so one topic's slow refusal — a whole delivery
//! timeout — delays no other), and settles what Kafka took. A topic whose held records are
//! all in Kafka flows through the log again (`held.rs`).
//!
//! Its own task beside the forwarder: an attempt at a missing topic may take the whole
//! `kafka.delivery_timeout_ms`, and the log's stream must not wait for it. Order within a
//! topic holds because the forwarder holds every record of a held topic, one attempt per
//! topic runs at a time, and a lane is dropped only once empty, under the lanes' lock.
//! A held record is parked only when Kafka refused it itself [`PARK_AFTER`] times and took
//! another record of its topic since the first refusal: a refusal of every record alike
//! (clock skew, a lowered limit) parks nothing, the lane waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::breaker::PARK_AFTER;
use super::frame::Spooled;
use super::held::Held;
use super::park::{Parked, Parking};
use super::steps::{Step, account, done_prefix, taken_behind};
use crate::delivery::Deliver;
use crate::metrics::Metrics;

/// The longest the drainer sleeps between looks at the held topics.
const IDLE: Duration = Duration::from_millis(250);

pub(crate) struct Drainer {
    pub held: Arc<Held>,
    pub deliver: Arc<dyn Deliver>,
    pub parking: Parking,
    pub metrics: Metrics,
    pub batch: usize,
    /// Final refusals in a row of a held topic's oldest record: (sequence number, times,
    /// whether Kafka took another of the topic's records meanwhile).
    refused: Mutex<HashMap<String, (u64, u32, bool)>>,
}

impl Drainer {
    pub fn new(held: Arc<Held>, deliver: Arc<dyn Deliver>, parking: Parking, batch: usize) -> Self {
        Self {
            metrics: parking.metrics.clone(),
            held,
            deliver,
            parking,
            batch,
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// Runs once `topics_ready`, until `stop` turns true or its sender is gone; attempts
    /// still out then are dropped (their records stay held, for the next start).
    pub async fn run(
        self,
        mut topics_ready: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::select! {
            _ = topics_ready.wait_for(|ready| *ready) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let this = Arc::new(self);
        let mut attempts = JoinSet::new();
        while !*stop.borrow() && stop.has_changed().is_ok() {
            let (held, batch) = (Arc::clone(&this.held), this.batch);
            let due = tokio::task::spawn_blocking(move || held.due(batch))
                .await
                .unwrap_or_default();
            for (topic, records) in due {
                let this = Arc::clone(&this);
                attempts.spawn(async move { this.attempt(&topic, &records).await });
            }
            let wait = this
                .held
                .next_due()
                .map_or(IDLE, |at| at.saturating_duration_since(Instant::now()))
                .min(IDLE);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                Some(_) = attempts.join_next() => {}
                _ = stop.changed() => {}
            }
        }
        attempts.shutdown().await;
    }

    /// Sends `records`, `topic`'s oldest held ones, in order, and settles the lane: those
    /// that need nothing more leave it — Kafka took them (and no failed one of their key is
    /// before them), or Kafka refused the oldest itself often enough, while taking another
    /// of the topic, and it was parked.
    async fn attempt(&self, topic: &str, records: &[Spooled]) {
        let answers = records.iter().map(|r| self.deliver.deliver(&r.record()));
        let steps: Vec<Step> = futures_util::future::join_all(answers)
            .await
            .into_iter()
            .map(Step::Sent)
            .collect();
        account(&self.metrics, records, &steps, 0);
        let done = done_prefix(&steps);
        let mut release: Vec<u64> = records[..done].iter().map(|r| r.seq).collect();
        release.extend(taken_behind(&records[done..], &steps[done..]));
        let failed = records.get(done);
        let acked = steps.iter().any(Step::acked);
        if let Some(failed) = failed
            && let Some(error) = steps[done].error().filter(|e| e.is_final())
            && self.refused_enough(topic, failed.seq, acked)
            && self.parking.park(failed, error.to_string()).await == Parked::Kept
        {
            release.push(failed.seq);
        }
        let failed = failed.is_some_and(|f| !release.contains(&f.seq));
        let (held, topic) = (Arc::clone(&self.held), topic.to_owned());
        let settled =
            tokio::task::spawn_blocking(move || held.settle(&topic, &release, failed)).await;
        if let Ok(Err(error)) = settled {
            tracing::warn!(%error, "Cannot remove a forwarded held event's file yet; it may be sent again.");
        }
    }

    /// Whether Kafka has now refused `topic`'s record `seq` itself [`PARK_AFTER`] times,
    /// and taken another of the topic's records since the first (`acked`: in this attempt).
    fn refused_enough(&self, topic: &str, seq: u64, acked: bool) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let (times, proven) = match refused.get(topic) {
            Some((s, n, proven)) if *s == seq => (n + 1, *proven || acked),
            _ => (1, acked),
        };
        refused.insert(topic.to_owned(), (seq, times, proven));
        times >= PARK_AFTER && proven
    }
}
