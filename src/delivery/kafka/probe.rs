//! The broker probe behind readiness: every `kafka.health_interval_ms`, create the missing
//! topics first if the bridge was asked to (`topics.rs`), then ask the broker for metadata
//! through the producer's own client (bounded by the same interval) and report whether it
//! answered. librdkafka's `fetch_metadata` blocks, so each probe runs on Tokio's blocking
//! pool. The loop ends after the probe in progress once shutdown begins, so that no Kafka
//! client it made outlives the embedded broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::publisher::Publisher;
use super::topics::TopicSetup;
use crate::shutdown::Stopping;

/// What the probe needs; see [`Probe::run`].
#[derive(Debug)]
pub struct Probe {
    pub publisher: Publisher,
    pub interval: Duration,
    /// Topics to create before the first probe; `None` when the bridge need not.
    pub topics: Option<TopicSetup>,
    /// Set to true once the topics are in place.
    pub topics_ready: watch::Sender<bool>,
    pub stopping: Arc<Stopping>,
}

impl Probe {
    /// Probes until shutdown, calling `report(reachable)` after every probe.
    pub async fn run(mut self, report: impl Fn(bool) + Send + 'static) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.stopping.wait() => return,
            }
            if self.stopping.is_set() {
                return;
            }
            if let Some(setup) = &self.topics {
                if setup.run(self.interval.max(Duration::from_secs(5))).await {
                    self.topics_ready.send_replace(true);
                    self.topics = None;
                }
            }
            let probe = self.publisher.clone();
            let interval = self.interval;
            let reachable = tokio::task::spawn_blocking(move || probe.probe(interval))
                .await
                .map(|r| r.is_ok())
                .unwrap_or(false);
            report(reachable);
        }
    }
}
