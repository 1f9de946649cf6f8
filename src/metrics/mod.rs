//! Every metric the bridge exports, defined once, on the service's own `Registry`.
//!
//! Names follow `qminder_bridge_<name>_<unit>[_total]`. Label values come only from fixed
//! sets, all given in [`Labels`] by `startup`: endpoint paths and topics from the
//! configuration, event types and routes from the router, reasons from the code tables of
//! `errors.rs` (rejections) and `delivery` (failures). Known combinations are created at
//! zero on start-up, so dashboards and alerts see a series before the first event.
//! Imports nothing of the domain; whoever counts imports this.

mod declare;
mod kafka;
mod reconcile;
mod reload;
mod traces;

use std::sync::Arc;

use declare::Declare;
pub use declare::PREFIX;
pub use kafka::KafkaMetrics;
pub use reconcile::{RUN_RESULTS, ReconcileMetrics};
pub use reload::{RELOAD_RESULTS, ReloadMetrics};
pub use traces::{TRACE_EXPORT_FAILED, TRACE_QUEUE_FULL, TraceMetrics};

use prometheus::{
    Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    TextEncoder,
};

/// The reason label of connections refused by `server.max_connections_per_address`.
pub const CONNECTION_PER_ADDRESS_LIMIT: &str = "per_address_limit";

/// The `stage` label of `requests_abandoned_total`, indexed by whether the request's
/// signature had been verified.
pub const ABANDONED_STAGES: [&str; 2] = ["unverified", "verified"];

/// Endpoint label for requests to no configured path.
pub const NO_ENDPOINT: &str = "none";

/// The bridge's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every name declared, for the test that each is exported.
    declared: Arc<Vec<String>>,
    pub events_accepted: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub events_forwarded: IntCounterVec,
    pub events_failed: IntCounterVec,
    pub events_deduplicated: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Webhook requests dropped unanswered, by endpoint and [`ABANDONED_STAGES`].
    pub requests_abandoned: IntCounterVec,
    pub delivery_duration: Histogram,
    pub requests_in_flight: IntGauge,
    pub in_flight_body_bytes: IntGauge,
    pub unverified_body_bytes: IntGauge,
    pub producer_restarts: IntCounter,
    /// The span export (`[telemetry]`).
    pub traces: TraceMetrics,
    /// Connections closed as they were accepted, by reason (`connection_limit.rs`).
    pub connections_refused: IntCounterVec,
    pub kafka_max_record_bytes: IntGauge,
    /// Routed topics the brokers do not have, at the last look.
    pub kafka_topics_missing: IntGauge,
    pub late_deliveries: IntCounter,
    pub ready: IntGauge,
    pub spool: SpoolMetrics,
    /// librdkafka's statistics (`delivery/kafka/stats.rs`).
    pub kafka: KafkaMetrics,
    /// Continuous reconciliation (`[reconcile]`).
    pub reconcile: ReconcileMetrics,
    /// Reloads of the configuration.
    pub reload: ReloadMetrics,
}

fn abandoned(d: &Declare) -> IntCounterVec {
    d.counter_vec(
        "requests_abandoned_total",
        "Webhook requests dropped before their answer because the client went away (or the server stopped at once), by endpoint and stage: unverified, or verified (its event may still have reached Kafka, uncounted in events_forwarded_total).",
        &["endpoint", "stage"],
    )
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
    /// Events held aside because Kafka refuses their topic for now, by topic.
    pub held_events: IntGaugeVec,
    /// Bytes of the held events' files.
    pub held_bytes: IntGauge,
    /// 1 while Kafka refuses every record alike and parking is stopped.
    pub park_breaker_open: IntGauge,
}

