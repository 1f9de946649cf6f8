//! `qminder_bridge_reconcile_*`: continuous reconciliation (`[reconcile]`), which asks
//! Qminder's API what happened and fills what no webhook brought.

use prometheus::{Gauge, IntCounter, IntCounterVec};

use super::Declare;

/// The `result`s of `reconcile_runs_total`.
pub const RUN_RESULTS: [&str; 3] = ["completed", "skipped", "failed"];

/// The counters of the reconciler (all zero when it is off).
#[derive(Debug, Clone)]
pub struct ReconcileMetrics {
    /// Transitions Qminder reports that no webhook brought, by event type.
    pub missing: IntCounterVec,
    /// Runs, by result.
    pub runs: IntCounterVec,
    /// How long the last run took.
    pub last_duration: Gauge,
    /// When the last run that completed ended (Unix seconds).
    pub last_success: Gauge,
    pub api_requests: IntCounter,
    pub rate_limited: IntCounter,
}

impl ReconcileMetrics {
    /// Every series at 0 from the start, for the alerts' `increase()`.
    pub(super) fn precreate(&self, rebuildable_types: &[&str]) {
        for event_type in rebuildable_types {
            self.missing.with_label_values(&[event_type]);
        }
        for result in RUN_RESULTS {
            self.runs.with_label_values(&[result]);
        }
    }

    pub(super) fn new(d: &Declare) -> Self {
        Self {
            missing: d.counter_vec("reconcile_missing_total",
                "Transitions Qminder's API reports that no webhook brought to Kafka, found (and published, marked qminderorigin=backfill) by the reconciler: webhooks are being lost upstream.",
                &["event_type"],
            ),
            runs: d.counter_vec("reconcile_runs_total",
                "Reconciliation runs, by result: completed, skipped (another replica held the lease, or a spool still held events of the window), failed.",
                &["result"],
            ),
            last_duration: d.float_gauge("reconcile_last_duration_seconds",
                "How long the last reconciliation run took.",
            ),
            last_success: d.float_gauge("reconcile_last_success_timestamp_seconds",
                "When the last completed reconciliation run ended (Unix seconds; 0 before the first).",
            ),
            api_requests: d.counter("reconcile_api_requests_total",
                "Requests the reconciler made to Qminder's API, retries included.",
            ),
            rate_limited: d.counter("reconcile_api_rate_limited_total",
                "Answers of Qminder's API to the reconciler that were 429 (waited out, then retried).",
            ),
        }
    }
}
