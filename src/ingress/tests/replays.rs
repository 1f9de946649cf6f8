//! `[dedupe]` and per-route counting.

use std::sync::Arc;

use super::*;

#[actix_web::test]
async fn answers_a_replayed_event_with_its_first_acknowledgement_without_publishing_again() {
    let mut s = settings();
    s.dedupe.enabled = true;
    let fake = FakeDelivery::answering(Vec::new());
    let (answers, metrics) = exchange(
        &s,
        &fake,
        Arc::default(),
        vec![signed(EVENT), signed(EVENT)],
    )
    .await;
    assert_eq!((answers[0].status, answers[1].status), (200, 200));
    assert_eq!(answers[1].body["duplicate"], true);
    assert_eq!(answers[0].body["offset"], answers[1].body["offset"]);
    assert_eq!(fake.topics().len(), 1);
    assert!(count(
        &metrics,
        r#"qminder_bridge_events_deduplicated_total{endpoint="/hook"} 1"#
    ));
}

#[actix_web::test]
async fn does_not_remember_a_failed_delivery_so_the_retry_is_published() {
    let mut s = settings();
    s.dedupe.enabled = true;
    let fake = FakeDelivery::answering(vec![Err(DeliveryError::Timeout)]);
    let (answers, _) = exchange(
        &s,
        &fake,
        Arc::default(),
        vec![signed(EVENT), signed(EVENT)],
    )
    .await;
    assert_eq!((answers[0].status, answers[1].status), (503, 200));
    assert!(answers[1].body.get("duplicate").is_none());
    assert_eq!(fake.topics().len(), 2);
}

#[actix_web::test]
async fn a_replayed_dead_letter_gets_its_first_answer() {
    let mut s = settings();
    s.dedupe.enabled = true;
    let fake = FakeDelivery::answering(Vec::new());
    let body = "not json";
    let (answers, _) = exchange(&s, &fake, Arc::default(), vec![signed(body), signed(body)]).await;
    assert_eq!((answers[0].status, answers[1].status), (202, 202));
    assert_eq!(
        answers[0].body["dead_letter_reason"],
        answers[1].body["dead_letter_reason"]
    );
    assert_eq!(fake.topics().len(), 1);
}

#[actix_web::test]
async fn counts_each_route_under_its_own_topic_even_an_override_named_like_a_fallback_label() {
    let mut s = settings();
    s.kafka
        .topics
        .insert("unknown".into(), "custom.unknown".into());
    let fake = FakeDelivery::answering(Vec::new());
    let requests = vec![
        signed(r#"{"type":"unknown","data":{"id":"1"}}"#),
        signed(r#"{"type":"ticket_teleported","data":{"id":"2"}}"#),
    ];
    let (answers, metrics) = exchange(&s, &fake, Arc::default(), requests).await;
    assert_eq!(answers[0].body["topic"], "custom.unknown");
    assert_eq!(answers[1].body["topic"], "qminder.unknown");
    for topic in ["custom.unknown", "qminder.unknown"] {
        let line = format!(
            r#"qminder_bridge_events_forwarded_total{{event_type="unknown",topic="{topic}"}} 1"#
        );
        assert!(count(&metrics, &line), "no {line}");
    }
}
