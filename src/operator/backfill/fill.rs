//! One fill of a window, shared by `backfill` and the reconciler: search Qminder, take the
//! lease, wait for the spools, read Kafka back, publish what is missing.

use std::time::Duration;

use futures_util::StreamExt;

use super::lease::Lease;
use super::rebuild::{self, Encoder, Rebuilt, Span};
use super::report::Report;
use super::{present, spools};
use crate::config::{QminderSettings, Settings};
use crate::delivery::spool::report::coordination_topic;
use crate::delivery::{Deliver, kafka};
use crate::operator::qminder_api::{self, Client, Kind, Ticket, Window, tickets};

/// Kafka records may carry their acceptance time a little before the transition's own
/// (clocks differ): the topics are read from this much before the look-back's start.
const READ_MARGIN_MS: i64 = 5 * 60 * 1000;
/// Records in flight to Kafka at once.
const IN_FLIGHT: usize = 256;

/// What to fill, and how long to wait for what.
#[derive(Debug, Clone)]
pub struct Fill {
    /// The endpoint's path; `None`: the only one with `[endpoints.qminder]`.
    pub endpoint: Option<String>,
    pub span: Span,
    /// How long before the window a ticket may have been created.
    pub lookback_ms: i64,
    pub read_timeout: Duration,
    pub lease_wait: Duration,
    pub spool_wait: Duration,
    pub dry_run: bool,
    /// Tickets per search (`qminder_api::PAGE_LIMIT` but in tests).
    pub page_limit: usize,
    /// Progress bars on a terminal (the command line).
    pub progress: bool,
    /// `[telemetry]`: the run gets a span, whose context its records carry.
    pub traces: crate::traces::Traces,
    /// The run span's name: `backfill` or `reconcile`.
    pub run_name: &'static str,
}

/// Why a fill published nothing.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Someone else holds the lease, or a spool still holds events of the window: try later.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_owned())
    }
}

/// Fills `fill.span`: the report says what was found, present and published.
pub fn fill(settings: &Settings, fill: &Fill) -> Result<Report, Failure> {
    let (endpoint, qminder) =
        crate::config::qminder_endpoint(&settings.endpoints, fill.endpoint.as_deref())?;
    if settings.kafka.is_embedded() {
        return Err("kafka.bootstrap_servers is \"embedded\": there is no Kafka to fill".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let client = Client::new(qminder).map_err(|e| e.to_string())?;
    let from_ms = fill.span.since_ms - fill.lookback_ms;
    let found = runtime
        .block_on(search(&client, qminder, fill, from_ms))
        .map_err(|e| e.to_string())?;
    let mut report = Report::new(endpoint, fill.span, found.len(), &client.usage);
    // Held from before reading Kafka back until the last record is acknowledged, so that
    // two runs cannot both find the same gap and both fill it.
    let lease_topic = coordination_topic(&settings.kafka.topic_prefix);
    let ensure = kafka::ensure_lease_topic(&settings.kafka, &lease_topic, fill.read_timeout);
    runtime.block_on(ensure)?;
    let waited = std::time::Instant::now();
    let lease = Lease::acquire(settings, &lease_topic, fill.lease_wait).map_err(Failure::Busy)?;
    tracing::info!(
        waited_ms = waited.elapsed().as_millis() as u64,
        "Holding the lease."
    );
    spools::wait_until_drained(settings, &lease_topic, fill.span.until_ms, fill.spool_wait)
        .map_err(Failure::Busy)?;
    let privacy = settings.privacy.rules().map_err(|e| e.to_string())?;
    let router = settings.kafka.router();
    let run = fill.traces.run(fill.run_name);
    let trace = run.context();
    let encoder = Encoder {
        format: settings.kafka.record_format,
        router: &router,
        privacy: privacy.as_ref(),
        url: &endpoint.url,
        source: endpoint.source(),
        trace: trace.as_ref(),
    };
    let read_from = from_ms - READ_MARGIN_MS;
    let missing = find_missing(settings, &encoder, &found, fill, read_from, &mut report)?;
    if fill.dry_run || missing.is_empty() {
        run.end_run(
            0,
            if fill.dry_run {
                "dry_run"
            } else {
                "nothing_missing"
            },
        );
    } else {
        let publishing = std::time::Instant::now();
        runtime.block_on(publish(settings, &missing, &lease, &mut report))?;
        let publish_ms = publishing.elapsed().as_millis() as u64;
        tracing::info!(
            records = missing.len(),
            publish_ms,
            "Published what was missing."
        );
        run.end_run(missing.len() as u64, "published");
    }
    Ok(report)
}

/// The transitions of the window Kafka does not have, encoded; counted in `report`.
fn find_missing(
    settings: &Settings,
    encoder: &Encoder<'_>,
    found: &[Ticket],
    fill: &Fill,
    read_from: i64,
    report: &mut Report,
) -> Result<Vec<Rebuilt>, Failure> {
    let topics: Vec<String> = Kind::ALL
        .iter()
        .map(|k| encoder.router.route(k.event_type()).topic.clone())
        .collect();
    let reading = std::time::Instant::now();
    let present = present::read(
        settings,
        &topics,
        read_from,
        fill.read_timeout,
        fill.progress,
    )?;
    report.records_read = present.records;
    let read_ms = reading.elapsed().as_millis() as u64;
    tracing::info!(records = present.records, read_ms, "Read the topics back.");
    let mut missing = Vec::new();
    for ticket in found {
        for transition in rebuild::wanted(ticket, fill.span) {
            let here = present.contains(&ticket.id, transition.kind);
            report.count(transition.kind, here);
            if !here {
                missing.push(encoder.encode(ticket, &transition));
            }
        }
    }
    Ok(missing)
}

/// Every ticket created from `from_ms` to the window's end, in every location searched.
async fn search(
    client: &Client,
    qminder: &QminderSettings,
    fill: &Fill,
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
            to_ms: fill.span.until_ms,
        };
        let found = tickets::created_between(client, window, fill.page_limit).await?;
        tracing::info!(
            location,
            tickets = found.len(),
            "Searched Qminder's tickets."
        );
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
            tracing::warn!(event_type = rebuilt.kind.event_type(), ticket = %rebuilt.ticket_id, error = %e, "Kafka did not acknowledge a rebuilt event; a later run will find it missing again.");
        }
        report.published(rebuilt.kind, outcome.is_ok());
    }
    if let Err(e) = publisher.flush(Duration::from_secs(30)) {
        tracing::warn!(error = %e, "The producer's final flush failed.");
    }
    Ok(())
}
