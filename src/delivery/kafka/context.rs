//! How librdkafka's own logs and errors reach `tracing`.
//!
//! librdkafka reports broker trouble (connection refused, all brokers down) through its
//! error callback, repeatedly while it lasts. Those are warnings: the bridge keeps
//! answering honestly (503) and recovers by itself. Only a fatal error, after which the
//! producer is replaced, is logged as an error. A producer's context also takes
//! librdkafka's statistics to the metrics (`stats.rs`), on rdkafka's poll thread.

use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::Statistics;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::stats::{StatsSink, StatsState};

/// The context of every Kafka client the bridge creates; one per client instance.
#[derive(Debug, Default)]
pub struct BridgeContext {
    /// Where a producer's statistics go, with that instance's previous totals.
    stats: Option<(Arc<StatsSink>, StatsState)>,
}

impl BridgeContext {
    /// A context whose statistics (if librdkafka is asked for them) go to `sink`.
    pub fn with_stats(sink: Option<Arc<StatsSink>>) -> Self {
        Self {
            stats: sink.map(|sink| (sink, StatsState::default())),
        }
    }
}

impl ClientContext for BridgeContext {
    fn stats(&self, statistics: Statistics) {
        if let Some((sink, state)) = &self.stats {
            sink.record(&statistics, state);
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(%error, reason, "Kafka client hit a fatal error.");
        } else {
            tracing::warn!(%error, reason, "Kafka client reported an error.");
        }
    }
}
