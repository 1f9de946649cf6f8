use super::*;
use crate::event::{self, Malformed};
use crate::signature::{Signer, Verifier};
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;

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
        trace: None,
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

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced() -> TraceContext {
    TraceContext {
        traceparent: TRACEPARENT.into(),
        tracestate: Some("vendor=x".into()),
    }
}

/// A ticket_called encoded in `format` with [`traced`]'s context: the value and headers.
fn encoded_with_a_trace(format: RecordFormat) -> (Vec<u8>, HashMap<String, String>) {
    let v = verified(&format!("{{\"type\":\"ticket_called\",\"data\":{DATA}}}"));
    let e = event::parse(&v).unwrap();
    let (route, trace) = (route(), traced());
    let ctx = Context {
        trace: Some(&trace),
        ..ctx()
    };
    let r = encode(format, &v, &e, &route, ctx);
    let headers = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (r.value.into_owned(), headers)
}

#[test]
fn carries_the_trace_context_as_plain_and_cloudevents_headers_in_binary_mode() {
    let (_, h) = encoded_with_a_trace(RecordFormat::Binary);
    for name in ["traceparent", "ce_traceparent"] {
        assert_eq!(h[name], TRACEPARENT, "{name}");
    }
    for name in ["tracestate", "ce_tracestate"] {
        assert_eq!(h[name], "vendor=x", "{name}");
    }
}

#[test]
fn carries_the_trace_context_as_a_header_and_envelope_attributes_in_structured_mode() {
    let (value, h) = encoded_with_a_trace(RecordFormat::Structured);
    let ce: Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(ce["traceparent"], TRACEPARENT);
    assert_eq!(ce["tracestate"], "vendor=x");
    assert_eq!(h["traceparent"], TRACEPARENT);
    assert!(
        !h.contains_key("ce_traceparent"),
        "no ce_ headers in structured mode"
    );
}

#[test]
fn carries_the_trace_context_in_a_dead_letters_headers() {
    let v = verified("not json");
    let (route, trace) = (route(), traced());
    let ctx = Context {
        trace: Some(&trace),
        ..ctx()
    };
    let dead = encode_dead_letter(&v, Malformed::NotJson, &route, ctx);
    assert!(
        dead.headers
            .contains(&("traceparent", Cow::Borrowed(TRACEPARENT)))
    );
}

#[test]
fn carries_no_trace_context_without_one() {
    let v = verified(&format!("{{\"type\":\"ticket_called\",\"data\":{DATA}}}"));
    let e = event::parse(&v).unwrap();
    let route = route();
    for format in [RecordFormat::Structured, RecordFormat::Binary] {
        let r = encode(format, &v, &e, &route, ctx());
        assert!(
            !r.headers.iter().any(|(k, _)| k.contains("trace")),
            "{format:?}"
        );
        assert!(!String::from_utf8_lossy(&r.value).contains("traceparent"));
    }
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

fn rebuilt_event() -> Event<'static> {
    Event {
        event_type: Cow::Borrowed("ticket_called"),
        data: Cow::Borrowed(r#"{"id":"7024061","called":{"date":"2026-12-01T09:05:00Z"}}"#),
        entity_id: Some(Cow::Borrowed("7024061")),
        occurred_at: Some("2026-12-01T09:05:00Z"),
    }
}

#[test]
fn a_rebuilt_event_is_marked_in_both_formats_and_otherwise_encoded_as_a_live_one() {
    let id = RebuiltId::new(
        "https://b.example.com/hook",
        "7024061",
        "ticket_called",
        Some("2026-12-01T09:05:00Z"),
    );
    let event = rebuilt_event();
    let route = route();
    let r = encode(
        RecordFormat::Structured,
        Origin::Rebuilt(&id),
        &event,
        &route,
        ctx(),
    );
    let v: Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(v[ORIGIN_ATTRIBUTE], ORIGIN_BACKFILL);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["time"], "2026-12-01T09:05:00Z");
    assert_eq!((r.key, r.id), (Some("7024061"), id.as_str()));
    let b = encode(
        RecordFormat::Binary,
        Origin::Rebuilt(&id),
        &event,
        &route,
        ctx(),
    );
    assert!(
        b.headers
            .contains(&(ORIGIN_HEADER, Cow::Borrowed(ORIGIN_BACKFILL)))
    );
    assert_eq!(ORIGIN_HEADER, format!("ce_{ORIGIN_ATTRIBUTE}"));
    let live = verified(r#"{"type":"ticket_called","data":{"id":"1"}}"#);
    let parsed = event::parse(&live).unwrap();
    let l = encode(RecordFormat::Structured, &live, &parsed, &route, ctx());
    let lv: Value = serde_json::from_slice(&l.value).unwrap();
    assert!(
        lv.get(ORIGIN_ATTRIBUTE).is_none(),
        "live records are not marked"
    );
}

#[test]
fn a_rebuilt_id_is_the_same_in_every_run_and_differs_when_any_part_does() {
    let parts = [
        "https://b.example.com/hook",
        "7024061",
        "ticket_called",
        "2026-12-01T09:05:00Z",
    ];
    let id = |p: [&str; 4]| RebuiltId::new(p[0], p[1], p[2], Some(p[3]));
    let first = id(parts);
    assert_eq!(first, id(parts));
    assert_eq!(first.as_str().len(), 64);
    for i in 0..4 {
        let mut other = parts;
        other[i] = "x";
        assert_ne!(id(other), first, "part {i}");
    }
    // Length prefixes: moving a character from one part to the next changes the id.
    assert_ne!(
        RebuiltId::new("ab", "c", "t", None),
        RebuiltId::new("a", "bc", "t", None)
    );
}
