//! Continuous reconciliation (`[reconcile]`): inside `serve`, on a thread of its own, 10 s
//! after start and then every `interval_s`, each replica tries to fill the window that ended `lag_s` ago, as `backfill`
//! does (`backfill/fill.rs`). Exactly one runs at a time: the one that gets the lease on
//! the coordination topic (others skip, counted as `skipped`); a manual backfill takes the
//! same lease. Each run covers two intervals, so a run skipped or failed leaves no gap as
//! long as the next one succeeds. What it finds missing is counted in
//! `qminder_bridge_reconcile_missing_total{event_type}`: webhooks lost upstream.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backfill::{Failure, Fill, Span, fill};
use crate::config::Settings;
use crate::config::reload::Latest;
use crate::metrics::{RUN_RESULTS, ReconcileMetrics};
use crate::shutdown::Stopping;
use crate::traces::Traces;

/// The longest a run waits for the lease before skipping.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// How long after start the first run begins: the bridge has made its topics by then.
const FIRST_RUN_AFTER: Duration = Duration::from_secs(10);
/// The longest a run reads Kafka back.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Starts the reconciler if `[reconcile]` is enabled in `settings`; it ends once `stopping`
/// is set. Each run takes its configuration from the returned [`Latest`], which the
/// reloader keeps up to date.
pub fn spawn(
    settings: &Settings,
    metrics: ReconcileMetrics,
    stopping: &Arc<Stopping>,
    traces: &Traces,
) -> (Latest, Option<JoinHandle<()>>) {
    let latest: Latest = Arc::new(arc_swap::ArcSwap::from_pointee(settings.clone()));
    if !settings.reconcile.enabled {
        return (latest, None);
    }
    let (shared, stopping, traces) = (Arc::clone(&latest), Arc::clone(stopping), traces.clone());
    let handle = std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || run(&shared, &metrics, &stopping, &traces))
        .map_err(|error| tracing::warn!(%error, "Cannot start the reconciler thread."))
        .ok();
    (latest, handle)
}

fn run(latest: &Latest, metrics: &ReconcileMetrics, stopping: &Stopping, traces: &Traces) {
    let r = &latest.load().reconcile.clone();
    let interval = Duration::from_secs(r.interval_s);
    let mut next_wait = FIRST_RUN_AFTER.min(interval);
    while wait(next_wait, stopping) {
        next_wait = interval;
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let until_ms = now_ms - (r.lag_s as i64) * 1000;
        let job = Fill {
            endpoint: r.endpoint.clone(),
            span: Span {
                since_ms: until_ms - 2 * (r.interval_s as i64) * 1000,
                until_ms,
            },
            lookback_ms: (r.lookback_hours as i64) * 3_600_000,
            read_timeout: READ_TIMEOUT,
            lease_wait: LEASE_WAIT.min(interval),
            spool_wait: Duration::ZERO,
            dry_run: false,
            page_limit: crate::operator::qminder_api::PAGE_LIMIT,
            progress: false,
            traces: traces.clone(),
            run_name: "reconcile",
        };
        let started = Instant::now();
        let result = fill(&latest.load_full(), &job);
        metrics.last_duration.set(started.elapsed().as_secs_f64());
        count(metrics, result);
    }
}

/// Counts one run's outcome and logs what needs logging.
fn count(metrics: &ReconcileMetrics, result: Result<super::backfill::Report, Failure>) {
    match result {
        Ok(report) => {
            metrics.runs.with_label_values(&[RUN_RESULTS[0]]).inc();
            let (requests, limited) = report.api_usage();
            metrics.api_requests.inc_by(requests);
            metrics.rate_limited.inc_by(limited);
            let mut total = 0;
            for (kind, missing) in report.missing() {
                metrics
                    .missing
                    .with_label_values(&[kind.event_type()])
                    .inc_by(missing);
                total += missing;
            }
            let done = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
            metrics.last_success.set(done);
            if total > 0 {
                tracing::warn!(
                    missing = total,
                    unacknowledged = report.unacknowledged(),
                    "Reconciliation found transitions that no webhook brought, and published them (marked qminderorigin=backfill)."
                );
            }
        }
        Err(Failure::Busy(why)) => {
            metrics.runs.with_label_values(&[RUN_RESULTS[1]]).inc();
            tracing::debug!(%why, "Reconciliation skipped.");
        }
        Err(Failure::Failed(why)) => {
            metrics.runs.with_label_values(&[RUN_RESULTS[2]]).inc();
            tracing::warn!(%why, "Reconciliation failed; the next run covers this window again.");
        }
    }
}

/// Sleeps `interval` unless the bridge stops first; false once it is stopping.
fn wait(interval: Duration, stopping: &Stopping) -> bool {
    let end = Instant::now() + interval;
    while Instant::now() < end {
        if stopping.is_set() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200).min(end - Instant::now()));
    }
    !stopping.is_set()
}
