//! The topics the configuration needs: listing them, and creating the missing ones.
//!
//! Looks first (a metadata request, which every client may make) and asks for CreateTopics
//! only for the topics the broker does not have, so a bridge whose ACL allows writing to
//! its topics but not creating them starts all the same. Topics it creates get
//! `min.insync.replicas = min(2, replication factor)`: with `acks=all`, a write is then on
//! two replicas before it is acknowledged, where the broker's default (1) would let one
//! disk lose an acknowledged event. A topic that appears meanwhile is fine. Uses
//! librdkafka's Admin API, which tansu and Apache Kafka both serve. Used at start-up when `kafka.create_topics` is on
//! (retried by the broker probe, `probe.rs`, until the broker answers) and by `qminder-bridge topics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::context::BridgeContext;
use crate::config::Passthrough;
use crate::delivery::RecordLimit;

/// An admin client's properties, which a reload may renew (new credentials): each look
/// makes its client from the current ones.
pub type SharedConfig = Arc<arc_swap::ArcSwap<ClientConfig>>;

/// Topics to create before the bridge calls itself ready (`kafka.create_topics`).
#[derive(Debug, Clone)]
pub struct TopicSetup {
    pub admin: SharedConfig,
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
            &self.admin.load_full(),
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

/// The look at the routed topics once the broker answers: a warning for each whose
/// durability is thin, and the record limit the ingress refuses larger bodies by (left
/// unknown when the producer compresses: a larger body may still fit).
#[derive(Debug)]
pub struct TopicCheck {
    pub admin: SharedConfig,
    pub topics: Vec<String>,
    pub compressed: bool,
    pub limit: Arc<RecordLimit>,
    /// `qminder_bridge_kafka_max_record_bytes`: the limit, 0 while unknown.
    pub gauge: IntGauge,
    /// `qminder_bridge_kafka_topics_missing`: routed topics the brokers do not have.
    pub missing: IntGauge,
    /// The warnings already logged, so that a look again says only what changed.
    pub said: Vec<String>,
    /// Looked once already.
    pub looked: bool,
}

impl TopicCheck {
    /// Looks at the topics; true once the broker answered. Run again from time to time
    /// (`probe.rs`): an operator may raise a topic's limit or its `min.insync.replicas`.
    pub async fn run(&mut self, timeout: Duration) -> bool {
        let facts = match inspect(&self.admin.load_full(), &self.topics, timeout).await {
            Ok(facts) => facts,
            Err(error) => {
                tracing::debug!(%error, "Could not look at the topics yet; will retry.");
                return false;
            }
        };
        for warning in facts.iter().filter_map(TopicFacts::durability_warning) {
            tracing::warn!("{warning}");
        }
        let missing: Vec<&str> = facts
            .iter()
            .filter(|f| f.partitions.is_none())
            .map(|f| f.name.as_str())
            .collect();
        self.missing
            .set(i64::try_from(missing.len()).unwrap_or(i64::MAX));
        if !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "Routed topics the broker does not have: events for them are not delivered (spool mode holds them aside until the topics exist)."
            );
        }
        let limit = if self.compressed {
            None
        } else {
            record_limit(&facts)
        };
        self.limit.set(limit);
        self.gauge
            .set(limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)));
        tracing::info!(
            max_record_bytes = ?limit,
            "Looked at the topics; a body larger than every topic's max.message.bytes is refused before reading."
        );
        true
    }
}

/// What became of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    Existed,
}

/// `min.insync.replicas` for a topic the bridge creates with `replication_factor`.
pub fn min_insync_replicas(replication_factor: i32) -> i32 {
    replication_factor.clamp(1, 2)
}

/// A topic the broker's metadata lists without an error.
struct BrokerTopic {
    name: String,
    partitions: usize,
    /// The fewest replicas any of its partitions has.
    replication_factor: Option<usize>,
}

/// The topics the broker has. librdkafka's metadata request blocks its thread for up to
/// `timeout` (all of it while no broker answers), so it runs on Tokio's blocking pool:
/// the runtime it is awaited on goes on serving its other tasks meanwhile.
async fn broker_topics(
    admin: &Arc<AdminClient<BridgeContext>>,
    timeout: Duration,
) -> Result<Vec<BrokerTopic>, KafkaError> {
    let admin = Arc::clone(admin);
    let listed = tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(None, timeout)?;
        let topics = metadata.topics().iter().filter(|t| t.error().is_none());
        let topics = topics.map(|t| BrokerTopic {
            name: t.name().to_owned(),
            partitions: t.partitions().len(),
            replication_factor: t.partitions().iter().map(|p| p.replicas().len()).min(),
        });
        Ok(topics.collect())
    });
    listed
        .await
        .unwrap_or(Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)))
}

