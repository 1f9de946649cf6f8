//! librdkafka's statistics, every `kafka.statistics_interval_ms`, as `qminder_bridge_kafka_*`
//! metrics: the producer queue against its limits, per broker round trip, requests in
//! flight and waiting, transmit errors, request timeouts, connects, disconnects and
//! retries, per topic the average batch in messages.
//!
//! librdkafka emits the statistics as JSON on the producer's main queue; rdkafka parses it
//! into `Statistics` on its poll thread and calls `ClientContext::stats`, so nothing of this
//! runs on a request's path. librdkafka's counters are totals of one producer instance:
//! the Prometheus counters here advance by the difference since the instance's previous
//! report, so a replaced producer (whose totals start again at 0) never makes one go back.
//! Label values are bounded: brokers by node id (at most [`MAX_BROKERS`]; others share
//! `other`; librdkafka's bootstrap entries, node id -1, are left out), topics only those of
//! the configuration.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rdkafka::statistics::{Broker, Statistics};

use crate::metrics::KafkaMetrics;

/// Distinct broker label values; more brokers than this share the label `other`.
pub const MAX_BROKERS: usize = 32;

/// Where statistics go, shared by every producer generation.
#[derive(Debug)]
pub struct StatsSink {
    metrics: KafkaMetrics,
    topics: HashSet<String>,
    brokers: Mutex<Vec<i32>>,
}

