//! What is refused before delivery, each with its status and reason.

use std::sync::Arc;

use super::*;

/// What is sent, with which settings, and the status and reason it must get.
type Case = (&'static str, Settings, TestRequest, u16, &'static str);

/// Requests wrong in themselves: signature, size, headers, method, path.
fn malformed() -> Vec<Case> {
    let mut small = settings();
    small.server.max_body_bytes = 1024;
    let zeros = || hex::encode([0u8; 32]);
    vec![
        (
            "no signature",
            settings(),
            TestRequest::post().uri(PATH).set_payload(EVENT),
            401,
            "missing_signature",
        ),
        (
            "signed over the body alone",
            settings(),
            signed(EVENT).insert_header(("X-Qminder-Signature", zeros())),
            401,
            "invalid_signature",
        ),
        (
            "not hex",
            settings(),
            signed(EVENT).insert_header(("X-Qminder-Signature", "zz")),
            401,
            "invalid_signature",
        ),
        (
            "too large by Content-Length",
            small,
            signed(&"x".repeat(2048)),
            413,
            "body_too_large",
        ),
        (
            "headers too large",
            settings(),
            signed(EVENT).insert_header(("x-padding", "p".repeat(17 * 1024))),
            431,
            "headers_too_large",
        ),
        (
            "unreadable Content-Length",
            settings(),
            signed(EVENT).insert_header(("content-length", "many")),
            400,
            "bad_request",
        ),
        (
            "not a POST",
            settings(),
            TestRequest::get().uri(PATH),
            405,
            "method_not_allowed",
        ),
        (
            "no endpoint there",
            settings(),
            TestRequest::post().uri("/elsewhere"),
            404,
            "not_found",
        ),
    ]
}

/// Requests refused by who sends them or what the bridge has room for.
fn unadmitted() -> Vec<Case> {
    let mut allowlisted = settings();
    allowlisted.server.allow_cidrs = vec!["10.0.0.0/8".into()];
    let mut no_slots = settings();
    no_slots.server.max_in_flight = 0;
    let mut no_body_room = settings();
    no_body_room.server.max_in_flight_body_bytes = EVENT.len() - 1;
    let mut unverified_short = settings();
    unverified_short.server.max_unverified_body_bytes = 100;
    let beyond_allowance = "x".repeat(crate::ingress::admission::ALLOWANCE_BYTES + 101);
    vec![
        (
            "from outside allow_cidrs",
            allowlisted,
            signed(EVENT),
            403,
            "ip_not_allowed",
        ),
        (
            "at max_in_flight",
            no_slots.clone(),
            signed(EVENT),
            503,
            "overloaded",
        ),
        (
            "a wrong signature never takes a max_in_flight slot: it is refused for itself",
            no_slots,
            signed(EVENT).insert_header(("X-Qminder-Signature", hex::encode([0u8; 32]))),
            401,
            "invalid_signature",
        ),
        (
            "no room for the body in max_in_flight_body_bytes",
            no_body_room,
            signed(EVENT),
            503,
            "overloaded",
        ),
        (
            "a body 101 bytes beyond its allowance, with room for 100 in max_unverified_body_bytes",
            unverified_short,
            signed(&beyond_allowance),
            503,
            "body_budget_exhausted",
        ),
    ]
}

#[actix_web::test]
async fn rejects_every_bad_request_before_delivery_with_its_status_and_reason() {
    for (what, settings, request, status, code) in malformed().into_iter().chain(unadmitted()) {
        let fake = FakeDelivery::answering(Vec::new());
        let (answer, metrics) = one(&settings, &fake, request).await;
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.body, serde_json::json!({ "error": code }), "{what}");
        assert!(fake.topics().is_empty(), "{what}: something was published");
        let endpoint = if code == "not_found" { "none" } else { PATH };
        let line = format!(
            r#"qminder_bridge_events_rejected_total{{endpoint="{endpoint}",reason="{code}"}} 1"#
        );
        assert!(count(&metrics, &line), "{what}: no {line}");
        assert_eq!(
            answer.headers.contains_key("retry-after"),
            status == 503,
            "{what}"
        );
    }
}

#[actix_web::test]
async fn refuses_new_webhooks_once_shutdown_began() {
    let fake = FakeDelivery::answering(Vec::new());
    let stopping = Arc::new(Stopping::default());
    stopping.begin();
    let (answers, _) = exchange(&settings(), &fake, stopping, vec![signed(EVENT)]).await;
    assert_eq!(answers[0].status, 503);
    assert_eq!(
        answers[0].body,
        serde_json::json!({ "error": "shutting_down" })
    );
    assert!(fake.topics().is_empty());
}
