//! The topics the configuration needs: listing them, and creating the missing ones.
//!
//! Uses librdkafka's Admin API (CreateTopics), which tansu and Apache Kafka both serve.
//! A topic that already exists is fine. Used at start-up when `kafka.create_topics` is on
//! (retried by the broker probe, `probe.rs`, until the broker answers) and by `qminder-bridge topics`.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::context::BridgeContext;
use crate::config::Passthrough;

/// Topics to create before the bridge calls itself ready (`kafka.create_topics`).
#[derive(Debug, Clone)]
pub struct TopicSetup {
    pub admin: ClientConfig,
    /// To redact credentials from librdkafka's errors before they are logged.
    pub passthrough: Passthrough,
    pub topics: Vec<String>,
    pub partitions: i32,
    pub replication_factor: i32,
}

impl TopicSetup {
    /// Creates the missing topics; true once all are in place (logged either way).
    pub async fn run(&self, timeout: Duration) -> bool {
        let outcome = ensure(
            &self.admin,
            &self.topics,
            self.partitions,
            self.replication_factor,
            timeout,
        )
        .await;
        match outcome {
            Ok(outcomes) => {
                let created = outcomes
                    .iter()
                    .filter(|(_, o)| *o == TopicOutcome::Created)
                    .count();
                tracing::info!(created, total = outcomes.len(), "Topics are in place.");
                true
            }
            Err(error) => {
                let error = self.passthrough.redact(&error.to_string());
                tracing::warn!(%error, "Could not create topics yet; will retry.");
                false
            }
        }
    }
}

/// What became of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    Existed,
}

/// Creates each of `topics` that does not exist yet.
pub async fn ensure(
    config: &ClientConfig,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
    timeout: Duration,
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    let admin: AdminClient<BridgeContext> = config.create_with_context(BridgeContext::default())?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(topic) => outcomes.push((topic, TopicOutcome::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((topic, TopicOutcome::Existed));
            }
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(outcomes)
}

/// The topics among `topics` that the broker knows, with their partition counts.
pub fn describe(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, Option<usize>)>, KafkaError> {
    let admin: AdminClient<BridgeContext> = config.create_with_context(BridgeContext::default())?;
    let metadata = admin.inner().fetch_metadata(None, timeout)?;
    Ok(topics
        .iter()
        .map(|name| {
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none())
                .map(|t| t.partitions().len());
            (name.clone(), partitions)
        })
        .collect())
}
