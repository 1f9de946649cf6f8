//! Stage 5 of the data path: encode an event as a Kafka record in CloudEvents 1.0 form.
//!
//! `structured` (default): the value is a CloudEvents JSON event whose `data` member is the
//! request's `data` bytes spliced in unchanged, with header
//! `content-type: application/cloudevents+json; charset=utf-8`.
//! `binary`: the value is the `data` bytes themselves; the attributes travel as `ce_*`
//! headers and `content-type: application/json` (CloudEvents Kafka protocol binding).
//! The key is the entity id, also carried as the `partitionkey` extension.
//! Bodies that are not events become dead-letter records: raw bytes plus reason headers.
//! The format is specified in `docs/records.md` and `docs/record.schema.json`. Pure.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{Event, Malformed};
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
}

/// Encodes an authenticated event for `topic`.
pub fn encode<'a>(
    format: RecordFormat,
    verified: &'a Verified,
    event: &'a Event<'a>,
    route: &'a Route,
    ctx: Context<'a>,
) -> Record<'a> {
    let topic = route.topic.as_str();
    let time: Cow<'a, str> = match event.occurred_at {
        Some(t) => Cow::Borrowed(t),
        None => Cow::Owned(format_time(ctx.received_at)),
    };
    let key = event.entity_id.as_deref();
    let (value, headers) = match format {
        RecordFormat::Structured => (
            Cow::Owned(structured_value(verified, event, ctx, key, &time)),
            vec![("content-type", Cow::Borrowed(STRUCTURED_CONTENT_TYPE))],
        ),
        RecordFormat::Binary => (
            Cow::Borrowed(event.data.as_bytes()),
            binary_headers(verified, event, ctx, key, time),
        ),
    };
    Record {
        topic,
        label: &route.label,
        key,
        value,
        headers,
        id: verified.id(),
        accepted_ms: unix_ms(ctx.received_at),
    }
}

/// The structured mode's value: the CloudEvents JSON, `data` spliced in unchanged.
fn structured_value(
    verified: &Verified,
    event: &Event<'_>,
    ctx: Context<'_>,
    key: Option<&str>,
    time: &str,
) -> Vec<u8> {
    let mut value = Vec::with_capacity(event.data.len() + 400);
    value.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    push_json_str(&mut value, verified.id());
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
    value.extend_from_slice(br#","data":"#);
    value.extend_from_slice(event.data.as_bytes());
    value.push(b'}');
    value
}

/// The binary mode's headers: the CloudEvents attributes as `ce_*`.
fn binary_headers<'a>(
    verified: &'a Verified,
    event: &Event<'_>,
    ctx: Context<'a>,
    key: Option<&'a str>,
    time: Cow<'a, str>,
) -> Vec<(&'static str, Cow<'a, str>)> {
    let mut headers = vec![
        ("ce_specversion", Cow::Borrowed("1.0")),
        ("ce_id", Cow::Borrowed(verified.id())),
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
    headers.push(("content-type", Cow::Borrowed("application/json")));
    headers
}

/// Encodes an authenticated body that is not an event, for the dead-letter topic: the
/// raw bytes, keyed by the deterministic id, with why and where from in headers.
pub fn encode_dead_letter<'a>(
    verified: &'a Verified,
    reason: Malformed,
    route: &'a Route,
    ctx: Context<'a>,
) -> Record<'a> {
    Record {
        topic: &route.topic,
        label: &route.label,
        key: Some(verified.id()),
        value: Cow::Borrowed(verified.body()),
        headers: vec![
            (REASON_HEADER, Cow::Borrowed(reason.code())),
            (ID_HEADER, Cow::Borrowed(verified.id())),
            (SOURCE_HEADER, Cow::Borrowed(ctx.source)),
            (RECEIVED_AT_HEADER, Cow::Owned(format_time(ctx.received_at))),
        ],
        id: verified.id(),
        accepted_ms: unix_ms(ctx.received_at),
    }
}

/// What stands in the dead-letter topic for a record Kafka will never accept (too large,
/// invalid): not the record, but a small JSON stub saying which it was,
/// `{"id","event_type","topic","bytes","reason"}`, keyed by the id, with the dead-letter
/// headers (reason = the answer's code, `record_too_large` or `record_unacceptable`).
pub fn encode_refused<'a>(
    refused: &'a Record<'a>,
    code: &'static str,
    route: &'a Route,
    ctx: Context<'a>,
) -> Record<'a> {
    let stub = serde_json::json!({
        "id": refused.id,
        "event_type": refused.label,
        "topic": refused.topic,
        "bytes": refused.value.len(),
        "reason": code,
    });
    Record {
        topic: &route.topic,
        label: &route.label,
        key: Some(refused.id),
        value: Cow::Owned(stub.to_string().into_bytes()),
        headers: vec![
            (REASON_HEADER, Cow::Borrowed(code)),
            (ID_HEADER, Cow::Borrowed(refused.id)),
            (SOURCE_HEADER, Cow::Borrowed(ctx.source)),
            (RECEIVED_AT_HEADER, Cow::Owned(format_time(ctx.received_at))),
        ],
        id: refused.id,
        accepted_ms: refused.accepted_ms,
    }
}

