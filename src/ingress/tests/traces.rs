//! With `[telemetry]`: what trace context the records carry, and whose.

use super::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The `traceparent` of the record the one request in `request` produced.
async fn traceparent_of(settings: &Settings, request: TestRequest) -> Option<String> {
    let fake = FakeDelivery::answering(Vec::new());
    let (answer, _) = one(settings, &fake, request).await;
    assert_eq!(answer.status, 200);
    let records = fake.records.lock().unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&records[0].1).unwrap();
    envelope["traceparent"].as_str().map(str::to_owned)
}

fn with_a_callers_traceparent() -> TestRequest {
    signed(EVENT).insert_header((
        "traceparent",
        format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01"),
    ))
}

fn traced() -> Settings {
    let mut s = settings();
    s.telemetry.propagate_without_export = true;
    s
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, split.
fn parts(traceparent: &str) -> Vec<&str> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    assert_eq!(lengths, [2, 32, 16, 2], "{traceparent}");
    assert!(
        traceparent
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit())
    );
    parts
}

#[actix_web::test]
async fn a_trace_begins_at_the_bridge_and_the_record_carries_it() {
    let traceparent = traceparent_of(&traced(), signed(EVENT))
        .await
        .expect("a traceparent");
    let parts = parts(&traceparent);
    assert_eq!((parts[0], parts[3]), ("00", "01"), "sampled by default");
    assert_ne!(parts[1], "0".repeat(32));
}

#[actix_web::test]
async fn a_callers_traceparent_is_believed_only_from_a_trusted_proxy() {
    let untrusted = traceparent_of(&traced(), with_a_callers_traceparent())
        .await
        .unwrap();
    assert_ne!(
        parts(&untrusted)[1],
        CALLER_TRACE,
        "anyone could pick our trace ids"
    );
    let mut behind_a_proxy = traced();
    behind_a_proxy.server.trusted_proxies = vec!["127.0.0.1".into()];
    let trusted = traceparent_of(&behind_a_proxy, with_a_callers_traceparent())
        .await
        .unwrap();
    let parts = parts(&trusted);
    assert_eq!(parts[1], CALLER_TRACE);
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the record's span is the bridge's own"
    );
}

#[actix_web::test]
async fn an_unsampled_request_still_carries_its_context_with_flags_00() {
    let mut s = traced();
    s.telemetry.sampler = Some("always_off".into());
    let traceparent = traceparent_of(&s, signed(EVENT)).await.unwrap();
    assert_eq!(parts(&traceparent)[3], "00");
}

#[actix_web::test]
async fn without_telemetry_records_carry_no_context() {
    assert_eq!(
        traceparent_of(&settings(), with_a_callers_traceparent()).await,
        None
    );
}
