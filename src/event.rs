//! Stage 3 of the data path: read a verified body as a Qminder event, without rewriting it.
//!
//! Qminder sends `{"type": "<event type>", "data": {...}}`. This stage finds the `type`, the
//! exact bytes of `data` (serde_json `RawValue`: number formats, key order, escapes and
//! whitespace survive), the entity id used as subject and key, and the occurrence time.
//! Field types are loose (ids are strings or numbers) and unknown fields are ignored.
//! A body that is not such an envelope is a [`Malformed`] event: it goes to the dead-letter
//! topic, never away. Pure: no actix, no rdkafka.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::signature::Verified;

/// The event types Qminder documents. Anything else is still published (to the unknown
/// topic); see [`EventKind`].
pub const KNOWN_EVENT_TYPES: [&str; 9] = [
    "location_created",
    "location_changed",
    "line_changed",
    "ticket_created",
    "ticket_called",
    "ticket_recalled",
    "ticket_changed",
    "ticket_served",
    "ticket_cancelled",
];

/// An authenticated, well-formed event. Borrows the request body; copies nothing.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The `type` member, as sent (unescaped).
    pub event_type: Cow<'a, str>,
    /// The exact bytes of the `data` member (after `[privacy]` rules, if any: see
    /// `privacy`).
    pub data: Cow<'a, str>,
    /// The entity id (ticket, line or location id) as a string, if `data.id` is a string
    /// or a number. `"7024061"` and `7024061` give the same key.
    pub entity_id: Option<Cow<'a, str>>,
    /// When it happened, per the payload (RFC 3339, as sent), if the payload says so.
    pub occurred_at: Option<&'a str>,
}

/// Why an authenticated body is not an event. Fixed codes: used in dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the body is not UTF-8 JSON")]
    NotJson,
    #[error(
        "the body is JSON but not an object with a non-empty string `type` and a `data` member"
    )]
    NotAnEnvelope,
}

impl Malformed {
    /// The code used in the dead-letter record's reason header and in metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::NotAnEnvelope => "not_an_envelope",
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// The few members of `data` the bridge looks at; everything else is left alone. All raw,
/// so that an unexpected type in one member cannot hide the others.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    called: Option<&'a RawValue>,
    #[serde(borrow)]
    served: Option<&'a RawValue>,
}

/// `created`, `called`, `served`: `{"date": "<RFC 3339>", ...}`.
#[derive(Deserialize)]
struct Stamp<'a> {
    #[serde(borrow)]
    date: &'a RawValue,
}

/// Reads a verified body as an event.
pub fn parse(verified: &Verified) -> Result<Event<'_>, Malformed> {
    let text = std::str::from_utf8(verified.body()).map_err(|_| Malformed::NotJson)?;
    // serde reads a struct from an array too, positionally: only an object is an envelope.
    let envelope: Option<Envelope<'_>> = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).ok()
    } else {
        None
    };
    let Some(envelope) = envelope else {
        // Why not: serde_json's first error does not tell (a type mismatch may come before
        // a syntax error further on), so ask whether it is JSON at all.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Malformed::NotAnEnvelope,
            Err(_) => Malformed::NotJson,
        });
    };
    if envelope.event_type.is_empty() {
        return Err(Malformed::NotAnEnvelope);
    }
    // `data` may be anything; only an object has an id and dates. Another shape (or a
    // field of an unexpected type) leaves them unknown rather than rejecting the event.
    // (serde would also read a struct from an array, positionally: only objects count.)
    let fields: Fields<'_> = if envelope.data.get().starts_with('{') {
        serde_json::from_str(envelope.data.get()).unwrap_or_default()
    } else {
        Fields::default()
    };
    let occurred_at = match &*envelope.event_type {
        "ticket_created" => fields.created,
        "ticket_called" | "ticket_recalled" => fields.called,
        "ticket_served" => fields.served,
        _ => None,
    }
    .and_then(stamp_date);
    Ok(Event {
        entity_id: fields.id.and_then(id_text),
        event_type: envelope.event_type,
        data: Cow::Borrowed(envelope.data.get()),
        occurred_at,
    })
}

