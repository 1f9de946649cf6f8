//! Drains held topics: tries each held topic's oldest records again when its back-off is
//! due (all due topics at once, so one topic's slow refusal — a delivery timeout — delays
//! no other), and releases what Kafka took. A topic whose held records are all in Kafka
//! flows through the log again (`held.rs`).
//!
//! Its own task beside the forwarder: an attempt at a missing topic may take the whole
//! `kafka.delivery_timeout_ms`, and the log's stream must not wait for it. Order within a
//! topic holds because the forwarder holds every record of a held topic, and the lane is
//! dropped only once empty, under the same lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::breaker::PARK_AFTER;
use super::frame::Spooled;
use super::held::Held;
use super::park::Parking;
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
    pub topics_ready: watch::Receiver<bool>,
    /// Final refusals in a row of a held record: (sequence number, times).
    refused: Mutex<HashMap<String, (u64, u32)>>,
}

impl Drainer {
    pub fn new(
        held: Arc<Held>,
        deliver: Arc<dyn Deliver>,
        parking: Parking,
        batch: usize,
        topics_ready: watch::Receiver<bool>,
    ) -> Self {
        Self {
            metrics: parking.metrics.clone(),
            held,
            deliver,
            parking,
            batch,
            topics_ready,
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// Runs until `stop` turns true or its sender is gone (finishing the attempts in hand).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.topics_ready.wait_for(|ready| *ready) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        while !*stop.borrow() && stop.has_changed().is_ok() {
            let (held, batch) = (Arc::clone(&self.held), self.batch);
            let due = tokio::task::spawn_blocking(move || held.due(batch))
                .await
                .unwrap_or_default();
            let attempts = due
                .iter()
                .map(|(topic, records)| self.attempt(topic, records));
            futures_util::future::join_all(attempts).await;
            let wait = self
                .held
                .next_due()
                .map_or(IDLE, |at| at.saturating_duration_since(Instant::now()))
                .min(IDLE);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sends `records`, `topic`'s oldest held ones, in order, and releases those that need
    /// nothing more: Kafka took them (and no failed one of their key is before them), or
    /// Kafka refused one itself `PARK_AFTER` times and it was parked.
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
        if let Some(failed) = records.get(done) {
            if let Some(error) = steps[done].error().filter(|e| e.is_final())
                && self.refused_enough(topic, failed.seq)
                && self.parking.park(failed, error.to_string()).await
            {
                release.push(failed.seq);
            } else {
                tracing::debug!(%topic, seq = failed.seq, "A held topic's oldest event failed again; will retry.");
            }
            self.held.retry_later(topic);
        }
        if release.is_empty() {
            return;
        }
        let (held, topic) = (Arc::clone(&self.held), topic.to_owned());
        let released = tokio::task::spawn_blocking(move || held.release(&topic, &release)).await;
        if let Ok(Err(error)) = released {
            tracing::warn!(%error, "Cannot remove a forwarded held event's file yet; it may be sent again.");
        }
    }

    /// Whether Kafka has now refused `topic`'s record `seq` itself [`PARK_AFTER`] times.
    fn refused_enough(&self, topic: &str, seq: u64) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let times = match refused.get(topic) {
            Some((s, n)) if *s == seq => n + 1,
            _ => 1,
        };
        refused.insert(topic.to_owned(), (seq, times));
        times >= PARK_AFTER
    }
}