/// Creates each of `topics` that does not exist yet (looking first).
pub async fn ensure(
    config: &ClientConfig,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
    timeout: Duration,
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    let admin: Arc<AdminClient<BridgeContext>> =
        Arc::new(config.create_with_context(BridgeContext::default())?);
    let known: std::collections::HashSet<String> = broker_topics(&admin, timeout)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let mut outcomes: Vec<(String, TopicOutcome)> = topics
        .iter()
        .filter(|t| known.contains(*t))
        .map(|t| (t.clone(), TopicOutcome::Existed))
        .collect();
    let min_insync = min_insync_replicas(replication_factor).to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|t| !known.contains(*t))
        .map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor))
                .set("min.insync.replicas", &min_insync)
        })
        .collect();
    if new_topics.is_empty() {
        return Ok(outcomes);
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin.create_topics(&new_topics, &options).await?;
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

/// What the broker says of one topic: from metadata, whether it exists and how it is
/// replicated; from DescribeConfigs, the two settings the bridge relies on. `None` where
/// the broker did not say (tansu reports only what was set at creation; librdkafka's mock
/// cluster answers no DescribeConfigs at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFacts {
    pub name: String,
    /// `None`: the broker does not have it.
    pub partitions: Option<usize>,
    pub replication_factor: Option<usize>,
    pub min_insync_replicas: Option<i64>,
    pub max_message_bytes: Option<u64>,
}

impl TopicFacts {
    /// Why an acknowledged write could be lost with one disk, if it could: three replicas
    /// or more, but `acks=all` waits for fewer than two.
    pub fn durability_warning(&self) -> Option<String> {
        let (Some(rf), Some(min)) = (self.replication_factor, self.min_insync_replicas) else {
            return None;
        };
        (rf >= 3 && min < 2).then(|| {
            format!(
                "topic {} has {rf} replicas but min.insync.replicas = {min}: with acks=all a \
                 write is acknowledged once on one replica, and one lost disk can lose an \
                 event Qminder was told was delivered; set min.insync.replicas = 2",
                self.name
            )
        })
    }
}

/// The largest record any of `facts` accepts, if the broker said for each: a body larger
/// than that fits no routed topic, whichever its event type turns out to be.
pub fn record_limit(facts: &[TopicFacts]) -> Option<u64> {
    facts
        .iter()
        .map(|f| f.max_message_bytes)
        .collect::<Option<Vec<u64>>>()?
        .into_iter()
        .max()
}

/// What the broker says of each of `topics`: metadata (a failure is an error), then
/// DescribeConfigs for those it has (a failure leaves their settings unknown).
pub async fn inspect(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<TopicFacts>, KafkaError> {
    let admin: Arc<AdminClient<BridgeContext>> =
        Arc::new(config.create_with_context(BridgeContext::default())?);
    let known = broker_topics(&admin, timeout).await?;
    let mut facts: Vec<TopicFacts> = topics
        .iter()
        .map(|name| {
            let topic = known.iter().find(|t| &t.name == name);
            TopicFacts {
                name: name.clone(),
                partitions: topic.map(|t| t.partitions),
                replication_factor: topic.and_then(|t| t.replication_factor),
                min_insync_replicas: None,
                max_message_bytes: None,
            }
        })
        .collect();
    let present: Vec<ResourceSpecifier<'_>> = facts
        .iter()
        .filter(|f| f.partitions.is_some())
        .map(|f| ResourceSpecifier::Topic(&f.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = match admin.describe_configs(&present, &options).await {
        Ok(described) => described,
        Err(error) => {
            tracing::debug!(%error, "The broker did not describe the topics' configurations.");
            Vec::new()
        }
    };
    for resource in described.into_iter().flatten() {
        let OwnedResourceSpecifier::Topic(name) = &resource.specifier else {
            continue;
        };
        let value = |key: &str| resource.get(key).and_then(|e| e.value.clone());
        if let Some(f) = facts.iter_mut().find(|f| &f.name == name) {
            f.min_insync_replicas = value("min.insync.replicas").and_then(|v| v.parse().ok());
            f.max_message_bytes = value("max.message.bytes").and_then(|v| v.parse().ok());
        }
    }
    Ok(facts)
}

#[cfg(test)]
#[path = "topics_tests.rs"]
mod tests;
