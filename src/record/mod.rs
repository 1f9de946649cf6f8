//! Stage 5 of the data path: encode an event as a Kafka record in CloudEvents 1.0 form.
//!
//! `structured` (default): the value is a CloudEvents JSON event whose `data` member is the
//! request's `data` bytes spliced in unchanged, with header
//! `content-type: application/cloudevents+json; charset=utf-8`.
//! `binary`: the value is the `data` bytes themselves; the attributes travel as `ce_*`
//! headers and `content-type: application/json` (CloudEvents Kafka protocol binding).
//! The key is the entity id, also carried as the `partitionkey` extension.
//! With `[telemetry]` on, every record carries the W3C trace context of its delivery span:
//! plain `traceparent` (and `tracestate`) headers, which OpenTelemetry's Kafka
//! instrumentations read, and the CloudEvents distributed-tracing extension (`ce_traceparent`
//! headers in binary mode, `traceparent` attributes in structured mode).
//! Bodies that are not events become dead-letter records: raw bytes plus reason headers.
//! The format is specified in `docs/records.md` and `docs/record.schema.json`. Pure.

mod dead_letter;

pub use dead_letter::{encode_dead_letter, encode_refused};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::Event;
use crate::routing::Route;
use crate::signature::Verified;

/// Prefix of the CloudEvents `type` attribute: `com.qminder.<event type>`.
pub const TYPE_PREFIX: &str = "com.qminder.";
/// `content-type` of a structured-mode record.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// Dead-letter record headers.
pub const REASON_HEADER: &str = "qminder-bridge-reason";
pub const ID_HEADER: &str = "qminder-bridge-id";
pub const SOURCE_HEADER: &str = "qminder-bridge-source";
pub const RECEIVED_AT_HEADER: &str = "qminder-bridge-received-at";

/// How events are laid out in Kafka records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// The value is a CloudEvents JSON document (`application/cloudevents+json`).
    #[default]
    Structured,
    /// The value is the event's data; attributes are `ce_*` headers.
    Binary,
}

/// One Kafka record, ready to produce. Borrows the request where it can.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a str>,
    pub value: Cow<'a, [u8]>,
    pub headers: Vec<(&'a str, Cow<'a, str>)>,
    /// The `event_type` metric label of the route (fixed set; see `routing`).
    pub label: &'a str,
    /// The CloudEvents id (or, for dead letters, the same deterministic id).
    pub id: &'a str,
    /// When the bridge accepted the webhook, ms since the Unix epoch: the Kafka record's
    /// timestamp, in spool mode too, where the record is forwarded later (0: let the
    /// producer stamp it).
    pub accepted_ms: u64,
}

/// What the bridge knows about one delivery besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The CloudEvents `source`: the endpoint's `source`, or its URL.
    pub source: &'a str,
    /// When the request arrived.
    pub received_at: OffsetDateTime,
    /// The delivery span's trace context, when tracing is on.
    pub trace: Option<&'a TraceContext>,
}

/// A W3C trace context, as a record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// `None` when empty.
    pub tracestate: Option<String>,
}

/// The trace context's headers: the plain ones, and in binary mode the CloudEvents ones.
fn push_trace_headers<'a>(
    trace: Option<&'a TraceContext>,
    binary: bool,
    headers: &mut Vec<(&'static str, Cow<'a, str>)>,
) {
    let Some(trace) = trace else { return };
    headers.push(("traceparent", Cow::Borrowed(&trace.traceparent)));
    if let Some(state) = &trace.tracestate {
        headers.push(("tracestate", Cow::Borrowed(state)));
    }
    if binary {
        headers.push(("ce_traceparent", Cow::Borrowed(&trace.traceparent)));
        if let Some(state) = &trace.tracestate {
            headers.push(("ce_tracestate", Cow::Borrowed(state)));
        }
    }
}

/// CloudEvents extension attribute on a record rebuilt from Qminder's API (`backfill`),
/// and its one value. Live records do not carry it.
pub const ORIGIN_ATTRIBUTE: &str = "qminderorigin";
pub const ORIGIN_BACKFILL: &str = "backfill";
/// The same attribute as a binary-mode header.
pub const ORIGIN_HEADER: &str = "ce_qminderorigin";

/// Where an event record comes from; nothing else can make one: a webhook whose signature
/// matched, or a transition `backfill` rebuilt from Qminder's API.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    Webhook(&'a Verified),
    Rebuilt(&'a RebuiltId),
}

impl<'a> From<&'a Verified> for Origin<'a> {
    fn from(verified: &'a Verified) -> Self {
        Self::Webhook(verified)
    }
}

impl<'a> Origin<'a> {
    /// The CloudEvents id.
    pub fn id(self) -> &'a str {
        match self {
            Self::Webhook(verified) => verified.id(),
            Self::Rebuilt(rebuilt) => &rebuilt.0,
        }
    }

    /// The `qminderorigin` value, if any.
    fn marker(self) -> Option<&'static str> {
        match self {
            Self::Webhook(_) => None,
            Self::Rebuilt(_) => Some(ORIGIN_BACKFILL),
        }
    }
}

