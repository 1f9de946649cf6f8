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

/// One producer instance's view: its previous totals, for the counters' differences.
#[derive(Debug, Default)]
pub struct StatsState {
    last: Mutex<HashMap<(String, &'static str), u64>>,
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
        for broker in stats.brokers.values().filter(|b| b.nodeid >= 0) {
            let label = self.broker_label(broker.nodeid);
            self.record_broker(&label, broker, &mut last);
        }
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
        last: &mut HashMap<(String, &'static str), u64>,
    ) {
        let m = &self.metrics;
        // librdkafka's windows are in microseconds. An interval without requests keeps the
        // last figures: an idle broker is not a fast one.
        if let Some(rtt) = broker.rtt.as_ref().filter(|w| w.cnt > 0) {
            for (quantile, value) in [("0.5", rtt.p50), ("0.99", rtt.p99)] {
                m.broker_rtt
                    .with_label_values(&[label, quantile])
                    .set(value as f64 / 1e6);
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
            let previous = last.insert((label.to_owned(), name), total).unwrap_or(0);
            counter
                .with_label_values(&[label])
                .inc_by(total.saturating_sub(previous));
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