/// One producer instance's view: its previous totals, by broker node id, for the
/// counters' differences.
#[derive(Debug, Default)]
pub struct StatsState {
    last: Mutex<HashMap<(i32, &'static str), u64>>,
}

impl StatsSink {
    pub fn new(metrics: KafkaMetrics, topics: impl IntoIterator<Item = String>) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            topics: topics.into_iter().collect(),
            brokers: Mutex::new(Vec::new()),
        })
    }

    /// Sets the metrics from one report of the producer instance whose state is `state`.
    pub fn record(&self, stats: &Statistics, state: &StatsState) {
        let m = &self.metrics;
        m.queue_messages.set(to_i64(stats.msg_cnt));
        m.queue_max_messages.set(to_i64(stats.msg_max));
        m.queue_bytes.set(to_i64(stats.msg_size));
        m.queue_max_bytes.set(to_i64(stats.msg_size_max));
        let mut last = state.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut reported = HashSet::new();
        for broker in stats.brokers.values().filter(|b| b.nodeid >= 0) {
            let label = self.broker_label(broker.nodeid);
            self.record_broker(&label, broker, &mut last);
            reported.insert(label);
        }
        self.forget_brokers_not_in(&reported);
        for (name, topic) in &stats.topics {
            // An interval without batches keeps the last average (it is not "0 records").
            if self.topics.contains(name) && topic.batchcnt.cnt > 0 {
                m.batch_messages
                    .with_label_values(&[name])
                    .set(topic.batchcnt.avg as f64);
            }
        }
    }

    fn record_broker(
        &self,
        label: &str,
        broker: &Broker,
        last: &mut HashMap<(i32, &'static str), u64>,
    ) {
        let m = &self.metrics;
        // librdkafka's windows are in microseconds. An interval without requests to the
        // broker removes its figures (no data, rather than a stale or a zero round trip),
        // so that an alert on them ends when the broker is no longer asked.
        for (quantile, value) in [
            ("0.5", broker.rtt.as_ref().map(|w| (w.cnt, w.p50))),
            ("0.99", broker.rtt.as_ref().map(|w| (w.cnt, w.p99))),
        ] {
            match value {
                Some((cnt, micros)) if cnt > 0 => m
                    .broker_rtt
                    .with_label_values(&[label, quantile])
                    .set(micros as f64 / 1e6),
                _ => {
                    let _ = m.broker_rtt.remove_label_values(&[label, quantile]);
                }
            }
        }
        m.broker_in_flight
            .with_label_values(&[label])
            .set(broker.waitresp_cnt);
        m.broker_waiting
            .with_label_values(&[label])
            .set(broker.outbuf_cnt);
        let totals = [
            ("transmit_errors", broker.txerrs, &m.broker_transmit_errors),
            (
                "request_timeouts",
                broker.req_timeouts,
                &m.broker_request_timeouts,
            ),
            ("retries", broker.txretries, &m.broker_retries),
            ("connects", opt(broker.connects), &m.broker_connects),
            (
                "disconnects",
                opt(broker.disconnects),
                &m.broker_disconnects,
            ),
        ];
        for (name, total, counter) in totals {
            let previous = last.insert((broker.nodeid, name), total).unwrap_or(0);
            // librdkafka starts a broker's totals again when it comes back after being
            // decommissioned: what it counted since is all new.
            let new = if total < previous {
                total
            } else {
                total - previous
            };
            counter.with_label_values(&[label]).inc_by(new);
        }
    }

    /// Drops the gauges of brokers that are no longer reported (left the cluster), so that
    /// a departed broker's last round trip does not stay on the dashboard and in alerts.
    /// Counters stay: they are totals.
    fn forget_brokers_not_in(&self, reported: &HashSet<String>) {
        let m = &self.metrics;
        let seen = self
            .brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let labels = seen
            .iter()
            .map(i32::to_string)
            .chain((seen.len() >= MAX_BROKERS).then(|| "other".to_owned()));
        for label in labels.filter(|l| !reported.contains(l)) {
            for quantile in ["0.5", "0.99"] {
                let _ = m.broker_rtt.remove_label_values(&[&label, quantile]);
            }
            let _ = m.broker_in_flight.remove_label_values(&[&label]);
            let _ = m.broker_waiting.remove_label_values(&[&label]);
        }
    }

    fn broker_label(&self, node: i32) -> String {
        let mut seen = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&node) {
            if seen.len() >= MAX_BROKERS {
                return "other".to_owned();
            }
            seen.push(node);
        }
        node.to_string()
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn opt(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rdkafka::statistics::{Topic, Window};

    use super::*;
    use crate::metrics::{Labels, Metrics};

    fn broker(node: i32, txretries: u64, rtt_cnt: i64) -> Broker {
        Broker {
            nodeid: node,
            txretries,
            rtt: Some(Window {
                cnt: rtt_cnt,
                p50: 2_000,
                p99: 700_000,
                ..Window::default()
            }),
            ..Broker::default()
        }
    }

    fn report(brokers: Vec<Broker>) -> Statistics {
        let mut stats = Statistics {
            msg_cnt: 7,
            msg_max: 100_000,
            ..Statistics::default()
        };
        for (i, b) in brokers.into_iter().enumerate() {
            stats.brokers.insert(format!("b{i}"), b);
        }
        stats
    }

    fn sink() -> (Metrics, Arc<StatsSink>) {
        let metrics = Metrics::new(&Labels::default());
        let sink = StatsSink::new(metrics.kafka.clone(), ["q.ticket_created".to_owned()]);
        (metrics, sink)
    }

    #[test]
    fn counters_advance_by_each_producers_differences_and_survive_a_reset() {
        let (m, sink) = sink();
        let first = StatsState::default();
        sink.record(&report(vec![broker(1, 5, 1), broker(-1, 99, 1)]), &first);
        sink.record(&report(vec![broker(1, 8, 1)]), &first);
        let retries = |b: &str| m.kafka.broker_retries.with_label_values(&[b]).get();
        assert_eq!(retries("1"), 8);
        assert!(
            !m.render().contains(r#"broker="-1""#),
            "bootstrap entries are left out"
        );
        // The broker came back with its totals from 0: 2 more, not "8 → 2".
        sink.record(&report(vec![broker(1, 2, 1)]), &first);
        assert_eq!(retries("1"), 10);
        // A replaced producer's totals start at 0 too, in a state of its own.
        let second = StatsState::default();
        sink.record(&report(vec![broker(1, 3, 1)]), &second);
        assert_eq!(retries("1"), 13);
        assert_eq!(m.kafka.queue_messages.get(), 7);
        assert_eq!(m.kafka.queue_max_messages.get(), 100_000);
    }

    #[test]
    fn round_trips_are_absent_for_an_idle_broker_and_gauges_go_with_a_departed_one() {
        let (m, sink) = sink();
        let state = StatsState::default();
        sink.record(&report(vec![broker(1, 0, 3), broker(2, 0, 3)]), &state);
        let p99 = |b: &str| {
            format!(
                r#"qminder_bridge_kafka_broker_rtt_seconds{{broker="{b}",quantile="0.99"}} 0.7"#
            )
        };
        assert!(m.render().contains(&p99("1")), "{}", m.render());
        // Broker 1 asked nothing in this interval; broker 2 left the cluster.
        sink.record(&report(vec![broker(1, 0, 0)]), &state);
        let text = m.render();
        assert!(!text.contains(r#"rtt_seconds{broker="1""#), "{text}");
        assert!(!text.contains(r#"rtt_seconds{broker="2""#), "{text}");
        assert!(!text.contains(r#"requests_in_flight{broker="2""#), "{text}");
        assert!(text.contains(r#"requests_in_flight{broker="1""#), "{text}");
    }

    #[test]
    fn broker_labels_are_capped_and_topics_come_from_the_configuration() {
        let (m, sink) = sink();
        let state = StatsState::default();
        let many: Vec<Broker> = (0..40).map(|n| broker(n, 1, 1)).collect();
        let mut stats = report(many);
        for name in ["q.ticket_created", "someone.elses"] {
            let topic = Topic {
                batchcnt: Window {
                    cnt: 2,
                    avg: 9,
                    ..Window::default()
                },
                ..Topic::default()
            };
            stats.topics.insert(name.to_owned(), topic);
        }
        sink.record(&stats, &state);
        let text = m.render();
        let labels: HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("qminder_bridge_kafka_broker_retries_total{"))
            .collect();
        assert_eq!(labels.len(), MAX_BROKERS + 1, "32 node ids and `other`");
        // Eight brokers share `other`, each counted once.
        assert_eq!(
            m.kafka.broker_retries.with_label_values(&["other"]).get(),
            8
        );
        assert!(
            text.contains(r#"qminder_bridge_kafka_batch_messages{topic="q.ticket_created"} 9"#)
        );
        assert!(!text.contains("someone.elses"));
    }
}
