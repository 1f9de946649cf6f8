//! Every event record the tests read is checked against `docs/record.schema.json`, the
//! schema we publish for consumers.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::kafka::Received;

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(include_str!("../../../docs/record.schema.json"))
            .expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is valid")
    })
}

/// The CloudEvent a record carries, in JSON form, after checking it against the schema.
/// Structured mode: the value. Binary mode: `ce_*` headers plus the value as `data`.
pub fn checked_event(record: &Received) -> Value {
    let event = if record.headers.keys().any(|k| k.starts_with("ce_")) {
        from_binary(&record.headers, &record.value)
    } else {
        assert_eq!(
            record.headers.get("content-type").map(String::as_str),
            Some("application/cloudevents+json; charset=utf-8")
        );
        record.json()
    };
    if let Err(error) = validator().validate(&event) {
        panic!("record does not match docs/record.schema.json: {error}\n{event:#}");
    }
    event
}

fn from_binary(headers: &BTreeMap<String, String>, value: &[u8]) -> Value {
    let mut event = Map::new();
    for (key, v) in headers {
        if let Some(name) = key.strip_prefix("ce_") {
            event.insert(name.to_owned(), Value::String(v.clone()));
        }
    }
    if let Some(ct) = headers.get("content-type") {
        event.insert("datacontenttype".into(), Value::String(ct.clone()));
    }
    let data: Value = serde_json::from_slice(value).expect("binary-mode data is JSON");
    event.insert("data".into(), data);
    Value::Object(event)
}
