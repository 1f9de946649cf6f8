//! `qminder-bridge backfill`: asks Qminder which ticket transitions happened in a window,
//! finds which of them are not in Kafka, and publishes only those, marked as rebuilt.
//!
//! Steps: search the tickets created from `--since` minus the look-back to `--until` in
//! each location ([`crate::operator::qminder_api`]); keep the transitions that belong to
//! the window ([`rebuild::wanted`]); read the bridge's topics back from the look-back's
//! start ([`present`]); publish what is missing, with the bridge's producer settings, and
//! say what was found, present and published per type. Resumable: a run that stopped
//! halfway finds what it published in Kafka the next time. Exit codes: 0 done, 1 some
//! records not acknowledged (run it again), 2 nothing published (configuration, API or
//! Kafka error: the message says which).

mod fill;
mod lease;
mod present;
mod progress;
mod rebuild;
mod report;
mod spools;

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;
use crate::operator::config_arg::{self, ConfigArg};
pub use fill::{Failure, Fill, fill};
pub use rebuild::Span;
pub use report::Report;

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Start of the window: RFC 3339 (2026-12-01T09:00:00Z) or Unix seconds.
    #[arg(long)]
    pub since: String,
    /// End of the window, as --since. Default: now.
    #[arg(long)]
    pub until: Option<String>,
    /// The endpoint (its path) whose account to search; needed when several endpoints
    /// have an [endpoints.qminder] section.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// How long before --since a ticket may have been created and still have a transition
    /// in the window (called, served, cancelled).
    #[arg(long, default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(0..=crate::config::MAX_LOOKBACK_HOURS))]
    pub lookback_hours: u64,
    /// Report what is missing; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Longest time for reading the topics back.
    #[arg(long, default_value_t = 600)]
    pub read_timeout_s: u64,
    /// Longest wait for the replicas' spools to forward what they hold of the window.
    #[arg(long, default_value_t = 300)]
    pub spool_wait_s: u64,
    /// Tickets asked for per search (Qminder answers at most 10,000); smaller pages only
    /// mean more requests. For tests and troubleshooting.
    #[arg(long, default_value_t = crate::operator::qminder_api::PAGE_LIMIT as u64, hide = true,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_limit: u64,
    /// Longest wait for the lease while another backfill (or the reconciler) runs.
    #[arg(long, default_value_t = 300)]
    pub lease_wait_s: u64,
}

/// Runs `backfill`.
pub fn run(args: &BackfillArgs) -> ExitCode {
    let settings = match config_arg::load(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    crate::telemetry::init_for_tools();
    match plan_and_publish(&settings, args) {
        Ok(report) => {
            print!("{report}");
            if report.unacknowledged() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(failure) => {
            eprintln!("qminder-bridge: backfill: {failure}; nothing was published");
            ExitCode::from(2)
        }
    }
}

fn plan_and_publish(settings: &Settings, args: &BackfillArgs) -> Result<Report, Failure> {
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let span = Span {
        since_ms: parse_time(&args.since).ok_or("--since is not RFC 3339 or Unix seconds")?,
        until_ms: match &args.until {
            Some(t) => parse_time(t).ok_or("--until is not RFC 3339 or Unix seconds")?,
            None => now_ms,
        },
    };
    if span.until_ms < span.since_ms {
        return Err("--until is before --since".into());
    }
    let counters = crate::traces::SpanCounters::unexported();
    let traces = crate::traces::Traces::start_counting(&settings.telemetry, counters)
        .map_err(|e| e.to_string())?;
    let filled = fill(
        settings,
        &Fill {
            endpoint: args.endpoint.clone(),
            span,
            lookback_ms: (args.lookback_hours as i64) * 3_600_000,
            read_timeout: Duration::from_secs(args.read_timeout_s),
            lease_wait: Duration::from_secs(args.lease_wait_s),
            spool_wait: Duration::from_secs(args.spool_wait_s),
            dry_run: args.dry_run,
            page_limit: usize::try_from(args.page_limit).unwrap_or(1),
            progress: true,
            traces: traces.clone(),
            run_name: "backfill",
        },
    );
    // The run's span, exported before the command ends.
    traces.shutdown(Duration::from_secs(5));
    filled
}

/// RFC 3339, or Unix seconds.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return secs.checked_mul(1000);
    }
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}
