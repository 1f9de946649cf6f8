//! How librdkafka's own logs and errors reach `tracing`.
//!
//! librdkafka reports broker trouble (connection refused, all brokers down) through its
//! error callback, repeatedly while it lasts. Those are warnings: the bridge keeps
//! answering honestly (503) and recovers by itself. Only a fatal error, after which the
//! producer is replaced, is logged as an error.

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The context of every Kafka client the bridge creates.
#[derive(Debug, Clone, Copy, Default)]
pub struct BridgeContext;

impl ClientContext for BridgeContext {
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