impl SpoolMetrics {
    fn new(d: &Declare) -> Self {
        Self {
            bytes: d.gauge("spool_bytes",
                "Bytes the spool uses on disk, against spool.max_bytes: segments, held and parked records.",
            ),
            events: d.gauge("spool_events",
                "Spooled events not yet acknowledged by Kafka.",
            ),
            oldest_age: d.float_gauge(
                "spool_oldest_age_seconds",
                "Age of the oldest spooled event not yet acknowledged by Kafka (0 when none).",
            ),
            forwarded: d.counter("spool_forwarded_total",
                "Spooled events forwarded to Kafka and acknowledged.",
            ),
            replayed: d.counter("spool_replayed_total",
                "Spooled events found unforwarded at start-up (after a crash or stop) and forwarded since.",
            ),
            torn_records: d.counter("spool_torn_records_total",
                "Incomplete records at a spool segment's end, discarded at start-up (never acknowledged).",
            ),
            forward_failures: d.counter_vec("spool_forward_failures_total",
                "Attempts to forward a spooled event that Kafka did not acknowledge (the event stays spooled and is retried, or parked), by reason.",
                &["reason"],
            ),
            held_events: d.gauge_vec("spool_held_events",
                "Spooled events held aside, by topic, because Kafka refuses their topic for now (missing, not writable); the other topics flow, and these follow in order once it is writable.",
                &["topic"],
            ),
            held_bytes: d.gauge("spool_held_bytes",
                "Bytes of the spool's held events (counted in spool.max_bytes).",
            ),
            park_breaker_open: d.gauge("spool_park_breaker_open",
                "1 while Kafka refuses many distinct spooled events with the same final error (the cluster's cause, e.g. clock skew): nothing is parked, forwarding retries in order until Kafka takes one.",
            ),
            parked: d.counter("spool_parked_total",
                "Spooled events moved to the spool's parked/ directory for an operator: refused outright by Kafka (too large, invalid), or damaged on disk (found at start-up).",
            ),
        }
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
    /// The event types reconciliation can rebuild (`reconcile_missing_total`).
    pub rebuildable_types: Vec<&'a str>,
    /// (endpoint path, registration URL) of every registration (`webhooks_verified_total`).
    pub registrations: Vec<(&'a str, &'a str)>,
}

/// The registry of everything `d` declared, with the process's own metrics, and the
/// declared names.
fn registry_of(d: Declare) -> (Registry, Arc<Vec<String>>) {
    let (registry, declared) = d.finish();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once");
    (registry, Arc::new(declared))
}

impl Metrics {
    /// Creates and registers every metric; pre-creates the series for `labels`.
    pub fn new(labels: &Labels<'_>) -> Self {
        let d = Declare::default();
        let mut m = Self::declared_on(&d);
        // Which build runs: always 1, set once, so not kept.
        d.gauge_vec(
            "build_info",
            "Always 1; labels say which build runs.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        (m.registry, m.declared) = registry_of(d);
        m.precreate(labels);
        m
    }

    /// Every metric, declared on `d`; the registry is filled in by [`Metrics::new`].
    fn declared_on(d: &Declare) -> Self {
        Self {
            events_accepted: d.counter_vec("events_accepted_total",
                "Authenticated webhooks accepted for delivery, by endpoint and event type.",
                &["endpoint", "event_type"],
            ),
            events_rejected: d.counter_vec("events_rejected_total",
                "Requests turned away before acceptance, by endpoint and reason.",
                &["endpoint", "reason"],
            ),
            events_forwarded: d.counter_vec("events_forwarded_total",
                "Events acknowledged by Kafka, by event type and topic.",
                &["event_type", "topic"],
            ),
            events_failed: d.counter_vec("events_failed_total",
                "Accepted events Kafka did not acknowledge (answered 503), by event type and reason.",
                &["event_type", "reason"],
            ),
            events_deduplicated: d.counter_vec("events_deduplicated_total",
                "Webhooks answered with an earlier acknowledgement of the same event, not published again ([dedupe]).",
                &["endpoint"],
            ),
            requests_abandoned: abandoned(d),
            request_duration: d.latency_histogram_vec(
                "request_duration_seconds",
                "Time from receiving a webhook request to answering it, by endpoint.",
                &["endpoint"],
            ),
            delivery_duration: d.latency_histogram(
                "kafka_delivery_duration_seconds",
                "Time from handing a record to the producer to Kafka's acknowledgement.",
            ),
            requests_in_flight: d.gauge("requests_in_flight",
                "Authenticated webhook requests being handled now (each holds a server.max_in_flight slot).",
            ),
            in_flight_body_bytes: d.gauge("in_flight_body_bytes",
                "Bytes of the bodies of authenticated requests being handled now (server.max_in_flight_body_bytes).",
            ),
            unverified_body_bytes: d.gauge("unverified_body_bytes",
                "Bytes of request bodies held before their signature was checked, beyond each request's own 16 KiB (server.max_unverified_body_bytes).",
            ),
            connections_refused: d.counter_vec("connections_refused_total",
                "Connections refused by the HTTP layer, by reason: per_address_limit (closed as accepted: server.max_connections_per_address); bad_request, headers_too_large, request_timeout (a request head that does not parse, outgrows the head buffer or has over 96 headers, or is not complete within server.client_request_timeout_ms: answered 400, 431, 408 by actix-http); tls_handshake_failed; h2_protocol_error (closed by h2 for what the client sent).",
                &["reason"],
            ),
            traces: TraceMetrics::new(d),
            producer_restarts: d.counter("producer_restarts_total",
                "Kafka producers replaced because they could no longer deliver.",
            ),
            kafka_max_record_bytes: d.gauge("kafka_max_record_bytes",
                "The largest record any routed topic accepts (max.message.bytes, learned at start-up); bodies declaring more are refused before reading. 0 while unknown.",
            ),
            kafka_topics_missing: d.gauge("kafka_topics_missing",
                "Routed topics (known, unknown, dead-letter, overrides) the brokers do not have, at the last look (at start, then every 5 minutes): events for them are not delivered (spool mode holds them aside).",
            ),
            late_deliveries: d.counter("events_delivered_after_timeout_total",
                "Records answered 503 (timeout) that Kafka acknowledged later: expect a duplicate if the sender retries.",
            ),
            ready: d.gauge("ready",
                "1 when the bridge is ready to take webhooks (broker reachable, not stopping).",
            ),
            spool: SpoolMetrics::new(d),
            kafka: KafkaMetrics::new(d),
            reconcile: ReconcileMetrics::new(d),
            reload: ReloadMetrics::new(d),
            registry: Registry::new(),
            declared: Arc::default(),
        }
    }

    /// Every metric name the bridge declares (all registered as they were made).
    pub fn declared(&self) -> &[String] {
        &self.declared
    }

    fn precreate(&self, labels: &Labels<'_>) {
        self.connections_refused
            .with_label_values(&[CONNECTION_PER_ADDRESS_LIMIT]);
        self.traces.precreate();
        self.reconcile.precreate(&labels.rebuildable_types);
        self.reload.precreate(&labels.registrations);
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
            for stage in ABANDONED_STAGES {
                self.requests_abandoned
                    .with_label_values(&[endpoint, stage]);
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

#[cfg(test)]
mod tests;
