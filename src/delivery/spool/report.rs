//! In spool mode, each replica says how far its spool is drained: every few seconds a
//! record on the coordination topic (`<topic_prefix>.coordination`, the one `backfill`
//! takes its lease on), keyed by the replica's name, with
//! `{"kind":"spool_drained_through","replica","drained_through_ms","at_ms"}`. A backfill
//! does not close a window until every replica that reports says it is drained past the
//! window's end: an event still spooled is late, not missing (`watermark.rs`).
//! Best effort and off the data path: a report that fails is retried at the next tick.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::{Spool, frame};
use crate::config::{KafkaSettings, Settings};
use crate::delivery::Deliver;
use crate::delivery::kafka::{ensure_lease_topic, inspect_topics};
use crate::record::Record;
use crate::shutdown::Stopping;

/// How often a replica reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// The `kind` of a report.
pub const KIND: &str = "spool_drained_through";

/// The coordination topic of a topic prefix.
pub fn coordination_topic(topic_prefix: &str) -> String {
    format!("{topic_prefix}.coordination")
}

/// This replica's name: `$HOSTNAME` (a Kubernetes pod's name), else `pid-<pid>`.
pub fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// What reporting needs.
pub struct Reporter {
    pub spool: Spool,
    pub kafka: Arc<dyn Deliver>,
    pub topic: String,
    pub replica: String,
    /// The longest a request may take from acceptance to the spool's commit.
    pub slack_ms: u64,
    pub stopping: Arc<Stopping>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("topic", &self.topic)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Reports every [`REPORT_INTERVAL`] until the bridge stops.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stopping.wait() => return,
            }
            let value = self.report();
            let record = Record {
                topic: &self.topic,
                key: Some(&self.replica),
                value: Cow::Owned(value.into_bytes()),
                headers: vec![("content-type", Cow::Borrowed("application/json"))],
                label: KIND,
                id: KIND,
                accepted_ms: frame::now_ms(),
            };
            if let Err(error) = self.kafka.deliver(&record).await {
                tracing::debug!(%error, topic = %self.topic, "Could not report how far the spool is drained; will retry.");
            }
        }
    }

    fn report(&self) -> String {
        serde_json::json!({
            "kind": KIND,
            "replica": self.replica,
            "drained_through_ms": self.spool.drained_through_ms(self.slack_ms),
            "at_ms": frame::now_ms(),
        })
        .to_string()
    }
}

/// Spool mode: tells `backfill` how far this replica's spool is drained (`report.rs`), on
/// the coordination topic, which is created first when the bridge creates its topics.
pub fn spawn(settings: &Settings, spool: Spool, kafka: Arc<dyn Deliver>, stopping: &Arc<Stopping>) {
    let topic = coordination_topic(&settings.kafka.topic_prefix);
    let reporter = Reporter {
        spool,
        kafka,
        topic: topic.clone(),
        replica: replica_name(),
        slack_ms: settings.server.request_timeout_ms,
        stopping: Arc::clone(stopping),
    };
    let kafka_settings = settings.kafka.clone();
    tokio::spawn(async move {
        // Reports go only to a topic that exists: one that does not would cost a record
        // waiting out the delivery timeout every few seconds.
        // The admin client's metadata calls block: off the runtime's workers.
        let exists = |kafka: KafkaSettings, topic: String| async move {
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                runtime.block_on(coordination_topic_exists(&kafka, &topic))
            })
            .await
            .unwrap_or(false)
        };
        while !exists(kafka_settings.clone(), topic.clone()).await {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = reporter.stopping.wait() => return,
            }
        }
        reporter.run().await;
    });
}

/// Whether the coordination topic exists (made first when the bridge makes its topics).
async fn coordination_topic_exists(kafka: &KafkaSettings, topic: &str) -> bool {
    let timeout = Duration::from_secs(10);
    if kafka.create_topics
        && let Err(error) = ensure_lease_topic(kafka, topic, timeout).await
    {
        tracing::warn!(%error, %topic, "Cannot create the coordination topic; backfill will create it.");
    }
    let names = [topic.to_owned()];
    let found = inspect_topics(kafka, &names, timeout).await;
    let exists = found.is_ok_and(|facts| facts.iter().all(|f| f.partitions.is_some()));
    if !exists {
        tracing::info!(%topic, "The coordination topic does not exist yet: this replica will report how far its spool is drained once it does (backfill makes it).");
    }
    exists
}
