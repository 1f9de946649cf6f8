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
//! The replacement is built on a thread of its own, never under a lock the HTTP workers
//! take (they keep answering from the broken producer meanwhile, at once), and a producer
//! that breaks again at once is replaced with exponential back-off ([`FIRST_BACKOFF`],
//! doubling up to [`MAX_BACKOFF`], back to the first after an acknowledged record): a
//! missing ACL must not turn every request into handshakes with every broker.
//! The old producer is flushed off-thread before it is dropped, because dropping a
//! producer purges what it has not sent. Knows records and topics, never HTTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

/// The wait before the second replacement of a producer that keeps breaking.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two replacements.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When the next replacement may be built; one at a time.
#[derive(Debug, Default)]
struct Restarts {
    building: bool,
    not_before: Option<Instant>,
}

struct Inner {
    config: ClientConfig,
    /// Where every generation's statistics go.
    stats: Option<Arc<StatsSink>>,
    current: RwLock<Arc<Generation>>,
    delivery_timeout: Duration,
    metrics: Metrics,
    restarts: Mutex<Restarts>,
    /// The wait after the next replacement, in ms: doubles with each, back to
    /// [`FIRST_BACKOFF`] once a record is acknowledged.
    backoff_ms: AtomicU64,
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
                restarts: Mutex::default(),
                backoff_ms: AtomicU64::new(millis(FIRST_BACKOFF)),
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

    /// How long a record may wait for Kafka's acknowledgement (`delivery_timeout_ms`).
    pub fn delivery_timeout(&self) -> Duration {
        self.inner.delivery_timeout
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
                            inner.delivered();
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
    fn classify(self: &Arc<Self>, generation: &Generation, error: &KafkaError) -> DeliveryError {
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

    /// A record was acknowledged: the producer works, so the back-off starts over.
    fn delivered(&self) {
        if self.backoff_ms.load(Ordering::Relaxed) != millis(FIRST_BACKOFF) {
            self.backoff_ms
                .store(millis(FIRST_BACKOFF), Ordering::Relaxed);
        }
    }

    /// Has `broken` replaced by a new producer, built on a thread of its own, unless that
    /// is done or under way already, or the back-off says not yet.
    fn replace(self: &Arc<Self>, broken: &Generation, why: &KafkaError) {
        if self.current().number != broken.number {
            return;
        }
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if restarts.building || restarts.not_before.is_some_and(|t| now < t) {
            return;
        }
        restarts.building = true;
        drop(restarts);
        let inner = Arc::clone(self);
        let (number, why) = (broken.number, why.to_string());
        std::thread::spawn(move || inner.build_replacement(number, &why));
    }

    /// Builds a producer to replace generation `broken`, swaps it in under the lock only
    /// for the swap, then flushes the old one and sets when the next may be built.
    fn build_replacement(&self, broken: u64, why: &str) {
        let context = BridgeContext::with_stats(self.stats.clone());
        match self.config.create_with_context(context) {
            Ok(producer) => {
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                let old = std::mem::replace(
                    &mut *current,
                    Arc::new(Generation {
                        number: broken + 1,
                        producer,
                    }),
                );
                drop(current);
                self.metrics.producer_restarts.inc();
                tracing::warn!(
                    error = %why,
                    generation = broken + 1,
                    "Replaced the Kafka producer, which could no longer deliver."
                );
                self.scheduled_next();
                // Flushing blocks; records still queued in the old producer get their chance.
                let _ = old.producer.flush(self.delivery_timeout);
            }
            Err(error) => {
                tracing::error!(%error, "Could not create a new Kafka producer; keeping the broken one.");
                self.scheduled_next();
            }
        }
    }

    /// Ends a replacement: the next may be built after the back-off, which doubles.
    fn scheduled_next(&self) {
        let backoff = self.backoff_ms.load(Ordering::Relaxed);
        self.backoff_ms
            .store((backoff * 2).min(millis(MAX_BACKOFF)), Ordering::Relaxed);
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        restarts.building = false;
        restarts.not_before = Some(Instant::now() + Duration::from_millis(backoff));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
