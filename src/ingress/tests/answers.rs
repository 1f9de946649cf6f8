//! The answers to authenticated events: 2xx, and each delivery failure's row.

use super::*;

#[actix_web::test]
async fn answers_an_acknowledged_event_200_with_where_kafka_put_it() {
    let fake = FakeDelivery::answering(vec![Ok(Delivered::Kafka {
        partition: 2,
        offset: 41,
    })]);
    let (answer, metrics) = one(&settings(), &fake, signed(EVENT)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["topic"], "qminder.ticket_created");
    assert_eq!(
        (
            answer.body["partition"].as_i64(),
            answer.body["offset"].as_i64()
        ),
        (Some(2), Some(41))
    );
    assert_eq!(answer.body["id"].as_str().map(str::len), Some(64));
    assert_eq!(fake.topics(), ["qminder.ticket_created"]);
    let value = fake.records.lock().unwrap()[0].1.clone();
    let value = String::from_utf8(value).unwrap();
    assert!(
        value.ends_with(r#","data":{"id":"7024061","line":1}}"#),
        "the request's data bytes, unchanged, at the end of the CloudEvent: {value}"
    );
    assert!(count(
        &metrics,
        r#"qminder_bridge_events_forwarded_total{event_type="ticket_created",topic="qminder.ticket_created"} 1"#
    ));
}

#[actix_web::test]
async fn answers_a_spooled_event_202_with_its_sequence_number() {
    let fake = FakeDelivery::answering(vec![Ok(Delivered::Spooled { sequence: 9 })]);
    let (answer, _) = one(&settings(), &fake, signed(EVENT)).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body["spooled"], true);
    assert_eq!(answer.body["sequence"], 9);
    assert!(answer.body.get("partition").is_none());
}

#[actix_web::test]
async fn sends_an_authenticated_body_that_is_not_an_event_to_the_dead_letter_topic_202() {
    let fake = FakeDelivery::answering(Vec::new());
    let (answer, _) = one(&settings(), &fake, signed(r#"{"no":"type"}"#)).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body["topic"], "qminder.deadletter");
    assert!(answer.body["dead_letter_reason"].is_string());
    assert_eq!(fake.topics(), ["qminder.deadletter"]);
}

#[actix_web::test]
async fn sends_an_unknown_event_type_to_the_unknown_topic() {
    let fake = FakeDelivery::answering(Vec::new());
    let body = r#"{"type":"ticket_teleported","data":{"id":1}}"#;
    let (answer, _) = one(&settings(), &fake, signed(body)).await;
    assert_eq!(
        (answer.status, answer.body["topic"].as_str()),
        (200, Some("qminder.unknown"))
    );
}

#[actix_web::test]
async fn answers_every_delivery_failure_with_its_row_and_counts_its_reason() {
    // (failure, status, code, reason): 503 + Retry-After where sending again can help, a
    // final 413 / 422 where Kafka will never take the record.
    let cases = [
        (DeliveryError::Timeout, 503, "kafka_timeout", "timeout"),
        (
            DeliveryError::QueueFull,
            503,
            "kafka_unavailable",
            "queue_full",
        ),
        (
            DeliveryError::Refused("x".into()),
            503,
            "kafka_unavailable",
            "refused",
        ),
        (
            DeliveryError::TooLarge("x".into()),
            413,
            "record_too_large",
            "too_large",
        ),
        (
            DeliveryError::Unacceptable("x".into()),
            422,
            "record_unacceptable",
            "unacceptable",
        ),
        (
            DeliveryError::Unavailable,
            503,
            "kafka_unavailable",
            "unavailable",
        ),
        (DeliveryError::SpoolFull, 503, "spool_full", "spool_full"),
        (
            DeliveryError::SpoolUnavailable("disk".into()),
            503,
            "spool_unavailable",
            "spool_error",
        ),
        (
            DeliveryError::SpoolTimeout,
            503,
            "spool_unavailable",
            "spool_timeout",
        ),
    ];
    for (error, status, code, reason) in cases {
        let fake = FakeDelivery::answering(vec![Err(error.clone())]);
        let (answer, metrics) = one(&settings(), &fake, signed(EVENT)).await;
        assert_eq!(answer.status, status, "{error:?}");
        assert_eq!(
            answer.body,
            serde_json::json!({ "error": code }),
            "{error:?}"
        );
        let retry = answer.headers.get("retry-after");
        assert_eq!(retry.is_some(), status == 503, "{error:?}");
        let line = format!(
            r#"qminder_bridge_events_failed_total{{event_type="ticket_created",reason="{reason}"}} 1"#
        );
        assert!(count(&metrics, &line), "{error:?}: no {line}");
    }
}

#[actix_web::test]
async fn a_record_kafka_will_never_accept_leaves_a_stub_in_the_dead_letter_topic() {
    let fake = FakeDelivery::answering(vec![Err(DeliveryError::TooLarge("x".into()))]);
    let (answer, _) = one(&settings(), &fake, signed(EVENT)).await;
    assert_eq!(answer.status, 413);
    let records = fake.records.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "the refused record, then its stub");
    assert_eq!(records[1].0, "qminder.deadletter");
    let stub: serde_json::Value = serde_json::from_slice(&records[1].1).unwrap();
    assert_eq!(stub["reason"], "record_too_large");
    assert_eq!(stub["event_type"], "ticket_created");
    assert_eq!(stub["topic"], "qminder.ticket_created");
    assert_eq!(stub["bytes"], records[0].1.len());
    assert_eq!(stub["id"].as_str().map(str::len), Some(64));
}
