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

mod lease;
mod present;
mod rebuild;
mod report;
mod spools;

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;

use crate::config::{EndpointSettings, QminderSettings, Settings};
use crate::delivery::spool::report::coordination_topic;
use crate::delivery::{Deliver, kafka};
use crate::operator::cli::{self, ConfigArg};
use crate::operator::qminder_api::{self, Client, Kind, PAGE_LIMIT, Ticket, Window, tickets};
use crate::privacy::Privacy;
use lease::Lease;
use rebuild::{Encoder, Rebuilt, Span};
use report::Report;

/// Kafka records may carry their acceptance time a little before the transition's own
/// (clocks differ): the topics are read from this much before the look-back's start.
const READ_MARGIN_MS: i64 = 5 * 60 * 1000;
/// Records in flight to Kafka at once.
const IN_FLIGHT: usize = 256;

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
    #[arg(long, default_value_t = 24)]
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
    /// Longest wait for the lease while another backfill (or the reconciler) runs.
    #[arg(long, default_value_t = 300)]
    pub lease_wait_s: u64,
}

/// Runs `backfill`.
pub fn run(args: &BackfillArgs) -> ExitCode {
    let settings = match cli::load(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match plan_and_publish(&settings, args) {
        Ok(report) => {
            print!("{report}");
            if report.unacknowledged() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(message) => {
            eprintln!("qminder-bridge: backfill: {message}; nothing was published");
            ExitCode::from(2)
        }
    }
}

fn plan_and_publish(settings: &Settings, args: &BackfillArgs) -> Result<Report, String> {
    let (endpoint, qminder) = choose_endpoint(settings, args.endpoint.as_deref())?;
    if settings.kafka.is_embedded() {
        return Err("kafka.bootstrap_servers is \"embedded\": there is no Kafka to fill".into());
    }
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
    let lookback_ms = i64::try_from(args.lookback_hours.saturating_mul(3_600_000)).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let client = Client::new(qminder).map_err(|e| e.to_string())?;
    let found = runtime
        .block_on(search(&client, qminder, span, span.since_ms - lookback_ms))
        .map_err(|e| e.to_string())?;
    let mut report = Report::new(endpoint, span, found.len(), &client.usage);
    let router = settings.kafka.router();
    let topics: Vec<String> = Kind::ALL
        .iter()
        .map(|k| router.route(k.event_type()).topic.clone())
        .collect();
    let from_ms = span.since_ms - lookback_ms - READ_MARGIN_MS;
    let timeout = Duration::from_secs(args.read_timeout_s);
    // Held from before reading Kafka back until the last record is acknowledged, so that
    // two runs cannot both find the same gap and both fill it.
    let lease_topic = coordination_topic(&settings.kafka.topic_prefix);
    runtime.block_on(kafka::ensure_lease_topic(
        &settings.kafka,
        &lease_topic,
        timeout,
    ))?;
    let lease = Lease::acquire(
        settings,
        &lease_topic,
        Duration::from_secs(args.lease_wait_s),
    )?;
    let spool_wait = Duration::from_secs(args.spool_wait_s);
    spools::wait_until_drained(settings, &lease_topic, span.until_ms, spool_wait)?;
    let present = present::read(settings, &topics, from_ms, timeout)?;
    report.records_read = present.records;
    let privacy = Privacy::from_settings(&settings.privacy).map_err(|e| e.to_string())?;
    let encoder = Encoder {
        format: settings.kafka.record_format,
        router: &router,
        privacy: privacy.as_ref(),
        url: &endpoint.url,
        source: endpoint.source(),
    };
    let mut missing = Vec::new();
    for ticket in &found {
        for transition in rebuild::wanted(ticket, span) {
            let here = present.contains(&ticket.id, transition.kind);
            report.count(transition.kind, here);
            if !here {
                missing.push(encoder.encode(ticket, &transition));
            }
        }
    }
    if !args.dry_run && !missing.is_empty() {
        runtime.block_on(publish(settings, &missing, &lease, &mut report))?;
    }
    Ok(report)
}

/// The endpoint to fill: the one named, or the only one with `[endpoints.qminder]`.
fn choose_endpoint<'a>(
    settings: &'a Settings,
    path: Option<&str>,
) -> Result<(&'a EndpointSettings, &'a QminderSettings), String> {
    let with_api: Vec<_> = settings
        .endpoints
        .iter()
        .filter_map(|e| e.qminder.as_ref().map(|q| (e, q)))
        .filter(|(e, _)| path.is_none_or(|p| e.path == p))
        .collect();
    match (with_api.as_slice(), path) {
        ([one], _) => Ok(*one),
        ([], Some(p)) => Err(format!(
            "no endpoint {p:?} with an [endpoints.qminder] section"
        )),
        ([], None) => Err("no endpoint has an [endpoints.qminder] section (api_key, …)".into()),
        (_, _) => Err(
            "several endpoints have [endpoints.qminder]: choose one with --endpoint PATH".into(),
        ),
    }
}

/// Every ticket created from `from_ms` to the window's end, in every location searched.
async fn search(
    client: &Client,
    qminder: &QminderSettings,
    span: Span,
    from_ms: i64,
) -> Result<Vec<Ticket>, qminder_api::ApiError> {
    let locations = if qminder.locations.is_empty() {
        tickets::locations(client).await?
    } else {
        qminder.locations.clone()
    };
    let mut all = Vec::new();
    for location in locations {
        let window = Window {
            location,
            from_ms,
            to_ms: span.until_ms,
        };
        let found = tickets::created_between(client, window, PAGE_LIMIT).await?;
        eprintln!("backfill: location {location}: {} tickets", found.len());
        all.extend(found);
    }
    Ok(all)
}

/// Publishes `missing`, at most [`IN_FLIGHT`] at once, in order per ticket.
async fn publish(
    settings: &Settings,
    missing: &[Rebuilt],
    lease: &Lease,
    report: &mut Report,
) -> Result<(), String> {
    let publisher = kafka::operator_publisher(settings).map_err(|e| e.to_string())?;
    let outcomes: Vec<_> = futures_util::stream::iter(missing)
        .map(|r| {
            // The record is handed to the producer here, in order; the answer comes later.
            let pending = lease.held().then(|| publisher.deliver(&r.record()));
            async move {
                match pending {
                    Some(pending) => (r, pending.await.map(|_| ()).map_err(|e| e.to_string())),
                    None => (
                        r,
                        Err("the lease was lost: another gap-filler took over".to_owned()),
                    ),
                }
            }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    for (rebuilt, outcome) in outcomes {
        if let Err(e) = &outcome {
            eprintln!(
                "backfill: {} of ticket {} not acknowledged: {e}",
                rebuilt.kind.event_type(),
                rebuilt.ticket_id
            );
        }
        report.published(rebuilt.kind, outcome.is_ok());
    }
    if let Err(e) = publisher.flush(Duration::from_secs(30)) {
        eprintln!("backfill: the final flush failed: {e}");
    }
    Ok(())
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
