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
use crate::delivery::Deliver;
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