/// RFC 3339 in UTC, to the microsecond: `2026-11-26T23:20:37.123456Z`.
/// `t` in ms since the Unix epoch (0 before it).
fn unix_ms(t: OffsetDateTime) -> u64 {
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
mod tests {
    use super::*;
    use crate::event;
    use crate::signature::{Signer, Verifier};
    use bytes::Bytes;
    use serde_json::Value;

    const URL: &str = "https://example.com/webhooks";

    fn verified(body: &str) -> Verified {
        let v = Verifier::new(URL, &["s".into()]);
        let sig = Signer::new(URL, &"s".into()).sign(body.as_bytes());
        v.verify(Some(sig.as_bytes()), Bytes::from(body.to_owned()))
            .unwrap()
    }

    fn route() -> Route {
        Route {
            id: 0,
            topic: "t".into(),
            label: "l".into(),
        }
    }

    fn ctx() -> Context<'static> {
        Context {
            source: URL,
            received_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    const DATA: &str = "{ \"id\": 7024061, \"firstName\": \"Zo\\u00eb\", \"n\": 12345678901234567890,\n  \"created\": {\"date\": \"2020-05-25T00:00:00Z\"} }";

    #[test]
    fn writes_a_structured_cloudevent_that_splices_data_unchanged() {
        let body = format!("{{\"type\": \"ticket_created\", \"data\": {DATA}}}");
        let v = verified(&body);
        let e = event::parse(&v).unwrap();
        let route = route();
        let r = encode(RecordFormat::Structured, &v, &e, &route, ctx());
        let text = std::str::from_utf8(&r.value).unwrap();
        assert!(text.ends_with(&format!(",\"data\":{DATA}}}")), "{text}");
        let ce: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], v.id());
        assert_eq!(ce["source"], URL);
        assert_eq!(ce["type"], "com.qminder.ticket_created");
        assert_eq!(ce["subject"], "7024061");
        assert_eq!(ce["time"], "2020-05-25T00:00:00Z");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["partitionkey"], "7024061");
        assert_eq!(r.key, Some("7024061"));
        assert_eq!(
            r.headers,
            vec![("content-type", Cow::Borrowed(STRUCTURED_CONTENT_TYPE))]
        );
    }

    #[test]
    fn writes_binary_mode_with_data_as_value_and_attributes_as_headers() {
        let body = format!("{{\"type\":\"ticket_changed\",\"data\":{DATA}}}");
        let v = verified(&body);
        let e = event::parse(&v).unwrap();
        let route = route();
        let r = encode(RecordFormat::Binary, &v, &e, &route, ctx());
        assert_eq!(&*r.value, DATA.as_bytes());
        let h: std::collections::HashMap<_, _> = r.headers.iter().cloned().collect();
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_id"], v.id());
        assert_eq!(h["ce_type"], "com.qminder.ticket_changed");
        assert_eq!(h["ce_subject"], "7024061");
        assert_eq!(h["ce_partitionkey"], "7024061");
        // ticket_changed carries no occurrence time: the receive time stands in.
        assert_eq!(h["ce_time"], "2023-11-14T22:13:20Z");
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn leaves_out_subject_and_key_when_there_is_no_entity_id() {
        let v = verified(r#"{"type":"something_new","data":[1]}"#);
        let e = event::parse(&v).unwrap();
        let route = route();
        let r = encode(RecordFormat::Structured, &v, &e, &route, ctx());
        let ce: Value = serde_json::from_slice(&r.value).unwrap();
        assert!(ce.get("subject").is_none() && ce.get("partitionkey").is_none());
        assert_eq!(ce["type"], "com.qminder.something_new");
        assert_eq!(r.key, None);
    }

    #[test]
    fn escapes_attributes_that_need_it() {
        let v = verified(r#"{"type":"we\"ird\u0001","data":{"id":"a\"b"}}"#);
        let e = event::parse(&v).unwrap();
        let route = route();
        let r = encode(RecordFormat::Structured, &v, &e, &route, ctx());
        let ce: Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(ce["type"], "com.qminder.we\"ird\u{1}");
        assert_eq!(ce["subject"], "a\"b");
    }

    #[test]
    fn dead_letters_keep_the_raw_body_and_say_why() {
        let v = verified("not json at all");
        let route = route();
        let r = encode_dead_letter(&v, Malformed::NotJson, &route, ctx());
        assert_eq!(&*r.value, b"not json at all");
        assert_eq!(r.key, Some(v.id()));
        assert_eq!(r.headers[0], (REASON_HEADER, Cow::Borrowed("not_json")));
    }

    #[test]
    fn formats_receive_times_in_utc_with_microseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(format_time(t), "2023-11-14T22:13:20.123456Z");
    }
}
