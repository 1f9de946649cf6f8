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
//! The old producer is flushed off-thread before it is dropped, because dropping a
//! producer purges what it has not sent. Knows records and topics, never HTTP.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::context::BridgeContext;
use super::stats::StatsSink;
use crate::delivery::{Deliver, Delivered, DeliveryError, Pending};
use crate::metrics::Metrics;
use crate::record::Record;

struct Generation {
    number: u64,
    producer: FutureProducer<BridgeContext>,
}

struct Inner {
    config: ClientConfig,
    /// Where every generation's statistics go.
    stats: Option<Arc<StatsSink>>,
    current: RwLock<Arc<Generation>>,
    delivery_timeout: Duration,
    metrics: Metrics,
}

/// The Kafka producer, replaced when it breaks. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("generation", &self.inner.current().number)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Creates the producer. Fails only on configuration librdkafka refuses; an unreachable
    /// broker is not an error (librdkafka connects in the background). Statistics, when
    /// `statistics.interval.ms` asks for them, go to `stats`.
    pub fn new(
        config: ClientConfig,
        delivery_timeout: Duration,
        metrics: Metrics,
        stats: Option<Arc<StatsSink>>,
    ) -> Result<Self, KafkaError> {
        let producer = config.create_with_context(BridgeContext::with_stats(stats.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                stats,
                current: RwLock::new(Arc::new(Generation {
                    number: 0,
                    producer,
                })),
                delivery_timeout,
                metrics,
            }),
        })
    }

    /// Asks the broker for metadata, as the readiness check. Blocks up to `timeout`.
    pub fn probe(&self, timeout: Duration) -> Result<(), KafkaError> {
        let generation = self.inner.current();
        generation
            .producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
    }

    /// Records Kafka has acknowledged so far (the delivery histogram's count: nothing is
    /// added to the hot path for it).
    pub fn acknowledged(&self) -> u64 {
        self.inner.metrics.delivery_duration.get_sample_count()
    }

    /// Waits up to `timeout` for every queued record to be acknowledged. Blocks.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.current().producer.flush(timeout)
    }
}

impl Deliver for Publisher {
    fn deliver(&self, record: &Record<'_>) -> Pending {
        let generation = self.inner.current();
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
        let started = Instant::now();
        match generation.producer.send_result(kafka_record) {
            Err((error, _)) => {
                let error = self.inner.classify(&generation, &error);
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
                            Ok(Delivered::Kafka {
                                partition: delivery.partition,
                                offset: delivery.offset,
                            })
                        }
                        Ok(Ok(Err((error, _)))) => Err(inner.classify(&generation, &error)),
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
    fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Maps a librdkafka error to what the sender is told, replacing the producer when
    /// the error means it cannot deliver any more.
    fn classify(&self, generation: &Generation, error: &KafkaError) -> DeliveryError {
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
            self.replace(generation, error);
        }
        match code {
            Some(RDKafkaErrorCode::QueueFull) => DeliveryError::QueueFull,
            Some(RDKafkaErrorCode::MessageTimedOut) => DeliveryError::Timeout,
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => {
                DeliveryError::Unavailable
            }
            _ if broken => DeliveryError::Unavailable,
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                DeliveryError::TooLarge(error.to_string())
            }
            Some(
                RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTimestamp,
            ) => DeliveryError::Unacceptable(error.to_string()),
            _ => DeliveryError::Refused(error.to_string()),
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
                    inner.classify(&generation, &error);
                }
                Ok(Err(_)) | Err(_) => {}
            }
        });
    }

    /// Replaces `broken` by a new producer, unless that was already done.
    fn replace(&self, broken: &Generation, why: &KafkaError) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.number != broken.number {
            return;
        }
        let context = BridgeContext::with_stats(self.stats.clone());
        let producer = match self.config.create_with_context(context) {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(%error, "Could not create a new Kafka producer; keeping the broken one.");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *current,
            Arc::new(Generation {
                number: broken.number + 1,
                producer,
            }),
        );
        drop(current);
        self.metrics.producer_restarts.inc();
        tracing::warn!(
            error = %why,
            generation = old.number + 1,
            "Replaced the Kafka producer, which could no longer deliver."
        );
        // Flushing blocks; records still queued in the old producer get their chance.
        let timeout = self.delivery_timeout;
        std::thread::spawn(move || {
            let _ = old.producer.flush(timeout);
        });
    }
}
