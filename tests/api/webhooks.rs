//! A signed webhook becomes one CloudEvent record on its type's topic, answered 200 only
//! with Kafka's partition and offset.

use serde_json::Value;

use crate::helpers::schema::checked_event;
use crate::helpers::{PATH, SECRET, sign, spawn_app, spawn_app_with};

/// A Qminder ticket as its docs show it, pretty-printed the way Qminder's example is.
const TICKET: &str = r#"{
    "id": "7024061",
    "status": "NEW",
    "source": "MANUAL",
    "line": 12345,
    "firstName": "Jane",
    "lastName": "Eyre",
    "phoneNumber": 12125551234,
    "email": "jane@example.com",
    "created": {
      "date": "2020-05-25T00:00:00Z"
    },
    "called": {"date": "2020-05-25T00:05:00.250Z", "caller": 77, "desk": 3},
    "served": {"date": "2020-05-25T02:09:00+02:00"},
    "extra": [
      {
        "title": "Repeat visitor?",
        "value": "Yes"
      }
    ]
  }"#;

/// (type, data, expected key/subject, expected time or None for "receive time")
const EVENTS: [(&str, &str, &str, Option<&str>); 9] = [
    (
        "location_created",
        r#"{"id": 4321, "name": "Main office"}"#,
        "4321",
        None,
    ),
    (
        "location_changed",
        r#"{"id": "4321", "name": "Main office (moved)"}"#,
        "4321",
        None,
    ),
    (
        "line_changed",
        r#"{"id": 12345, "name": "Information"}"#,
        "12345",
        None,
    ),
    (
        "ticket_created",
        TICKET,
        "7024061",
        Some("2020-05-25T00:00:00Z"),
    ),
    (
        "ticket_called",
        TICKET,
        "7024061",
        Some("2020-05-25T00:05:00.250Z"),
    ),
    (
        "ticket_recalled",
        TICKET,
        "7024061",
        Some("2020-05-25T00:05:00.250Z"),
    ),
    ("ticket_changed", TICKET, "7024061", None),
    (
        "ticket_served",
        TICKET,
        "7024061",
        Some("2020-05-25T02:09:00+02:00"),
    ),
    ("ticket_cancelled", TICKET, "7024061", None),
];

