//! Kafka's side of the bridge, the only code that names rdkafka (with `startup`, which
//! wires it): the producer ([`Publisher`]), its librdkafka properties (`config.rs`), the
//! context that routes librdkafka's logs to `tracing` (`context.rs`), topic creation
//! (`topics.rs`), the broker probe behind readiness (`probe.rs`), librdkafka's statistics
//! as metrics (`stats.rs`) and the embedded try-out broker (`embedded.rs`, librdkafka's
//! mock cluster).
//!
//! [`Kafka`] is the component `startup` builds and stops: embedded broker (if configured),
//! producer, probe task. Stopping waits for the probe in progress, then flushes the producer
//! within the deadline — dropping an rdkafka producer purges what it has not sent — and only
//! then stops the embedded broker.

mod config;
mod context;
mod embedded;
mod probe;
mod producers;
mod publisher;
mod renewal;
mod stats;
mod topics;

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use embedded::EmbeddedBroker;
pub use probe::Probe;
pub use producers::{DISTANT, FIRST_BACKOFF, MAX_BACKOFF};
pub use publisher::Publisher;
pub use renewal::Renewal;
use renewal::producer_configs;
use stats::StatsSink;
pub use topics::{SharedConfig, TopicCheck, TopicFacts, TopicOutcome, TopicSetup, record_limit};

use crate::config::{KafkaSettings, Settings};
use crate::delivery::RecordLimit;
use crate::metrics::Metrics;
use crate::shutdown::Stopping;

/// Why Kafka's side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the embedded broker did not start: {0}")]
    Embedded(String),
    /// librdkafka's message, credentials of `[kafka.librdkafka]` redacted.
    #[error("librdkafka refused the producer configuration: {0}")]
    Producer(String),
}

/// The running Kafka side: producer, optional embedded broker, broker probe.
#[derive(Debug)]
pub struct Kafka {
    publisher: Publisher,
    /// Renews the credentials of the producer and the topic checks.
    renewal: Renewal,
    embedded: Option<EmbeddedBroker>,
    /// Topics still to create (taken by the probe).
    topics: Option<TopicSetup>,
    /// The look at the topics once they are there (taken by the probe).
    check: Option<TopicCheck>,
    /// What the check learns: the largest record a routed topic accepts.
    record_limit: Arc<RecordLimit>,
    topics_ready: watch::Sender<bool>,
    probe: Option<JoinHandle<()>>,
}

impl Kafka {
    /// Starts the embedded broker (with `topics` created) when `bootstrap_servers` says
    /// so, then the producer. An unreachable broker is not an error: librdkafka connects
    /// in the background.
    pub fn start(
        settings: &Settings,
        topics: Vec<String>,
        metrics: &Metrics,
    ) -> Result<Self, StartError> {
        let kafka = &settings.kafka;
        let embedded = if kafka.is_embedded() {
            Some(embedded(kafka, &topics)?)
        } else {
            None
        };
        let bootstrap = embedded
            .as_ref()
            .map_or(kafka.bootstrap_servers.as_str(), |b| b.bootstrap_servers());
        let stats = (kafka.statistics_interval_ms > 0)
            .then(|| StatsSink::new(metrics.kafka.clone(), topics.iter().cloned()));
        let record_limit = Arc::new(RecordLimit::default());
        let publisher = producer(
            settings,
            bootstrap,
            metrics,
            stats,
            Arc::clone(&record_limit),
        )?;
        let names = topics.clone();
        let admin: SharedConfig = Arc::new(ArcSwap::from_pointee(config::admin(kafka, bootstrap)));
        let topics = (kafka.create_topics && embedded.is_none()).then(|| TopicSetup {
            admin: Arc::clone(&admin),
            passthrough: kafka.librdkafka.clone(),
            topics,
            partitions: kafka.partitions,
            replication_factor: kafka.replication_factor,
        });
        let (topics_ready, _) = watch::channel(false);
        let compressed = kafka.librdkafka.iter().any(|(k, v)| {
            matches!(k.as_str(), "compression.type" | "compression.codec") && v != "none"
        });
        let check = TopicCheck {
            admin: Arc::clone(&admin),
            topics: names,
            compressed,
            limit: Arc::clone(&record_limit),
            gauge: metrics.kafka_max_record_bytes.clone(),
            missing: metrics.kafka_topics_missing.clone(),
            said: Vec::new(),
            looked: false,
        };
        let renewal = Renewal {
            publisher: publisher.clone(),
            admin,
            bootstrap: bootstrap.to_owned(),
        };
        Ok(Self {
            publisher,
            renewal,
            embedded,
            topics,
            check: Some(check),
            record_limit,
            topics_ready,
            probe: None,
        })
    }

    /// The producer, to deliver through.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// What a reload renews the Kafka credentials with.
    pub fn renewal(&self) -> Renewal {
        self.renewal.clone()
    }

    /// The largest record a routed topic accepts, once the brokers have said.
    pub fn record_limit(&self) -> Arc<RecordLimit> {
        Arc::clone(&self.record_limit)
    }

    /// Turns true once the topics exist (created if the bridge is to create them) and the
    /// producer suits the brokers' distance (`producers.rs`); readiness and the spool's
    /// forwarder wait for it.
    pub fn topics_ready(&self) -> watch::Receiver<bool> {
        self.topics_ready.subscribe()
    }

