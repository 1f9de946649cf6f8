//! The delivery seam: what the ingress needs from whatever takes a record off its hands.
//!
//! [`Deliver`] hands one encoded record over and returns a bounded wait for the outcome:
//! [`Delivered`] (acknowledged by Kafka, or durable in the spool) or a [`DeliveryError`].
//! Two implementations: [`kafka::Publisher`] (rdkafka: produce and await the ack) and
//! [`spool::Spool`] (fsync to a local log, forward in the background). Knows records, never
//! HTTP; nothing outside [`kafka`] names rdkafka, except `startup` which wires it.
//!
//! Each failure has two names and an answer, fixed here in one table
//! ([`DeliveryError::failure`]): the `reason` label of the metrics (`events_failed_total`,
//! `spool_forward_failures_total`), the `error` code and status of the answer, and whether
//! retrying can help. They differ for compatibility (dashboards and alerts read
//! the reasons, senders the codes); `docs/` and the README list both.

use std::future::Future;
use std::pin::Pin;

use crate::record::Record;

pub mod kafka;
pub mod spool;

/// What became of a record handed to a [`Deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Kafka acknowledged it here.
    Kafka { partition: i32, offset: i64 },
    /// It is durable in the local spool, to be forwarded to Kafka in the background.
    Spooled { sequence: u64 },
}

/// Why a record is not known to be in Kafka. Most are answered 503 + Retry-After; a record
/// Kafka will never accept gets a final answer (413 or 422), since sending it again cannot
/// help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("Kafka did not acknowledge the record within the delivery timeout")]
    Timeout,
    #[error("the producer's queue is full")]
    QueueFull,
    #[error("Kafka refused the record: {0}")]
    Refused(String),
    /// Kafka refuses the record's topic (missing, not writable, unknown partition): a
    /// cause confined to the topic, so the spool sets the topic aside rather than wait.
    #[error("Kafka refuses the record's topic: {0}")]
    TopicRefused(String),
    /// Larger than Kafka accepts (librdkafka's `message.max.bytes`, or the topic's
    /// `max.message.bytes`): final.
    #[error("the record is larger than Kafka accepts: {0}")]
    TooLarge(String),
    /// Kafka refuses this record itself (invalid record or timestamp): final.
    #[error("Kafka refuses this record itself: {0}")]
    Unacceptable(String),
    #[error("the producer was replaced or is stopping")]
    Unavailable,
    #[error("the spool is full (spool.max_bytes)")]
    SpoolFull,
    #[error("the spool cannot be written: {0}")]
    SpoolUnavailable(String),
    #[error("the spool did not confirm the write within spool.write_timeout_ms")]
    SpoolTimeout,
}

/// The names and answer of one kind of delivery failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The metric `reason` label.
    pub reason: &'static str,
    /// The `error` code of the answer.
    pub code: &'static str,
    /// The answer's HTTP status.
    pub status: u16,
    /// Whether sending it again can help (`Retry-After` is sent).
    pub retry: bool,
}

const fn failure(reason: &'static str, code: &'static str, status: u16, retry: bool) -> Failure {
    Failure {
        reason,
        code,
        status,
        retry,
    }
}

impl DeliveryError {
    /// One of each variant, in table order: what [`failures`](Self::failures) lists.
    pub const EXAMPLES: [Self; 10] = [
        Self::Timeout,
        Self::QueueFull,
        Self::Refused(String::new()),
        Self::TopicRefused(String::new()),
        Self::TooLarge(String::new()),
        Self::Unacceptable(String::new()),
        Self::Unavailable,
        Self::SpoolFull,
        Self::SpoolUnavailable(String::new()),
        Self::SpoolTimeout,
    ];

    /// This failure's row: its metric reason, its answer code and status, and whether
    /// retrying can help. The one table both names and the answer come from.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Timeout => failure("timeout", "kafka_timeout", 503, true),
            Self::QueueFull => failure("queue_full", "kafka_unavailable", 503, true),
            Self::Refused(_) => failure("refused", "kafka_unavailable", 503, true),
            Self::TopicRefused(_) => failure("topic_refused", "kafka_unavailable", 503, true),
            Self::TooLarge(_) => failure("too_large", "record_too_large", 413, false),
            Self::Unacceptable(_) => failure("unacceptable", "record_unacceptable", 422, false),
            Self::Unavailable => failure("unavailable", "kafka_unavailable", 503, true),
            Self::SpoolFull => failure("spool_full", "spool_full", 503, true),
            Self::SpoolUnavailable(_) => failure("spool_error", "spool_unavailable", 503, true),
            Self::SpoolTimeout => failure("spool_timeout", "spool_unavailable", 503, true),
        }
    }

    /// Every row, in table order.
    pub fn failures() -> Vec<Failure> {
        Self::EXAMPLES.iter().map(Self::failure).collect()
    }

    /// Whether Kafka will never take this record, however often it is sent.
    pub fn is_final(&self) -> bool {
        !self.failure().retry
    }

    /// Whether the cause is confined to the record's topic, whatever the other topics do.
    pub fn is_topic_confined(&self) -> bool {
        matches!(self, Self::TopicRefused(_))
    }

    /// The `reason` label of `events_failed_total` and `spool_forward_failures_total`.
    pub fn reason(&self) -> &'static str {
        self.failure().reason
    }

    /// Every metric reason, in table order, for pre-creating series.
    pub fn reasons() -> Vec<&'static str> {
        Self::EXAMPLES.iter().map(Self::reason).collect()
    }
}

/// The largest record any routed topic accepts, once the brokers have said
/// (`max.message.bytes`, learned at start-up by `kafka::TopicCheck`); unknown until then,
/// and for good when they do not say or the producer compresses. The ingress refuses a
/// body that declares more before reading it (413), as it could fit no topic.
#[derive(Debug, Default)]
pub struct RecordLimit(std::sync::atomic::AtomicU64);

impl RecordLimit {
    pub fn get(&self) -> Option<u64> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    pub fn set(&self, limit: Option<u64>) {
        self.0
            .store(limit.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }
}

/// A delivery in progress; owns nothing of the request.
pub type Pending = Pin<Box<dyn Future<Output = Result<Delivered, DeliveryError>> + Send>>;

/// What the ingress needs from a publisher: deliver one record.
pub trait Deliver: Send + Sync + 'static {
    /// Enqueues `record` (copying it) and returns the bounded wait for its outcome.
    fn deliver(&self, record: &Record<'_>) -> Pending;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_a_distinct_reason_and_only_final_ones_go_without_retry_after() {
        let mut reasons = DeliveryError::reasons();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(
            reasons.len(),
            DeliveryError::EXAMPLES.len(),
            "reasons must be unique"
        );
        for failure in DeliveryError::failures() {
            assert_eq!(failure.retry, failure.status == 503, "{failure:?}");
        }
    }
}
