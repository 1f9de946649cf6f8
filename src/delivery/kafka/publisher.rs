//! Stage 6 of the data path: hand a record to Kafka and wait, within a bound, for its ack.
//!
//! One rdkafka `FutureProducer` (acks=all, idempotent; see `config.rs`). `send_result`
//! enqueues without ever sleeping (a full queue is an immediate error); the wait for the
//! delivery report is bounded by `delivery_timeout_ms`, which is also librdkafka's
//! `message.timeout.ms`. When we stop waiting, a watcher keeps the report's receiver alive
//! until librdkafka resolves the record, so what became of it is still seen.
//!
//! A producer that can no longer deliver is replaced: a fatal librdkafka error, or a
//! fencing or epoch error (e.g. `PRODUCER_FENCED`, which tansu answers for good after
//! librdkafka bumped its idempotent epoch on a timed-out record; see `docs/testing.md`).
//! A timed-out record alone is not such an error: librdkafka bumps the epoch by itself and
//! Kafka (≥ 2.5) accepts it, so a slow or restarting broker never costs the producer and
//! its retries (`tests/api/cluster.rs`).
//! Replacing it, with back-off, and once more when the brokers are distant:
//! `producers.rs`. Knows records and topics, never HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};

use super::producers::{Configs, Generation, Producers};
use super::stats::StatsSink;
use crate::delivery::{Deliver, Delivered, DeliveryError, Pending, RecordLimit};
use crate::metrics::Metrics;
use crate::record::Record;

struct Inner {
    producers: Arc<Producers>,
    delivery_timeout: Duration,
    metrics: Metrics,
    /// What the topics accept, once learned: tells a record too large for any topic from
    /// one refused with a batch it shared.
    record_limit: Arc<RecordLimit>,
}

/// Where a librdkafka error came from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// librdkafka refused the record itself, before sending it.
    Local,
    /// The broker answered the produce request that carried it, `bytes` long.
    Broker { bytes: usize },
}

/// The Kafka producer, replaced when it breaks. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("generation", &self.inner.producers.current().number)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Creates the producer. Fails only on configuration librdkafka refuses; an unreachable
    /// broker is not an error (librdkafka connects in the background). Statistics, when
    /// `statistics.interval.ms` asks for them, go to `stats`.
    pub fn new(
        configs: Configs,
        delivery_timeout: Duration,
        metrics: Metrics,
        stats: Option<Arc<StatsSink>>,
        record_limit: Arc<RecordLimit>,
    ) -> Result<Self, KafkaError> {
        let producers = Producers::new(configs, stats, delivery_timeout, metrics.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                producers: Arc::new(producers),
                delivery_timeout,
                metrics,
                record_limit,
            }),
        })
    }

    /// The round trips the readiness probe measured so far: whether the producer suits
    /// the brokers' distance yet (`producers.rs`).
    pub fn settle(&self, round_trips: &[Duration]) -> bool {
        self.inner.producers.settle(round_trips)
    }

    /// Asks the broker for metadata, as the readiness check. Blocks up to `timeout`.
    pub fn probe(&self, timeout: Duration) -> Result<(), KafkaError> {
        let generation = self.inner.producers.current();
        generation
            .producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
    }

    /// How long a record may wait for Kafka's acknowledgement (`delivery_timeout_ms`).
    pub fn delivery_timeout(&self) -> Duration {
        self.inner.delivery_timeout
    }

    /// Records Kafka has acknowledged so far (the delivery histogram's count: nothing is
    /// added to the hot path for it).
    pub fn acknowledged(&self) -> u64 {
        self.inner.metrics.delivery_duration.get_sample_count()
    }

    /// Replaces the producer with one made of `configs` (renewed credentials), gracefully
    /// (`producers.rs`).
    pub fn renew(&self, configs: Configs) {
        self.inner.producers.renew(configs);
    }

    /// Waits up to `timeout` for every queued record to be acknowledged. Blocks.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.producers.current().producer.flush(timeout)
    }
}

