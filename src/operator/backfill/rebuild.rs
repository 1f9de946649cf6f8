//! Which transitions of the tickets found belong to the window, and the records that
//! stand in for the missing ones: the record the live webhook would have made (same topic,
//! key, `data` = the ticket as the API returned it, through the same `[privacy]` rules),
//! marked `qminderorigin = "backfill"`, with a deterministic id. Pure.

use std::borrow::Cow;

use time::OffsetDateTime;

use crate::event::Event;
use crate::operator::qminder_api::{Kind, Ticket, Transition, transitions};
use crate::privacy::Privacy;
use crate::record::{self, Context, Origin, RebuiltId, RecordFormat};
use crate::routing::Router;

/// The window asked for, ms since the Unix epoch, inclusive.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub since_ms: i64,
    pub until_ms: i64,
}

/// The transitions of `ticket` a backfill of `span` looks for: those whose time is within
/// it, and a cancellation (no time in the API) when the latest time the ticket has is no
/// later than the window's end.
pub fn wanted(ticket: &Ticket, span: Span) -> Vec<Transition<'_>> {
    transitions::of(ticket)
        .into_iter()
        .filter(|t| match (t.at, t.record_time(ticket)) {
            (Some(at), _) => (span.since_ms..=span.until_ms).contains(&at.unix_ms),
            (None, Some(latest)) => latest.unix_ms <= span.until_ms,
            (None, None) => false,
        })
        .collect()
}

/// What encoding a rebuilt record needs besides the ticket.
#[derive(Debug)]
pub struct Encoder<'a> {
    pub format: RecordFormat,
    pub router: &'a Router,
    pub privacy: Option<&'a Privacy>,
    /// The endpoint's URL (part of the id) and its CloudEvents `source`.
    pub url: &'a str,
    pub source: &'a str,
    /// The run span's context, which every rebuilt record carries (`[telemetry]`).
    pub trace: Option<&'a record::TraceContext>,
}

/// A record ready to produce, owning its parts.
#[derive(Debug)]
pub struct Rebuilt {
    pub kind: Kind,
    pub ticket_id: String,
    pub topic: String,
    pub label: String,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub id: String,
    pub timestamp_ms: u64,
}

impl Encoder<'_> {
    pub fn encode(&self, ticket: &Ticket, transition: &Transition<'_>) -> Rebuilt {
        let kind = transition.kind;
        let stamp = transition.record_time(ticket);
        let id = RebuiltId::new(
            self.url,
            &ticket.id,
            kind.event_type(),
            transition.at.map(|s| s.text.as_str()),
        );
        let data = match self.privacy {
            Some(p) => p.apply(ticket.raw.get()),
            None => Cow::Borrowed(ticket.raw.get()),
        };
        let event = Event {
            event_type: Cow::Borrowed(kind.event_type()),
            data,
            entity_id: Some(Cow::Borrowed(&ticket.id)),
            occurred_at: stamp.map(|s| s.text.as_str()),
        };
        let at_ms = stamp.map_or(0, |s| s.unix_ms);
        let ctx = Context {
            source: self.source,
            received_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            trace: self.trace,
        };
        let route = self.router.route(kind.event_type());
        let r = record::encode(self.format, Origin::Rebuilt(&id), &event, route, ctx);
        Rebuilt {
            kind,
            ticket_id: ticket.id.clone(),
            topic: r.topic.to_owned(),
            label: r.label.to_owned(),
            key: r.key.map(str::to_owned),
            value: r.value.into_owned(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_string()))
                .collect(),
            id: r.id.to_owned(),
            timestamp_ms: r.accepted_ms,
        }
    }
}

impl Rebuilt {
    /// The record, borrowed, as the producer takes it.
    pub fn record(&self) -> record::Record<'_> {
        record::Record {
            topic: &self.topic,
            key: self.key.as_deref(),
            value: Cow::Borrowed(&self.value),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                .collect(),
            label: &self.label,
            id: &self.id,
            accepted_ms: self.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn ticket(json: &str) -> Ticket {
        Ticket::from_raw(RawValue::from_string(json.to_owned()).unwrap()).unwrap()
    }

    const SINCE: i64 = 1_796_115_600_000; // 09:00
    const UNTIL: i64 = SINCE + 600_000; // 09:10

    #[test]
    fn only_transitions_within_the_window_are_wanted_and_cancellations_by_their_latest_time() {
        let span = Span {
            since_ms: SINCE,
            until_ms: UNTIL,
        };
        let cases: [(&str, &[Kind]); 4] = [
            // Created before the window, called and served in it.
            (
                r#"{"id":"1","status":"SERVED","created":{"date":"2026-12-01T08:50:00.000Z"},
                   "called":{"date":"2026-12-01T09:01:00Z"},"served":{"date":"2026-12-01T09:11:00Z"}}"#,
                &[Kind::Called],
            ),
            (
                r#"{"id":"2","status":"CANCELLED_BY_CLERK","created":{"date":"2026-12-01T08:59:59.999Z"}}"#,
                &[Kind::Cancelled],
            ),
            (
                r#"{"id":"3","status":"NOSHOW","created":{"date":"2026-12-01T09:05:00.000Z"},
                   "called":{"date":"2026-12-01T09:10:01Z"}}"#,
                &[Kind::Created],
            ),
            (
                r#"{"id":"4","status":"NEW","created":{"date":"2026-12-01T09:10:00.000Z"}}"#,
                &[Kind::Created],
            ),
        ];
        for (json, want) in cases {
            let t = ticket(json);
            let kinds: Vec<Kind> = wanted(&t, span).iter().map(|t| t.kind).collect();
            assert_eq!(kinds, want, "{json}");
        }
    }
}
