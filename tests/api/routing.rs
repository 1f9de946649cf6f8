//! Nothing authenticated is dropped: unknown types go to the unknown topic, bodies that are
//! not events to the dead-letter topic, and overrides are honoured.

use serde_json::Value;

use crate::helpers::schema::checked_event;
use crate::helpers::{PATH, SECRET, sign, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_an_unknown_event_type_to_the_unknown_topic() {
    let app = spawn_app().await;
    let body = r#"{"type":"ticket_teleported","data":{"id":"77","to":"Mars"}}"#;
    let response = app.post_signed(body).await;
    assert_eq!(response.status(), 200);
    let ack: Value = response.json().await.expect("ack");
    assert_eq!(ack["topic"], app.settings.kafka.unknown_topic());
    let record = app.record_for(&ack).await;
    let event = checked_event(&record);
    assert_eq!(event["type"], "com.qminder.ticket_teleported");
    assert_eq!(record.key_str(), Some("77"));
    assert_eq!(
        app.metric(&format!(
            r#"qminder_bridge_events_accepted_total{{endpoint="{PATH}",event_type="unknown"}}"#
        ))
        .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_an_authenticated_body_that_is_not_an_event_and_answers_202() {
    let app = spawn_app().await;
    let cases = [
        ("not JSON", "type=ticket_created&id=1", "not_json"),
        (
            "truncated JSON",
            r#"{"type":"ticket_created","data":{"#,
            "not_json",
        ),
        ("no type", r#"{"data":{"id":1}}"#, "not_an_envelope"),
        ("numeric type", r#"{"type":5,"data":{}}"#, "not_an_envelope"),
        ("no data", r#"{"type":"ticket_created"}"#, "not_an_envelope"),
        (
            "an array",
            r#"[{"type":"ticket_created","data":{}}]"#,
            "not_an_envelope",
        ),
    ];
    for (name, body, reason) in cases {
        let response = app.post_signed(body).await;
        assert_eq!(response.status(), 202, "{name}");
        let ack: Value = response.json().await.expect("ack");
        assert_eq!(
            ack["topic"],
            app.settings.kafka.dead_letter_topic(),
            "{name}"
        );
        assert_eq!(ack["dead_letter_reason"], reason, "{name}");
        let record = app.record_for(&ack).await;
        assert_eq!(record.value, body.as_bytes(), "{name}: raw bytes kept");
        assert_eq!(record.headers["qminder-bridge-reason"], reason);
        assert_eq!(
            record.headers["qminder-bridge-id"],
            ack["id"].as_str().expect("id")
        );
        assert_eq!(record.headers["qminder-bridge-source"], app.url());
    }
    // An unsigned body that is not an event is still just unauthenticated.
    assert_eq!(app.post(PATH, "garbage", None).await.status(), 401);
    let forged = sign("wrong", app.url(), b"garbage");
    assert_eq!(app.post(PATH, "garbage", Some(&forged)).await.status(), 401);
    // Each case was its own produce request (sent after the previous one's ack), and
    // tansu's watermarks count produce batches: so exactly one per case, none for the 401s.
    let published = app.published().await;
    assert_eq!(
        published,
        i64::try_from(cases.len()).expect("small"),
        "only the signed cases reached Kafka"
    );
    let _ = SECRET;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_per_type_topic_overrides() {
    let app = spawn_app_with(crate::helpers::broker::shared(), |s| {
        let custom = format!("{}.custom-created", s.kafka.topic_prefix);
        s.kafka.topics.insert("ticket_created".into(), custom);
        let moved = format!("{}.moved", s.kafka.topic_prefix);
        s.kafka.topics.insert("ticket_moved".into(), moved);
    })
    .await;
    for (event_type, topic) in [
        ("ticket_created", format!("{}.custom-created", app.prefix())),
        ("ticket_moved", format!("{}.moved", app.prefix())),
        ("ticket_served", app.topic("ticket_served")),
    ] {
        let body = format!(r#"{{"type":"{event_type}","data":{{"id":1}}}}"#);
        let ack: Value = app.post_signed(&body).await.json().await.expect("ack");
        assert_eq!(ack["topic"], topic.as_str(), "{event_type}");
        app.record_for(&ack).await;
    }
    app.stop().await;
}
