//! Records for the dead-letter topic: an authenticated body that is not an event (raw
//! bytes, why and where from in headers), and the stub that stands in for a record Kafka
//! will never accept.

use std::borrow::Cow;

use super::{
    Context, ID_HEADER, REASON_HEADER, RECEIVED_AT_HEADER, Record, SOURCE_HEADER, format_time,
    push_trace_headers, unix_ms,
};
use crate::event::Malformed;
use crate::routing::Route;
use crate::signature::Verified;

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
        headers: headers(reason.code(), verified.id(), ctx),
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
        headers: headers(code, refused.id, ctx),
        id: refused.id,
        accepted_ms: refused.accepted_ms,
    }
}

/// A dead-letter record's headers: why, which id, where from, when; and its trace context.
fn headers<'a>(
    reason: &'static str,
    id: &'a str,
    ctx: Context<'a>,
) -> Vec<(&'static str, Cow<'a, str>)> {
    let mut headers = vec![
        (REASON_HEADER, Cow::Borrowed(reason)),
        (ID_HEADER, Cow::Borrowed(id)),
        (SOURCE_HEADER, Cow::Borrowed(ctx.source)),
        (RECEIVED_AT_HEADER, Cow::Owned(format_time(ctx.received_at))),
    ];
    push_trace_headers(ctx.trace, false, &mut headers);
    headers
}