impl Deliver for Publisher {
    fn deliver(&self, record: &Record<'_>) -> Pending {
        let generation = self.inner.producers.current();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut kafka_record = FutureRecord::to(record.topic)
            .payload(&*record.value)
            .headers(headers);
        if let Some(key) = record.key {
            kafka_record = kafka_record.key(key);
        }
        if record.accepted_ms > 0 {
            // When the webhook was accepted, also when a spool forwards it later.
            kafka_record =
                kafka_record.timestamp(i64::try_from(record.accepted_ms).unwrap_or(i64::MAX));
        }
        let bytes = record.value.len()
            + record.key.map_or(0, str::len)
            + record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let started = Instant::now();
        match generation.producer.send_result(kafka_record) {
            Err((error, _)) => {
                let error = self.inner.classify(&generation, &error, Origin::Local);
                Box::pin(std::future::ready(Err(error)))
            }
            Ok(mut report) => {
                let inner = Arc::clone(&self.inner);
                Box::pin(async move {
                    match tokio::time::timeout(inner.delivery_timeout, &mut report).await {
                        Ok(Ok(Ok(delivery))) => {
                            inner
                                .metrics
                                .delivery_duration
                                .observe(started.elapsed().as_secs_f64());
                            inner.producers.delivered();
                            Ok(Delivered::Kafka {
                                partition: delivery.partition,
                                offset: delivery.offset,
                            })
                        }
                        Ok(Ok(Err((error, _)))) => {
                            Err(inner.classify(&generation, &error, Origin::Broker { bytes }))
                        }
                        Ok(Err(_canceled)) => Err(DeliveryError::Unavailable),
                        Err(_elapsed) => {
                            inner.watch_late_report(generation, report);
                            Err(DeliveryError::Timeout)
                        }
                    }
                })
            }
        }
    }
}

impl Inner {
    /// Maps a librdkafka error to what the sender is told, replacing the producer when
    /// the error means it cannot deliver any more.
    fn classify(
        self: &Arc<Self>,
        generation: &Generation,
        error: &KafkaError,
        origin: Origin,
    ) -> DeliveryError {
        let code = error.rdkafka_error_code();
        let broken = matches!(
            code,
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
            )
        ) || generation.producer.client().fatal_error().is_some();
        if broken {
            self.producers.replace_broken(generation, error);
        }
        match code {
            Some(RDKafkaErrorCode::QueueFull) => DeliveryError::QueueFull,
            Some(RDKafkaErrorCode::MessageTimedOut) => DeliveryError::Timeout,
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => {
                DeliveryError::Unavailable
            }
            _ if broken => DeliveryError::Unavailable,
            // Final only when it is this record that is too large: librdkafka's own limit,
            // or larger than any topic accepts. A broker refuses a whole batch at once, so
            // a record refused with one it shared is worth sending again: 503.
            Some(RDKafkaErrorCode::MessageSizeTooLarge) if self.too_large(origin) => {
                DeliveryError::TooLarge(error.to_string())
            }
            Some(
                RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTimestamp,
            ) => DeliveryError::Unacceptable(error.to_string()),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed,
            ) => DeliveryError::TopicRefused(error.to_string()),
            _ => DeliveryError::Refused(error.to_string()),
        }
    }

    /// Whether a record refused as too large is so by itself.
    fn too_large(&self, origin: Origin) -> bool {
        match origin {
            Origin::Local => true,
            Origin::Broker { bytes } => self
                .record_limit
                .get()
                .is_some_and(|limit| bytes as u64 > limit),
        }
    }

    /// After the bridge stopped waiting, see what librdkafka does with the record (it
    /// resolves it by `message.timeout.ms`), so a broken producer is still noticed.
    fn watch_late_report(
        self: &Arc<Self>,
        generation: Arc<Generation>,
        report: rdkafka::producer::DeliveryFuture,
    ) {
        let inner = Arc::clone(self);
        let bound = self.delivery_timeout + Duration::from_secs(10);
        tokio::spawn(async move {
            match tokio::time::timeout(bound, report).await {
                Ok(Ok(Ok(_))) => {
                    inner.metrics.late_deliveries.inc();
                    tracing::debug!("A record answered 503 reached Kafka after the timeout.");
                }
                Ok(Ok(Err((error, _)))) => {
                    inner.classify(&generation, &error, Origin::Broker { bytes: 0 });
                }
                Ok(Err(_)) | Err(_) => {}
            }
        });
    }
}
