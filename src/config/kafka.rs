//! `[kafka]`: brokers, topics, delivery bounds, record format, security, passthrough.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::passthrough::{Passthrough, check_passthrough};
use super::security::{KafkaSecurity, check_security};
use super::{EMBEDDED, Settings};
use crate::record::RecordFormat;

/// `[kafka]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list, or `embedded` for an in-process mock cluster
    /// (try-out only: nothing persists).
    pub bootstrap_servers: String,
    /// Known event types go to `<topic_prefix>.<event_type>` unless overridden in `topics`.
    pub topic_prefix: String,
    /// Topic for event types without a topic of their own. Default `<topic_prefix>.unknown`.
    pub unknown_topic: Option<String>,
    /// Topic for authenticated bodies that are not events. Default `<topic_prefix>.deadletter`.
    pub dead_letter_topic: Option<String>,
    /// Longest wait for Kafka's acknowledgement before answering 503. Also librdkafka's
    /// `message.timeout.ms`, so librdkafka gives up on the record at the same time.
    pub delivery_timeout_ms: u64,
    /// librdkafka's `linger.ms`: how long a record may wait in the producer for others to
    /// share its produce request. Every webhook waits for its ack, so this is added to
    /// every answer's latency; fractions are allowed (`0.5`). See docs/performance.md for
    /// how the default was chosen and how to choose for a real cluster.
    pub linger_ms: f64,
    /// librdkafka's `max.in.flight.requests.per.connection`, 1–5 (the idempotent producer
    /// allows at most 5). Unset (the default): the bridge chooses, 1 while the brokers are
    /// near, 5 once the readiness probe measures a round trip of 25 ms or more (the
    /// producer is then replaced, gracefully, once). With 1, records that arrive while a
    /// request is in flight go together in the next one, so batches grow with load by
    /// themselves (the fastest on a near cluster); on a distant one, 1 makes records queue
    /// behind round trips until they time out (docs/performance.md, "A slow link").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_requests: Option<u32>,
    /// How often librdkafka reports its statistics (queue, brokers' round trip, requests,
    /// errors, batches), exported as `qminder_bridge_kafka_*` metrics; 0 turns them off.
    /// Each report is parsed off the request path, on rdkafka's poll thread.
    pub statistics_interval_ms: u64,
    /// `structured` (CloudEvents JSON value) or `binary` (data value, `ce_*` headers).
    pub record_format: RecordFormat,
    /// Create missing topics at start-up (and keep trying until the broker answers).
    pub create_topics: bool,
    /// Partitions of topics the bridge creates: the consumers' parallelism. Each costs a
    /// produce request of its own per batch (librdkafka), so no more than consumers need.
    pub partitions: i32,
    /// Replication factor of topics the bridge creates.
    pub replication_factor: i32,
    /// How often readiness asks the broker for metadata.
    pub health_interval_ms: u64,
    /// Per-event-type topic overrides, e.g. `ticket_created = "tickets.created"`. May name
    /// types Qminder adds later.
    pub topics: BTreeMap<String, String>,
    /// librdkafka producer properties passed through as they are, e.g.
    /// `"compression.type" = "zstd"`. Settings that weaken delivery guarantees are refused;
    /// credentials among them are redacted when shown.
    pub librdkafka: Passthrough,
    /// TLS and SASL to the brokers.
    pub security: KafkaSecurity,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: "qminder".into(),
            unknown_topic: None,
            dead_letter_topic: None,
            delivery_timeout_ms: 5_000,
            linger_ms: 1.0,
            max_in_flight_requests: None,
            statistics_interval_ms: 5_000,
            record_format: RecordFormat::Structured,
            create_topics: false,
            partitions: 3,
            replication_factor: 3,
            health_interval_ms: 1_000,
            topics: BTreeMap::new(),
            librdkafka: Passthrough::default(),
            security: KafkaSecurity::default(),
        }
    }
}

impl KafkaSettings {
    pub fn unknown_topic(&self) -> String {
        self.unknown_topic
            .clone()
            .unwrap_or_else(|| format!("{}.unknown", self.topic_prefix))
    }

    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.deadletter", self.topic_prefix))
    }

    /// The router this section configures: `topic_prefix`, `topics`, `unknown_topic`,
    /// `dead_letter_topic`.
    pub fn router(&self) -> crate::routing::Router {
        crate::routing::Router::new(
            &self.topic_prefix,
            &self.topics,
            &self.unknown_topic(),
            &self.dead_letter_topic(),
        )
    }

    pub fn is_embedded(&self) -> bool {
        self.bootstrap_servers == EMBEDDED
    }
}

impl Settings {
    pub(super) fn validate_kafka(&self, problems: &mut Vec<String>) {
        let k = &self.kafka;
        if k.bootstrap_servers.trim().is_empty() {
            problems.push(
                "kafka.bootstrap_servers is empty; give host:port[,host:port] or \"embedded\""
                    .into(),
            );
        }
        if k.delivery_timeout_ms == 0 {
            problems.push("kafka.delivery_timeout_ms must be above 0 (default 5000)".into());
        }
        if !(0.0..=900_000.0).contains(&k.linger_ms) {
            problems.push("kafka.linger_ms must be between 0 and 900000 (default 1)".into());
        }
        if k.max_in_flight_requests
            .is_some_and(|n| !(1..=5).contains(&n))
        {
            problems.push(
                "kafka.max_in_flight_requests must be between 1 and 5, as the idempotent \
                 producer requires (or unset: the bridge chooses by the brokers' distance)"
                    .into(),
            );
        }
        if k.health_interval_ms == 0 {
            problems.push("kafka.health_interval_ms must be above 0 (default 1000)".into());
        }
        if k.statistics_interval_ms > 86_400_000 {
            problems.push(
                "kafka.statistics_interval_ms must be at most 86400000 (a day); 0 turns the \
                 statistics off (default 5000)"
                    .into(),
            );
        }
        if k.partitions < 1 {
            problems.push("kafka.partitions must be at least 1".into());
        }
        if k.replication_factor < 1 {
            problems.push("kafka.replication_factor must be at least 1".into());
        }
        let mut topics = vec![
            ("kafka.unknown_topic".to_owned(), k.unknown_topic()),
            ("kafka.dead_letter_topic".to_owned(), k.dead_letter_topic()),
        ];
        for t in crate::event::KNOWN_EVENT_TYPES {
            topics.push((
                "kafka.topic_prefix".into(),
                format!("{}.{t}", k.topic_prefix),
            ));
        }
        for (event_type, topic) in &k.topics {
            topics.push((format!("kafka.topics.{event_type}"), topic.clone()));
        }
        for (key, topic) in topics {
            if let Err(why) = check_topic_name(&topic) {
                problems.push(format!("{key} gives topic {topic:?}, which {why}"));
            }
        }
        check_passthrough(&k.librdkafka, problems);
        check_security(&k.security, problems);
    }
}

/// Kafka's rules for topic names.
fn check_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic == "." || topic == ".." {
        return Err("is not a valid Kafka topic name");
    }
    if topic.len() > 249 {
        return Err("is longer than Kafka's 249 characters");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("has characters Kafka refuses; use only a-z A-Z 0-9 . _ -");
    }
    Ok(())
}
