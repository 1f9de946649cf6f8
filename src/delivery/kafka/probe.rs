//! The broker probe behind readiness: every `kafka.health_interval_ms`, create the missing
//! topics first if the bridge was asked to and look at them (`topics.rs`: warnings for
//! thin durability, the record limit of the ingress; again every [`LOOK_AGAIN`]), then ask
//! the broker for metadata through the producer's own client and report whether it
//! answered. Until the producer suits the brokers' distance (`producers.rs`, from the
//! round trips measured here), `topics_ready` stays false: readiness and the spool's
//! forwarder wait for it. How long one request may take: [`Budget`]. librdkafka's `fetch_metadata` blocks, so each probe runs on Tokio's blocking
//! pool. librdkafka sends the request to one broker of its choosing (the most recently
//! used), so one slow or vanishing broker can fail a request while the others serve. So a
//! probe is up to [`ATTEMPTS`] requests within the interval (librdkafka avoids a broker
//! whose request is still outstanding, so the next attempt asks another), and the brokers
//! count as unreachable only after [`FAILED_PROBES`] probes in a row failed with no record
//! acknowledged meanwhile (an ack is an answer too); reachable again after the first
//! success. `tests/api/cluster.rs` shows readiness steady through a slow broker, a lost
//! one, rolling restarts and leader moves, and 503 while the whole cluster is down. The
//! loop ends after the probe in progress once shutdown begins, so that no Kafka client it
//! made outlives the embedded broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::publisher::Publisher;
use super::topics::{TopicCheck, TopicSetup};
use crate::shutdown::Stopping;

/// Failed probes in a row, without an ack meanwhile, before the brokers count as unreachable.
pub const FAILED_PROBES: u32 = 3;
/// How often the topics are looked at again once they were (limits, durability).
pub const LOOK_AGAIN: Duration = Duration::from_secs(300);
/// Metadata requests a probe may make, each bounded by the interval ÷ this.
pub const ATTEMPTS: u32 = 3;

/// What the probe needs; see [`Probe::run`].
#[derive(Debug)]
pub struct Probe {
    pub publisher: Publisher,
    pub interval: Duration,
    /// Topics to create before the first probe; `None` when the bridge need not.
    pub topics: Option<TopicSetup>,
    /// Set to true once the topics are in place.
    pub topics_ready: watch::Sender<bool>,
    /// A look at the topics once they are in place, and every [`LOOK_AGAIN`] after.
    pub check: Option<TopicCheck>,
    pub stopping: Arc<Stopping>,
}

impl Probe {
    /// Probes until shutdown, calling `report(reachable)` after every probe.
    pub async fn run(mut self, report: impl Fn(bool) + Send + 'static) {
        let mut verdict = Verdict::default();
        let mut budget = Budget::default();
        // Round trips measured before the producer was settled for the brokers' distance.
        let mut samples: Vec<Duration> = Vec::new();
        let mut settled = false;
        let mut next_look: Option<std::time::Instant> = None;
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
            if let Some(setup) = &self.topics
                && setup.run(self.interval.max(Duration::from_secs(5))).await
            {
                self.topics = None;
            }
            if self.topics.is_none()
                && next_look.is_none_or(|t| std::time::Instant::now() >= t)
                && let Some(check) = &mut self.check
                && check.run(self.interval.max(Duration::from_secs(5))).await
            {
                next_look = Some(std::time::Instant::now() + LOOK_AGAIN);
            }
            let probe = self.publisher.clone();
            let timeout = budget.attempt(self.interval, self.publisher.delivery_timeout());
            let answered = tokio::task::spawn_blocking(move || {
                (0..ATTEMPTS).find_map(|_| {
                    let sent = std::time::Instant::now();
                    probe.probe(timeout).ok().map(|()| sent.elapsed())
                })
            })
            .await
            .unwrap_or(None);
            if let Some(round_trip) = answered {
                budget.round_trip = Some(round_trip);
                if !settled {
                    samples.push(round_trip);
                    settled = self.publisher.settle(&samples);
                }
            }
            // Ready (and forwarding from the spool) only once the topics are in place and
            // the producer suits the brokers' distance; then for good.
            if settled && self.topics.is_none() && !*self.topics_ready.borrow() {
                self.topics_ready.send_replace(true);
            }
            report(verdict.judge(answered.is_some(), self.publisher.acknowledged()));
        }
    }
}

/// How long one metadata request of a probe may take. A distant cluster is slow, not
/// down: before the first answer, up to `delivery_timeout_ms` ÷ [`ATTEMPTS`] (the bound a
/// webhook's record gets too); after it, four times the last answer's round trip, but at
/// least the interval ÷ [`ATTEMPTS`] and at most that first bound. So a cluster 400 ms away
/// turns ready and stays so (`tests/api/slow_link.rs`), and a nearby cluster that goes
/// down is still noticed within a few intervals.
#[derive(Debug, Default)]
struct Budget {
    round_trip: Option<std::time::Duration>,
}

impl Budget {
    fn attempt(&self, interval: Duration, delivery_timeout: Duration) -> Duration {
        let floor = interval / ATTEMPTS;
        let ceiling = (delivery_timeout / ATTEMPTS).max(floor);
        self.round_trip
            .map_or(ceiling, |rtt| (rtt * 4).clamp(floor, ceiling))
    }
}

/// Readiness's view of the brokers, from probes and acks.
#[derive(Debug)]
struct Verdict {
    /// Failed probes in a row since the last answer (starts as if unreachable).
    failures: u32,
    /// Records acknowledged in all, at the previous probe.
    acks: u64,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            failures: FAILED_PROBES,
            acks: 0,
        }
    }
}

impl Verdict {
    /// Whether the brokers count as reachable after a probe that `answered`, with `acks`
    /// records acknowledged so far.
    fn judge(&mut self, answered: bool, acks: u64) -> bool {
        let acked = acks > self.acks;
        self.acks = acks;
        if answered || acked {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        self.failures < FAILED_PROBES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_waits_long_for_a_first_answer_then_in_step_with_the_round_trip() {
        let (interval, delivery) = (Duration::from_millis(1000), Duration::from_millis(6000));
        let mut b = Budget::default();
        assert_eq!(b.attempt(interval, delivery), Duration::from_millis(2000));
        b.round_trip = Some(Duration::from_millis(5));
        assert_eq!(b.attempt(interval, delivery), interval / ATTEMPTS);
        b.round_trip = Some(Duration::from_millis(400));
        assert_eq!(b.attempt(interval, delivery), Duration::from_millis(1600));
        b.round_trip = Some(Duration::from_millis(4000));
        assert_eq!(b.attempt(interval, delivery), Duration::from_millis(2000));
    }

    #[test]
    fn unreachable_until_an_answer_then_only_after_three_silent_probes_in_a_row() {
        let mut v = Verdict::default();
        assert!(!v.judge(false, 0), "not reachable before any answer");
        assert!(v.judge(true, 0));
        assert!(v.judge(false, 0), "one failed probe is not an outage");
        assert!(v.judge(false, 0));
        assert!(!v.judge(false, 0), "the third in a row is");
        assert!(v.judge(true, 0), "the first answer is enough");
        assert!(v.judge(false, 0));
        assert!(v.judge(false, 5), "an ack meanwhile counts as an answer");
        assert!(v.judge(false, 5));
        assert!(v.judge(false, 5));
        assert!(!v.judge(false, 5), "no ack since: three failures in a row");
    }
}
