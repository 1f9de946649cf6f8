//! Every metric the bridge exports, defined once, on the service's own `Registry`.
//!
//! Names follow `qminder_bridge_<name>_<unit>[_total]`. Label values come only from fixed
//! sets, all given in [`Labels`] by `startup`: endpoint paths and topics from the
//! configuration, event types and routes from the router, reasons from the code tables of
//! `errors.rs` (rejections) and `delivery` (failures). Known combinations are created at
//! zero on start-up, so dashboards and alerts see a series before the first event.
//! Imports nothing of the domain; whoever counts imports this.

mod kafka;

pub use kafka::KafkaMetrics;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Endpoint label for requests to no configured path.
pub const NO_ENDPOINT: &str = "none";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The bridge's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub events_accepted: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub events_forwarded: IntCounterVec,
    pub events_failed: IntCounterVec,
    pub events_deduplicated: IntCounterVec,
    pub request_duration: HistogramVec,
    pub delivery_duration: Histogram,
    pub requests_in_flight: IntGauge,
    pub in_flight_body_bytes: IntGauge,
    pub unverified_body_bytes: IntGauge,
    pub producer_restarts: IntCounter,
    pub kafka_max_record_bytes: IntGauge,
    pub late_deliveries: IntCounter,
    pub ready: IntGauge,
    pub spool: SpoolMetrics,
    /// librdkafka's statistics (`delivery/kafka/stats.rs`).
    pub kafka: KafkaMetrics,
    build_info: IntGaugeVec,
}

/// The spool's gauges and counters (all zero when the spool is off).
#[derive(Debug, Clone)]
pub struct SpoolMetrics {
    pub bytes: IntGauge,
    pub events: IntGauge,
    pub oldest_age: prometheus::Gauge,
    pub forwarded: IntCounter,
    pub replayed: IntCounter,
    pub torn_records: IntCounter,
    pub parked: IntCounter,
    /// Forwarding attempts Kafka did not acknowledge, by failure reason (retried).
    pub forward_failures: IntCounterVec,
}

impl SpoolMetrics {
    fn new() -> Self {
        Self {
            bytes: int_gauge(
                "qminder_bridge_spool_bytes",
                "Bytes of spool segments on disk.",
            ),
            events: int_gauge(
                "qminder_bridge_spool_events",
                "Spooled events not yet acknowledged by Kafka.",
            ),
            oldest_age: prometheus::Gauge::new(
                "qminder_bridge_spool_oldest_age_seconds",
                "Age of the oldest spooled event not yet acknowledged by Kafka (0 when none).",
            )
            .expect("valid metric definition"),
            forwarded: int_counter(
                "qminder_bridge_spool_forwarded_total",
                "Spooled events forwarded to Kafka and acknowledged.",
            ),
            replayed: int_counter(
                "qminder_bridge_spool_replayed_total",
                "Spooled events found unforwarded at start-up (after a crash or stop) and forwarded since.",
            ),
            torn_records: int_counter(
                "qminder_bridge_spool_torn_records_total",
                "Incomplete records at a spool segment's end, discarded at start-up (never acknowledged).",
            ),
            forward_failures: counter_vec(
                "spool_forward_failures_total",
                "Attempts to forward a spooled event that Kafka did not acknowledge (the event stays spooled and is retried, or parked), by reason.",
                &["reason"],
            ),
            parked: int_counter(
                "qminder_bridge_spool_parked_total",
                "Spooled events moved to the spool's parked/ directory for an operator: refused outright by Kafka (too large, invalid), or damaged on disk (found at start-up).",
            ),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.bytes.clone()),
            Box::new(self.events.clone()),
            Box::new(self.oldest_age.clone()),
            Box::new(self.forwarded.clone()),
            Box::new(self.replayed.clone()),
            Box::new(self.torn_records.clone()),
            Box::new(self.parked.clone()),
            Box::new(self.forward_failures.clone()),
        ]
    }
}

/// The label sets known at start-up.
#[derive(Debug, Clone, Default)]
pub struct Labels<'a> {
    pub endpoints: Vec<&'a str>,
    pub event_types: Vec<&'a str>,
    /// (event type label, topic) pairs the router can produce.
    pub routes: Vec<(&'a str, &'a str)>,
    /// The `reason`s of `events_rejected_total` (the rejection codes).
    pub reject_reasons: Vec<&'a str>,
    /// The `reason`s of `events_failed_total` and `spool_forward_failures_total`.
    pub failure_reasons: Vec<&'a str>,
}

