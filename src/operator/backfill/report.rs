//! What a backfill found and did, per event type, printed as a small table.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;

use super::rebuild::Span;
use crate::config::EndpointSettings;
use crate::operator::qminder_api::Kind;
use crate::operator::qminder_api::client::Usage;

#[derive(Debug, Default, Clone, Copy)]
struct Row {
    found: u64,
    present: u64,
    published: u64,
    failed: u64,
}

/// The summary of one run.
#[derive(Debug)]
pub struct Report {
    endpoint: String,
    span: Span,
    tickets: usize,
    api_requests: u64,
    rate_limited: u64,
    /// Records read back from Kafka.
    pub records_read: u64,
    rows: BTreeMap<Kind, Row>,
}

impl Report {
    pub fn new(endpoint: &EndpointSettings, span: Span, tickets: usize, usage: &Usage) -> Self {
        Self {
            endpoint: endpoint.path.clone(),
            span,
            tickets,
            api_requests: usage.requests.load(Ordering::Relaxed),
            rate_limited: usage.rate_limited.load(Ordering::Relaxed),
            records_read: 0,
            rows: Kind::ALL.iter().map(|k| (*k, Row::default())).collect(),
        }
    }

    /// A transition of the window, and whether Kafka already had it.
    pub fn count(&mut self, kind: Kind, present: bool) {
        let row = self.rows.entry(kind).or_default();
        row.found += 1;
        row.present += u64::from(present);
    }

    /// A missing transition sent to Kafka, and whether Kafka acknowledged it.
    pub fn published(&mut self, kind: Kind, acknowledged: bool) {
        let row = self.rows.entry(kind).or_default();
        if acknowledged {
            row.published += 1;
        } else {
            row.failed += 1;
        }
    }

    /// Per event type, the transitions Kafka did not have.
    pub fn missing(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        self.rows.iter().map(|(k, r)| (*k, r.found - r.present))
    }

    /// API requests (retries included) and how many answers were 429.
    pub fn api_usage(&self) -> (u64, u64) {
        (self.api_requests, self.rate_limited)
    }

    pub fn unacknowledged(&self) -> u64 {
        self.rows.values().map(|r| r.failed).sum()
    }
}

fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backfill of {} from {} to {}: {} tickets searched in {} API requests ({} rate-limited), {} records read back from Kafka",
            self.endpoint,
            time(self.span.since_ms),
            time(self.span.until_ms),
            self.tickets,
            self.api_requests,
            self.rate_limited,
            self.records_read
        )?;
        writeln!(
            f,
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "type", "found", "present", "missing", "published", "failed"
        )?;
        for (kind, r) in &self.rows {
            writeln!(
                f,
                "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9}",
                kind.event_type(),
                r.found,
                r.present,
                r.found - r.present,
                r.published,
                r.failed
            )?;
        }
        Ok(())
    }
}
