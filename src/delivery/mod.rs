//! The delivery seam: what the ingress needs from whatever takes a record off its hands.
//!
//! [`Deliver`] hands one encoded record over and returns a bounded wait for the outcome:
//! [`Delivered`] (acknowledged by Kafka, or durable in the spool) or a [`DeliveryError`].
//! Two implementations: [`kafka::Publisher`] (rdkafka: produce and await the ack) and
//! [`spool::Spool`] (fsync to a local log, forward in the background). Knows records, never
//! HTTP; nothing outside [`kafka`] names rdkafka, except `startup` which wires it.
//!
//! Each failure has two names, fixed here in one table ([`FAILURES`]): the `reason` label
//! of the metrics (`events_failed_total`, `spool_forward_failures_total`) and the `error`
//! code of the 503 answer body. They differ for compatibility (dashboards and alerts read
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

/// Why a record is not known to be in Kafka. Every variant is answered 503 + Retry-After.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("Kafka did not acknowledge the record within the delivery timeout")]
    Timeout,
    #[error("the producer's queue is full")]
    QueueFull,
    #[error("Kafka refused the record: {0}")]
    Refused(String),
    /// Kafka refuses this record itself (too large, invalid): sending it again cannot help.
    #[error("Kafka refuses this record itself: {0}")]
    Unacceptable(String),
    #[error("the producer was replaced or is stopping")]
    Unavailable,
    #[error("the spool is full (spool.max_bytes)")]
    SpoolFull,
    #[error("the spool cannot be written: {0}")]
    SpoolUnavailable(String),
}

/// The two names of one kind of delivery failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The metric `reason` label.
    pub reason: &'static str,
    /// The `error` code of the 503 answer.
    pub code: &'static str,
}

const TIMEOUT: Failure = Failure {
    reason: "timeout",
    code: "kafka_timeout",
};
const QUEUE_FULL: Failure = Failure {
    reason: "queue_full",
    code: "kafka_unavailable",
};
const REFUSED: Failure = Failure {
    reason: "refused",
    code: "kafka_unavailable",
};
const UNAVAILABLE: Failure = Failure {
    reason: "unavailable",
    code: "kafka_unavailable",
};
const SPOOL_FULL: Failure = Failure {
    reason: "spool_full",
    code: "spool_full",
};
const SPOOL_ERROR: Failure = Failure {
    reason: "spool_error",
    code: "spool_unavailable",
};

/// Every delivery failure, reason → answer code: the one table both names come from.
pub const FAILURES: &[Failure] = &[
    TIMEOUT,
    QUEUE_FULL,
    REFUSED,
    UNAVAILABLE,
    SPOOL_FULL,
    SPOOL_ERROR,
];

impl DeliveryError {
    /// Both names of this failure; one row of [`FAILURES`].
    pub fn failure(&self) -> Failure {
        match self {
            Self::Timeout => TIMEOUT,
            Self::QueueFull => QUEUE_FULL,
            Self::Refused(_) | Self::Unacceptable(_) => REFUSED,
            Self::Unavailable => UNAVAILABLE,
            Self::SpoolFull => SPOOL_FULL,
            Self::SpoolUnavailable(_) => SPOOL_ERROR,
        }
    }

    /// The `reason` label of `events_failed_total` and `spool_forward_failures_total`.
    pub fn reason(&self) -> &'static str {
        self.failure().reason
    }

    /// Every metric reason, in table order, for pre-creating series.
    pub fn reasons() -> Vec<&'static str> {
        FAILURES.iter().map(|f| f.reason).collect()
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
    fn every_variant_maps_to_a_row_of_the_table_and_every_row_is_used() {
        let variants = [
            DeliveryError::Timeout,
            DeliveryError::QueueFull,
            DeliveryError::Refused(String::new()),
            DeliveryError::Unacceptable(String::new()),
            DeliveryError::Unavailable,
            DeliveryError::SpoolFull,
            DeliveryError::SpoolUnavailable(String::new()),
        ];
        let used: Vec<Failure> = variants.iter().map(DeliveryError::failure).collect();
        for failure in &used {
            assert!(FAILURES.contains(failure), "{failure:?} is not in FAILURES");
        }
        for row in FAILURES {
            assert!(used.contains(row), "{row:?} is never used");
        }
        let mut reasons = DeliveryError::reasons();
        reasons.dedup();
        assert_eq!(reasons.len(), FAILURES.len(), "reasons must be unique");
    }
}