/// The id of a rebuilt event: lower-case hex SHA-256 over the endpoint's URL, the ticket
/// id, the event type and the transition's time as Qminder wrote it (none for a
/// cancellation), each length-prefixed. The same transition gets the same id in every run
/// and every process, so consumers de-duplicate rebuilt records as they do live ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RebuiltId(String);

impl RebuiltId {
    pub fn new(url: &str, ticket_id: &str, event_type: &str, time: Option<&str>) -> Self {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"qminder-bridge rebuilt event 1");
        for part in [url, ticket_id, event_type, time.unwrap_or("")] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        Self(hex::encode(hash.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Encodes an event for `topic`: from a verified webhook (`&Verified` converts) or rebuilt.
pub fn encode<'a>(
    format: RecordFormat,
    origin: impl Into<Origin<'a>>,
    event: &'a Event<'a>,
    route: &'a Route,
    ctx: Context<'a>,
) -> Record<'a> {
    let topic = route.topic.as_str();
    let time: Cow<'a, str> = match event.occurred_at {
        Some(t) => Cow::Borrowed(t),
        None => Cow::Owned(format_time(ctx.received_at)),
    };
    let origin = origin.into();
    let key = event.entity_id.as_deref();
    let (value, mut headers) = match format {
        RecordFormat::Structured => (
            Cow::Owned(structured_value(origin, event, ctx, key, &time)),
            vec![("content-type", Cow::Borrowed(STRUCTURED_CONTENT_TYPE))],
        ),
        RecordFormat::Binary => (
            Cow::Borrowed(event.data.as_bytes()),
            binary_headers(origin, event, ctx, key, time),
        ),
    };
    push_trace_headers(ctx.trace, format == RecordFormat::Binary, &mut headers);
    Record {
        topic,
        label: &route.label,
        key,
        value,
        headers,
        id: origin.id(),
        accepted_ms: unix_ms(ctx.received_at),
    }
}

/// The structured mode's value: the CloudEvents JSON, `data` spliced in unchanged.
fn structured_value(
    origin: Origin<'_>,
    event: &Event<'_>,
    ctx: Context<'_>,
    key: Option<&str>,
    time: &str,
) -> Vec<u8> {
    let mut value = Vec::with_capacity(event.data.len() + 400);
    value.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    push_json_str(&mut value, origin.id());
    value.extend_from_slice(br#","source":"#);
    push_json_str(&mut value, ctx.source);
    value.extend_from_slice(br#","type":""#);
    value.extend_from_slice(TYPE_PREFIX.as_bytes());
    // The escaped type, without its opening quote (the prefix's quote stands).
    let start = value.len();
    push_json_str(&mut value, &event.event_type);
    value.remove(start);
    if let Some(subject) = key {
        value.extend_from_slice(br#","subject":"#);
        push_json_str(&mut value, subject);
    }
    value.extend_from_slice(br#","time":"#);
    push_json_str(&mut value, time);
    value.extend_from_slice(br#","datacontenttype":"application/json""#);
    if let Some(partition_key) = key {
        value.extend_from_slice(br#","partitionkey":"#);
        push_json_str(&mut value, partition_key);
    }
    if let Some(marker) = origin.marker() {
        value.extend_from_slice(br#",""#);
        value.extend_from_slice(ORIGIN_ATTRIBUTE.as_bytes());
        value.extend_from_slice(br#"":"#);
        push_json_str(&mut value, marker);
    }
    if let Some(trace) = ctx.trace {
        value.extend_from_slice(br#","traceparent":"#);
        push_json_str(&mut value, &trace.traceparent);
        if let Some(state) = &trace.tracestate {
            value.extend_from_slice(br#","tracestate":"#);
            push_json_str(&mut value, state);
        }
    }
    value.extend_from_slice(br#","data":"#);
    value.extend_from_slice(event.data.as_bytes());
    value.push(b'}');
    value
}

/// The binary mode's headers: the CloudEvents attributes as `ce_*`.
fn binary_headers<'a>(
    origin: Origin<'a>,
    event: &Event<'_>,
    ctx: Context<'a>,
    key: Option<&'a str>,
    time: Cow<'a, str>,
) -> Vec<(&'static str, Cow<'a, str>)> {
    let mut headers = vec![
        ("ce_specversion", Cow::Borrowed("1.0")),
        ("ce_id", Cow::Borrowed(origin.id())),
        ("ce_source", Cow::Borrowed(ctx.source)),
        (
            "ce_type",
            Cow::Owned(format!("{TYPE_PREFIX}{}", event.event_type)),
        ),
    ];
    if let Some(subject) = key {
        headers.push(("ce_subject", Cow::Borrowed(subject)));
    }
    headers.push(("ce_time", time));
    if let Some(partition_key) = key {
        headers.push(("ce_partitionkey", Cow::Borrowed(partition_key)));
    }
    if let Some(marker) = origin.marker() {
        headers.push((ORIGIN_HEADER, Cow::Borrowed(marker)));
    }
    headers.push(("content-type", Cow::Borrowed("application/json")));
    headers
}

/// RFC 3339 in UTC, to the microsecond: `2026-11-26T23:20:37.123456Z`.
/// `t` in ms since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(t.microsecond() * 1000).unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests;