fn envelope(event_type: &str, data: &str) -> String {
    format!("{{\n  \"type\": \"{event_type}\",\n  \"data\": {data}\n}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_each_known_event_type_to_its_own_topic_as_a_cloudevent() {
    let app = spawn_app().await;
    for (event_type, data, key, time) in EVENTS {
        let body = envelope(event_type, data);
        let response = app.post_signed(&body).await;
        assert_eq!(response.status(), 200, "{event_type}");
        let ack: Value = response.json().await.expect("a JSON ack");
        assert_eq!(ack["topic"], app.topic(event_type));

        let record = app.record_for(&ack).await;
        assert_eq!(record.topic, app.topic(event_type));
        assert_eq!(
            i64::from(record.partition),
            ack["partition"].as_i64().expect("partition")
        );
        assert_eq!(record.offset, ack["offset"].as_i64().expect("offset"));
        assert_eq!(record.key_str(), Some(key), "{event_type}");
        let event = checked_event(&record);
        assert_eq!(event["id"], ack["id"]);
        assert_eq!(event["type"], format!("com.qminder.{event_type}"));
        assert_eq!(event["source"], app.url());
        assert_eq!(event["subject"], key);
        assert_eq!(event["partitionkey"], key);
        if let Some(time) = time {
            assert_eq!(event["time"], time, "{event_type}");
        }
        // The data member's bytes, spliced in unchanged.
        assert!(
            record.value_str().ends_with(&format!("\"data\":{data}}}")),
            "{event_type}: {}",
            record.value_str()
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_data_member_byte_for_byte() {
    let app = spawn_app().await;
    let data = "{\"id\":\"9\",  \"firstName\":\"Zoë\",\"lastName\":\"\\u00c5str\\u00f6m \\ud83d\\ude00\",\n\
                \"phoneNumber\":\"+3725551234\", \"big\": 123456789012345678901, \"f\": 1.10, \"e\": 1E+2, \"z\":{\"b\":1,\"a\":2}}";
    let response = app.post_signed(&envelope("ticket_changed", data)).await;
    assert_eq!(response.status(), 200);
    let record = app.record_for(&response.json().await.expect("ack")).await;
    checked_event(&record);
    let value = record.value_str();
    let start = value.find("\"data\":").expect("a data member") + "\"data\":".len();
    assert_eq!(&value[start..value.len() - 1], data);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_attributes_in_ce_headers_and_data_in_the_value_in_binary_mode() {
    let app = spawn_app_with(crate::helpers::broker::shared(), |s| {
        s.kafka.record_format = qminder_bridge::record::RecordFormat::Binary;
    })
    .await;
    let response = app.post_signed(&envelope("ticket_served", TICKET)).await;
    assert_eq!(response.status(), 200);
    let ack: Value = response.json().await.expect("ack");
    let record = app.record_for(&ack).await;
    assert_eq!(record.value_str(), TICKET);
    assert_eq!(record.key_str(), Some("7024061"));
    let h = &record.headers;
    assert_eq!(h["ce_specversion"], "1.0");
    assert_eq!(h["ce_id"], ack["id"].as_str().expect("id"));
    assert_eq!(h["ce_type"], "com.qminder.ticket_served");
    assert_eq!(h["ce_subject"], "7024061");
    assert_eq!(h["ce_time"], "2020-05-25T02:09:00+02:00");
    assert_eq!(h["content-type"], "application/json");
    checked_event(&record);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_a_redelivered_webhook_the_same_id_and_another_webhook_another() {
    let app = spawn_app().await;
    let body = envelope("ticket_called", TICKET);
    let mut acks = Vec::new();
    for body in [&body, &body, &envelope("ticket_recalled", TICKET)] {
        let response = app.post_signed(body).await;
        assert_eq!(response.status(), 200);
        acks.push(response.json::<Value>().await.expect("ack"));
    }
    let [first, again, other] = &acks[..] else {
        unreachable!("three posts")
    };
    assert_eq!(first["id"], again["id"]);
    assert_ne!(first["id"], other["id"]);
    // Both deliveries are in Kafka (the core does not de-duplicate): consumers can.
    assert_ne!(first["offset"], again["offset"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_string_and_number_ids_alike_so_one_tickets_events_stay_in_one_partition() {
    let app = spawn_app().await;
    let mut partitions = Vec::new();
    let mut offsets = Vec::new();
    for (i, id) in ["\"1001\"", "1001", "\"1001\"", "1001"].iter().enumerate() {
        let data = format!(r#"{{"id": {id}, "status": "NEW", "n": {i}}}"#);
        let ack: Value = app
            .post_signed(&envelope("ticket_changed", &data))
            .await
            .json()
            .await
            .expect("ack");
        let record = app.record_for(&ack).await;
        assert_eq!(record.key_str(), Some("1001"));
        partitions.push(ack["partition"].as_i64().expect("partition"));
        offsets.push(ack["offset"].as_i64().expect("offset"));
    }
    assert!(
        partitions.windows(2).all(|w| w[0] == w[1]),
        "{partitions:?}"
    );
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "in order: {offsets:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_several_endpoints_each_with_its_own_url_secrets_and_source() {
    let app = spawn_app_with(crate::helpers::broker::shared(), |s| {
        s.endpoints.push(qminder_bridge::config::EndpointSettings {
            path: "/webhooks/branch-b".into(),
            url: "https://b.example.com/hook".into(),
            secrets: vec![
                qminder_bridge::secret::SecretSpec::parse("old-secret-of-branch-b"),
                qminder_bridge::secret::SecretSpec::parse("new-secret-of-branch-b"),
            ],
            source: Some("qminder://branch-b".into()),
            qminder: None,
            registrations: Vec::new(),
        });
    })
    .await;
    let body = envelope("line_changed", r#"{"id": 5, "name": "B"}"#);
    for secret in ["old-secret-of-branch-b", "new-secret-of-branch-b"] {
        let signature = sign(secret, "https://b.example.com/hook", body.as_bytes());
        let response = app
            .post("/webhooks/branch-b", &body, Some(&signature))
            .await;
        assert_eq!(response.status(), 200, "signed with {secret}");
        let record = app.record_for(&response.json().await.expect("ack")).await;
        assert_eq!(checked_event(&record)["source"], "qminder://branch-b");
    }
    // One endpoint's signature is worthless on the other.
    let for_b = sign(
        "new-secret-of-branch-b",
        "https://b.example.com/hook",
        body.as_bytes(),
    );
    assert_eq!(app.post(PATH, &body, Some(&for_b)).await.status(), 401);
    let for_a = sign(SECRET, app.url(), body.as_bytes());
    assert_eq!(
        app.post("/webhooks/branch-b", &body, Some(&for_a))
            .await
            .status(),
        401
    );
    app.stop().await;
}