/// `"7024061"` → `7024061`; `7024061` → `7024061`; anything else (null, object, empty
/// string) → no id.
fn id_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if text.starts_with('"') {
        let id: Cow<'_, str> = serde_json::from_str(text).ok()?;
        (!id.is_empty()).then_some(id)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(Cow::Borrowed(text))
    } else {
        None
    }
}

/// The `date` of a `{"date": ...}` object, if it is an RFC 3339 timestamp.
fn stamp_date(raw: &RawValue) -> Option<&str> {
    if !raw.get().starts_with('{') {
        return None;
    }
    let stamp: Stamp<'_> = serde_json::from_str(raw.get()).ok()?;
    rfc3339(stamp.date)
}

/// A JSON string holding an RFC 3339 timestamp, returned as sent; anything else → `None`.
fn rfc3339(raw: &RawValue) -> Option<&str> {
    let text = raw.get().strip_prefix('"')?.strip_suffix('"')?;
    // An escape inside would mean the raw text is not the value; no timestamp has one.
    if text.contains('\\') {
        return None;
    }
    OffsetDateTime::parse(text, &Rfc3339).ok().map(|_| text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{Signer, Verifier};
    use bytes::Bytes;

    fn verified(body: &str) -> Verified {
        let verifier = Verifier::new("https://example.com/hook", &["secret".into()]);
        let sig = Signer::new("https://example.com/hook", &"secret".into()).sign(body.as_bytes());
        verifier
            .verify(Some(sig.as_bytes()), Bytes::from(body.to_owned()))
            .unwrap()
    }

    #[test]
    fn keeps_the_data_member_byte_for_byte() {
        let cases = [
            // pretty-printed, with the spec's own example layout
            "{\n    \"id\": \"7024061\",\n    \"line\": 12345,\n    \"created\": {\n      \"date\": \"2020-05-25T00:00:00Z\"\n    }\n  }",
            // unicode, raw and escaped, and an escaped slash
            r#"{"id":1,"firstName":"Zoë","lastName":"\u00c5str\u00f6m","note":"a\/b 😀 \ud83d\ude00"}"#,
            // numbers beyond f64 and u64, exponent and trailing zeros
            r#"{"id":12345678901234567890,"phoneNumber":12125551234,"x":1.50,"y":1E+2,"z":-0.0}"#,
            // key order that a map would sort, and a duplicate-looking key
            r#"{"z":1,"a":2,"m":{"b":1,"a":2}}"#,
            // not an object at all
            r#"[1, 2 ,3]"#,
            "null",
        ];
        for data in cases {
            let body = format!("{{\"type\":\"ticket_created\",\"data\":{data}}}");
            let v = verified(&body);
            assert_eq!(parse(&v).unwrap().data, data);
        }
    }

    #[test]
    fn finds_type_subject_and_time_for_each_known_type() {
        let ticket = r#"{"id":"7024061","line":12345,"created":{"date":"2020-05-25T00:00:00Z"},
            "called":{"date":"2020-05-25T00:05:00.123Z","caller":1,"desk":2},
            "served":{"date":"2020-05-25T00:09:00+02:00"}}"#;
        let cases = [
            (
                "location_created",
                r#"{"id":123,"name":"HQ"}"#,
                Some("123"),
                None,
            ),
            (
                "location_changed",
                r#"{"id":"123","name":"HQ"}"#,
                Some("123"),
                None,
            ),
            (
                "line_changed",
                r#"{"id":12345,"name":"Info"}"#,
                Some("12345"),
                None,
            ),
            (
                "ticket_created",
                ticket,
                Some("7024061"),
                Some("2020-05-25T00:00:00Z"),
            ),
            (
                "ticket_called",
                ticket,
                Some("7024061"),
                Some("2020-05-25T00:05:00.123Z"),
            ),
            (
                "ticket_recalled",
                ticket,
                Some("7024061"),
                Some("2020-05-25T00:05:00.123Z"),
            ),
            ("ticket_changed", ticket, Some("7024061"), None),
            (
                "ticket_served",
                ticket,
                Some("7024061"),
                Some("2020-05-25T00:09:00+02:00"),
            ),
            ("ticket_cancelled", ticket, Some("7024061"), None),
        ];
        assert_eq!(cases.len(), KNOWN_EVENT_TYPES.len());
        for (event_type, data, id, time) in cases {
            let body = format!(r#"{{"type":"{event_type}","data":{data}}}"#);
            let v = verified(&body);
            let event = parse(&v).unwrap();
            assert_eq!(event.event_type, event_type);
            assert_eq!(event.entity_id.as_deref(), id, "{event_type}");
            assert_eq!(event.occurred_at, time, "{event_type}");
        }
    }

    #[test]
    fn keys_string_and_number_ids_alike_and_ignores_other_shapes() {
        let cases = [
            (r#"{"id":"42"}"#, Some("42")),
            (r#"{"id": 42 , "name":"x"}"#, Some("42")),
            (r#"{"id":42}"#, Some("42")),
            (r#"{"id":"4\u0032"}"#, Some("42")),
            (r#"{"id":""}"#, None),
            (r#"{"id":null}"#, None),
            (r#"{"id":{"x":1}}"#, None),
            (r#"{"id":true}"#, None),
            (r#"{"name":"no id"}"#, None),
            (
                r#"{"id":5,"created":"2020-05-25T00:00:00Z","called":[1],"served":7}"#,
                Some("5"),
            ),
            (r#""a string""#, None),
            (r#"["7"]"#, None),
            ("[7]", None),
        ];
        for (data, expected) in cases {
            let body = format!(r#"{{"type":"ticket_changed","data":{data}}}"#);
            let v = verified(&body);
            assert_eq!(parse(&v).unwrap().entity_id.as_deref(), expected, "{data}");
        }
    }

    #[test]
    fn ignores_a_date_that_is_not_rfc3339() {
        for date in [
            r#""yesterday""#,
            "1590364800",
            r#""2020-05-25 00:00:00""#,
            "null",
            "[]",
        ] {
            let body = format!(
                r#"{{"type":"ticket_created","data":{{"id":1,"created":{{"date":{date}}}}}}}"#
            );
            let v = verified(&body);
            assert_eq!(parse(&v).unwrap().occurred_at, None, "{date}");
        }
    }

    #[test]
    fn accepts_unknown_types_and_extra_members() {
        let v = verified(r#"{"type":"ticket_teleported","data":{"id":9},"version":2}"#);
        let event = parse(&v).unwrap();
        assert_eq!(event.event_type, "ticket_teleported");
        assert_eq!(event.entity_id.as_deref(), Some("9"));
    }

    #[test]
    fn calls_anything_but_an_envelope_malformed() {
        let cases = [
            ("", Malformed::NotJson),
            ("not json", Malformed::NotJson),
            (
                "{\"type\":\"ticket_created\",\"data\":{}",
                Malformed::NotJson,
            ),
            ("{\"type\":\"a\",\"data\":{}} trailing", Malformed::NotJson),
            ("[]", Malformed::NotAnEnvelope),
            ("{}", Malformed::NotAnEnvelope),
            ("{\"data\":{}}", Malformed::NotAnEnvelope),
            ("{\"type\":\"ticket_created\"}", Malformed::NotAnEnvelope),
            ("{\"type\":7,\"data\":{}}", Malformed::NotAnEnvelope),
            ("{\"type\":null,\"data\":{}}", Malformed::NotAnEnvelope),
            ("{\"type\":\"\",\"data\":{}}", Malformed::NotAnEnvelope),
            (
                "{\"type\":\"a\",\"type\":\"b\",\"data\":{}}",
                Malformed::NotAnEnvelope,
            ),
            // Found by fuzzing: an array was read positionally as an envelope, and the
            // reason followed serde_json's first error, wrong both ways.
            ("[\"ticket_created\",{\"id\":1}]", Malformed::NotAnEnvelope),
            ("9o", Malformed::NotJson),
            ("{\"type\":1e400,\"data\":1}", Malformed::NotAnEnvelope),
            ("{\"type\":7,\"data\":{} trailing", Malformed::NotJson),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(&verified(body)).unwrap_err(), expected, "{body:?}");
        }
        let not_utf8 = b"{\"type\":\"\xff\",\"data\":{}}";
        let verifier = Verifier::new("u", &["s".into()]);
        let sig = Signer::new("u", &"s".into()).sign(not_utf8);
        let v = verifier
            .verify(Some(sig.as_bytes()), Bytes::from_static(not_utf8))
            .unwrap();
        assert_eq!(parse(&v).unwrap_err(), Malformed::NotJson);
    }
}