    /// Starts the broker probe (creating topics first, if asked), which calls `report`
    /// after every probe until `stopping` is set.
    pub fn spawn_probe(
        &mut self,
        interval: Duration,
        stopping: Arc<Stopping>,
        report: impl Fn(bool) + Send + 'static,
    ) {
        let probe = Probe {
            publisher: self.publisher.clone(),
            interval,
            topics: self.topics.take(),
            check: self.check.take(),
            topics_ready: self.topics_ready.clone(),
            stopping,
        };
        self.probe = Some(tokio::spawn(probe.run(report)));
    }

    /// Waits for the probe in progress, flushes the producer, stops the embedded broker;
    /// all by `deadline`. Call after [`Stopping::begin`] and after the last delivery.
    pub async fn stop(self, deadline: Instant) {
        if let Some(mut probe) = self.probe {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, &mut probe).await.is_err() {
                probe.abort();
            }
        }
        let publisher = self.publisher;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::task::spawn_blocking(move || publisher.flush(remaining)).await {
            Ok(Ok(())) => tracing::info!("Flushed the Kafka producer; stopped."),
            Ok(Err(error)) => tracing::warn!(
                %error,
                "Kafka did not take every queued record before the shutdown timeout; \
                 their requests were not answered 2xx."
            ),
            Err(error) => tracing::warn!(%error, "The final flush did not run."),
        }
        drop(self.embedded);
    }
}

/// The embedded broker (`bootstrap_servers = "embedded"`), with `topics` created.
fn embedded(kafka: &KafkaSettings, topics: &[String]) -> Result<EmbeddedBroker, StartError> {
    let broker =
        EmbeddedBroker::start(topics.to_vec(), kafka.partitions).map_err(StartError::Embedded)?;
    tracing::warn!(
        bootstrap_servers = broker.bootstrap_servers(),
        "Started the embedded Kafka broker, for trying the bridge out: nothing persists. \
         Read with: kcat -b {} -C -t {}.ticket_created",
        broker.bootstrap_servers(),
        kafka.topic_prefix,
    );
    Ok(broker)
}

/// The bridge's producer on `bootstrap`.
fn producer(
    settings: &Settings,
    bootstrap: &str,
    metrics: &Metrics,
    stats: Option<Arc<StatsSink>>,
    record_limit: Arc<RecordLimit>,
) -> Result<Publisher, StartError> {
    let kafka = &settings.kafka;
    Publisher::new(
        producer_configs(settings, bootstrap),
        Duration::from_millis(kafka.delivery_timeout_ms),
        metrics.clone(),
        stats,
        record_limit,
    )
    .map_err(|e| StartError::Producer(kafka.librdkafka.redact(&e.to_string())))
}

/// The operator tools' producer (`spool parked replay`, `backfill`): the bridge's settings,
/// no statistics, metrics of its own; flush it before it is dropped.
pub fn operator_publisher(settings: &Settings) -> Result<Publisher, StartError> {
    let metrics = Metrics::new(&crate::metrics::Labels::default());
    producer(
        settings,
        &settings.kafka.bootstrap_servers,
        &metrics,
        None,
        Arc::default(),
    )
}

/// The operator tools' consumer properties (`backfill` reads the bridge's topics back):
/// connection and security as the bridge's, no group offsets committed.
pub fn reader_config(kafka: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = config::admin(kafka, &kafka.bootstrap_servers);
    config
        .set("group.id", "qminder-bridge-backfill")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    config
}

/// The one-partition topic whose consumer group decides which process may fill gaps
/// (`backfill`, and reconciliation): created if missing. Errors are redacted.
pub async fn ensure_lease_topic(
    kafka: &KafkaSettings,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let admin = config::admin(kafka, &kafka.bootstrap_servers);
    topics::ensure(
        &admin,
        &[name.to_owned()],
        1,
        kafka.replication_factor,
        timeout,
    )
    .await
    .map(|_| ())
    .map_err(|e| kafka.librdkafka.redact(&e.to_string()))
}

/// `check-config`: asks librdkafka whether it accepts the producer's properties (it knows
/// its own property names; no connection is made). The error is redacted.
pub fn check_properties(settings: &Settings) -> Result<(), String> {
    let kafka = &settings.kafka;
    let bootstrap = if kafka.is_embedded() {
        "127.0.0.1:1"
    } else {
        &kafka.bootstrap_servers
    };
    config::producer(kafka, bootstrap, settings.server.max_body_bytes, false)
        .create::<rdkafka::producer::BaseProducer>()
        .map(|_| ())
        .map_err(|e| kafka.librdkafka.redact(&e.to_string()))
}

/// `topics --create`: creates the missing `names`. Errors are redacted.
pub async fn create_topics(
    kafka: &KafkaSettings,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<(String, TopicOutcome)>, String> {
    let admin = config::admin(kafka, &kafka.bootstrap_servers);
    topics::ensure(
        &admin,
        names,
        kafka.partitions,
        kafka.replication_factor,
        timeout,
    )
    .await
    .map_err(|e| kafka.librdkafka.redact(&e.to_string()))
}

/// `topics`: what the broker says of each of `names`. Errors are redacted.
pub async fn inspect_topics(
    kafka: &KafkaSettings,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<TopicFacts>, String> {
    let admin = config::admin(kafka, &kafka.bootstrap_servers);
    topics::inspect(&admin, names, timeout)
        .await
        .map_err(|e| kafka.librdkafka.redact(&e.to_string()))
}
