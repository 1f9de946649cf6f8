//! What operators watch: `/metrics` counts exactly what happened; probes answer.

use std::time::Duration;

use crate::helpers::{PATH, SECRET, sign, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_sent() {
    let app = spawn_app().await;
    let sends = [
        (r#"{"type":"ticket_created","data":{"id":1}}"#, 200),
        (r#"{"type":"ticket_created","data":{"id":2}}"#, 200),
        (r#"{"type":"line_changed","data":{"id":3}}"#, 200),
        (r#"{"type":"brand_new","data":{"id":4}}"#, 200),
        ("not an event", 202),
    ];
    for (body, status) in sends {
        assert_eq!(app.post_signed(body).await.status(), status, "{body}");
    }
    let forged = sign("not-the-secret", app.url(), b"{}");
    for _ in 0..3 {
        assert_eq!(app.post(PATH, "{}", Some(&forged)).await.status(), 401);
    }
    assert_eq!(app.post(PATH, "{}", None).await.status(), 401);

    let accepted = |t: &str| {
        format!(r#"qminder_bridge_events_accepted_total{{endpoint="{PATH}",event_type="{t}"}}"#)
    };
    let forwarded = |t: &str, topic: &str| {
        format!(r#"qminder_bridge_events_forwarded_total{{event_type="{t}",topic="{topic}"}}"#)
    };
    let rejected = |r: &str| {
        format!(r#"qminder_bridge_events_rejected_total{{endpoint="{PATH}",reason="{r}"}}"#)
    };
    let k = &app.settings.kafka;
    let expectations = [
        (accepted("ticket_created"), 2.0),
        (accepted("line_changed"), 1.0),
        (accepted("ticket_served"), 0.0),
        (accepted("unknown"), 1.0),
        (accepted("malformed"), 1.0),
        (
            forwarded("ticket_created", &app.topic("ticket_created")),
            2.0,
        ),
        (forwarded("line_changed", &app.topic("line_changed")), 1.0),
        (forwarded("unknown", &k.unknown_topic()), 1.0),
        (forwarded("malformed", &k.dead_letter_topic()), 1.0),
        (rejected("invalid_signature"), 3.0),
        (rejected("missing_signature"), 1.0),
        (rejected("body_too_large"), 0.0),
        (
            r#"qminder_bridge_events_failed_total{event_type="ticket_created",reason="timeout"}"#
                .to_owned(),
            0.0,
        ),
        (
            format!(r#"qminder_bridge_request_duration_seconds_count{{endpoint="{PATH}"}}"#),
            9.0,
        ),
        (
            "qminder_bridge_kafka_delivery_duration_seconds_count".to_owned(),
            5.0,
        ),
        ("qminder_bridge_requests_in_flight".to_owned(), 0.0),
        ("qminder_bridge_producer_restarts_total".to_owned(), 0.0),
        ("qminder_bridge_ready".to_owned(), 1.0),
    ];
    for (series, value) in expectations {
        assert_eq!(app.metric(&series).await, value, "{series}");
    }
    assert_eq!(app.published().await, 5);
    let text = app.metrics().await;
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(!text.contains(SECRET));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_live_without_a_broker_but_ready_only_with_one() {
    // A fresh connection per probe, as the kubelet's probes make. (CI runs got hyper's
    // UnexpectedMessage here: actix's 408 on a connection whose request the client had not
    // written yet, because the bridge's broker probe, creating topics on this test's
    // runtime, held one of its two threads for 5 s in a blocking metadata request, and the
    // client's connection task waited behind it. Now that request runs on the blocking
    // pool: `delivery/kafka/topics.rs`.)
    async fn probe(app: &crate::helpers::TestApp, path: &str) -> u16 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("a client");
        let answer = client.get(format!("{}{path}", app.address)).send();
        answer.await.expect(path).status().as_u16()
    }
    let app = spawn_app().await;
    assert_eq!(probe(&app, "/healthz").await, 200);
    assert_eq!(probe(&app, "/readyz").await, 200);
    app.stop().await;

    // Nothing listens on this port: alive, and not ready over many health checks.
    let nowhere = crate::helpers::broker::DeadAddress::new();
    let app = crate::helpers::spawn_app_unready(nowhere.as_str(), |_| {}).await;
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        assert_eq!(probe(&app, "/healthz").await, 200);
        assert_eq!(probe(&app, "/readyz").await, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_statistics_show_on_metrics_after_traffic() {
    let app = crate::helpers::spawn_app_with(crate::helpers::broker::shared(), |s| {
        s.kafka.statistics_interval_ms = 200;
    })
    .await;
    for id in 0..20 {
        let body = crate::helpers::traffic::ticket_created(id);
        assert_eq!(app.post_signed(&body).await.status(), 200);
    }
    let topic = app.topic("ticket_created");
    let batch = format!(r#"qminder_bridge_kafka_batch_messages{{topic="{topic}"}} "#);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = app.metrics().await;
        // A report after the traffic: the topic's batches are in it, and a round trip
        // (present for an interval in which the broker was asked something).
        if text
            .lines()
            .any(|l| l.starts_with(&batch) && !l.ends_with(" 0"))
            && text.contains("qminder_bridge_kafka_broker_rtt_seconds{broker=\"")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no statistics report with {topic}'s batches in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .parse()
            .expect("a number")
    };
    assert!(value("qminder_bridge_kafka_queue_max_messages ") > 0.0);
    assert!(value("qminder_bridge_kafka_queue_max_bytes ") > 0.0);
    // tansu is one broker, node id 0 or more; the bootstrap entry (-1) is left out.
    assert!(value(r#"qminder_bridge_kafka_broker_connects_total{broker=""#) >= 1.0);
    assert!(value(r#"qminder_bridge_kafka_broker_rtt_seconds{broker=""#) >= 0.0);
    assert!(value(r#"qminder_bridge_kafka_broker_requests_in_flight{broker=""#) >= 0.0);
    assert!(
        !text.contains(r#"broker="-1""#),
        "bootstrap entries are not brokers"
    );
    assert!(
        text.lines()
            .filter(|l| l.starts_with("qminder_bridge_kafka_batch_messages{"))
            .all(|l| app
                .topics()
                .iter()
                .any(|t| l.contains(&format!("topic=\"{t}\"")))),
        "batch sizes only for configured topics:\n{text}"
    );
    app.stop().await;
}