impl Metrics {
    /// Creates and registers every metric; pre-creates the series for `labels`.
    pub fn new(labels: &Labels<'_>) -> Self {
        let m = Self {
            events_accepted: counter_vec(
                "events_accepted_total",
                "Authenticated webhooks accepted for delivery, by endpoint and event type.",
                &["endpoint", "event_type"],
            ),
            events_rejected: counter_vec(
                "events_rejected_total",
                "Requests turned away before acceptance, by endpoint and reason.",
                &["endpoint", "reason"],
            ),
            events_forwarded: counter_vec(
                "events_forwarded_total",
                "Events acknowledged by Kafka, by event type and topic.",
                &["event_type", "topic"],
            ),
            events_failed: counter_vec(
                "events_failed_total",
                "Accepted events Kafka did not acknowledge (answered 503), by event type and reason.",
                &["event_type", "reason"],
            ),
            events_deduplicated: counter_vec(
                "events_deduplicated_total",
                "Webhooks answered with an earlier acknowledgement of the same event, not published again ([dedupe]).",
                &["endpoint"],
            ),
            request_duration: HistogramVec::new(
                latency_histogram(
                    "qminder_bridge_request_duration_seconds",
                    "Time from receiving a webhook request to answering it, by endpoint.",
                ),
                &["endpoint"],
            )
            .expect("valid metric definition"),
            delivery_duration: Histogram::with_opts(latency_histogram(
                "qminder_bridge_kafka_delivery_duration_seconds",
                "Time from handing a record to the producer to Kafka's acknowledgement.",
            ))
            .expect("valid metric definition"),
            requests_in_flight: int_gauge(
                "qminder_bridge_requests_in_flight",
                "Authenticated webhook requests being handled now (each holds a server.max_in_flight slot).",
            ),
            in_flight_body_bytes: int_gauge(
                "qminder_bridge_in_flight_body_bytes",
                "Bytes of the bodies of authenticated requests being handled now (server.max_in_flight_body_bytes).",
            ),
            unverified_body_bytes: int_gauge(
                "qminder_bridge_unverified_body_bytes",
                "Bytes of request bodies held before their signature was checked (server.max_unverified_body_bytes).",
            ),
            producer_restarts: int_counter(
                "qminder_bridge_producer_restarts_total",
                "Kafka producers replaced because they could no longer deliver.",
            ),
            kafka_max_record_bytes: int_gauge(
                "qminder_bridge_kafka_max_record_bytes",
                "The largest record any routed topic accepts (max.message.bytes, learned at start-up); bodies declaring more are refused before reading. 0 while unknown.",
            ),
            late_deliveries: int_counter(
                "qminder_bridge_events_delivered_after_timeout_total",
                "Records answered 503 (timeout) that Kafka acknowledged later: expect a duplicate if the sender retries.",
            ),
            ready: int_gauge(
                "qminder_bridge_ready",
                "1 when the bridge is ready to take webhooks (broker reachable, not stopping).",
            ),
            build_info: gauge_vec(
                "build_info",
                "Always 1; labels say which build runs.",
                &["version"],
            ),
            spool: SpoolMetrics::new(),
            kafka: KafkaMetrics::new(),
            registry: Registry::new(),
        };
        m.register_all();
        m.precreate(labels);
        m
    }

    fn register_all(&self) {
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.events_accepted.clone()),
            Box::new(self.events_rejected.clone()),
            Box::new(self.events_forwarded.clone()),
            Box::new(self.events_failed.clone()),
            Box::new(self.events_deduplicated.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.delivery_duration.clone()),
            Box::new(self.requests_in_flight.clone()),
            Box::new(self.in_flight_body_bytes.clone()),
            Box::new(self.unverified_body_bytes.clone()),
            Box::new(self.producer_restarts.clone()),
            Box::new(self.kafka_max_record_bytes.clone()),
            Box::new(self.late_deliveries.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.build_info.clone()),
        ];
        collectors.extend(self.spool.collectors());
        collectors.extend(self.kafka.collectors());
        for c in collectors {
            self.registry
                .register(c)
                .expect("each metric is registered once");
        }
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector is registered once");
    }

    fn precreate(&self, labels: &Labels<'_>) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for endpoint in &labels.endpoints {
            self.request_duration.with_label_values(&[endpoint]);
            self.events_deduplicated.with_label_values(&[endpoint]);
            for event_type in &labels.event_types {
                self.events_accepted
                    .with_label_values(&[endpoint, event_type]);
            }
            for reason in &labels.reject_reasons {
                self.events_rejected.with_label_values(&[endpoint, reason]);
            }
        }
        self.events_rejected
            .with_label_values(&[NO_ENDPOINT, "not_found"]);
        for (event_type, topic) in &labels.routes {
            self.events_forwarded
                .with_label_values(&[event_type, topic]);
        }
        for event_type in &labels.event_types {
            for reason in &labels.failure_reasons {
                self.events_failed.with_label_values(&[event_type, reason]);
            }
        }
        for reason in &labels.failure_reasons {
            self.spool.forward_failures.with_label_values(&[reason]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never make.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric definition")
}

fn int_counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric definition")
}

fn latency_histogram(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(format!("qminder_bridge_{name}"), help), labels)
        .expect("valid metric definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(format!("qminder_bridge_{name}"), help), labels)
        .expect("valid metric definition")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_every_series_at_zero_before_any_traffic() {
        let m = Metrics::new(&Labels {
            endpoints: vec!["/hook"],
            event_types: vec!["ticket_created"],
            routes: vec![("ticket_created", "qminder.ticket_created")],
            reject_reasons: vec!["invalid_signature"],
            failure_reasons: vec!["timeout"],
        });
        let text = m.render();
        for line in [
            r#"qminder_bridge_events_accepted_total{endpoint="/hook",event_type="ticket_created"} 0"#,
            r#"qminder_bridge_events_rejected_total{endpoint="/hook",reason="invalid_signature"} 0"#,
            r#"qminder_bridge_events_forwarded_total{event_type="ticket_created",topic="qminder.ticket_created"} 0"#,
            r#"qminder_bridge_events_failed_total{event_type="ticket_created",reason="timeout"} 0"#,
            "qminder_bridge_requests_in_flight 0",
            "qminder_bridge_producer_restarts_total 0",
            "qminder_bridge_kafka_delivery_duration_seconds_count 0",
            "qminder_bridge_kafka_queue_messages 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("qminder_bridge_build_info{version=\""));
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
