//! Issue 20, row 3, on a real broker: in spool mode, one topic Kafka does not have (a new
//! event type's topic, `create_topics = false`) holds up no other topic; its event waits
//! aside, and follows once the topic is created.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::kafka;
use crate::helpers::spawn_app_with;
use crate::helpers::traffic::ticket_created;

const NEW_TYPE: &str = r#"{"type":"ticket_teleported","data":{"id":"77"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_holds_up_no_other_and_follows_once_created() {
    let bootstrap = crate::helpers::broker::shared();
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spawn_app_with(bootstrap, |s| {
        s.spool.enabled = true;
        s.spool.dir = dir.path().to_owned();
        s.kafka.delivery_timeout_ms = 1500;
        s.server.request_timeout_ms = 3000;
        all_topics_but_unknown(s, bootstrap);
    })
    .await;
    let missing = app.topic("unknown");
    assert_eq!(app.post_signed(NEW_TYPE).await.status(), 202);
    let mut ids = HashSet::new();
    for i in 0..5 {
        let response = app.post_signed(&ticket_created(i)).await;
        assert_eq!(response.status(), 202);
        let ack: serde_json::Value = response.json().await.expect("ack");
        ids.insert(ack["id"].as_str().expect("id").to_owned());
    }
    let created = app.topic("ticket_created");
    kafka::wait_for_ids(bootstrap, &created, &ids, Duration::from_secs(30)).await;
    let held = format!(r#"qminder_bridge_spool_held_events{{topic="{missing}"}}"#);
    wait_metric(&app, &held, 1.0).await;
    wait_metric(&app, "qminder_bridge_spool_events", 0.0).await;
    // Let the stuck event be tried a few times more, then count what reached the topic up
    // to one more event (one partition: in order).
    while failures(&app).await < 4.0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = app.post_signed(&ticket_created(5)).await;
    let last: serde_json::Value = last.json().await.expect("ack");
    let last = last["id"].as_str().expect("id").to_owned();
    let (b, t) = (bootstrap.to_owned(), created.clone());
    let records = tokio::task::spawn_blocking(move || {
        kafka::read_until(&b, &t, Duration::from_secs(30), |records| {
            records.iter().any(|r| r.json()["id"] == last.as_str())
        })
    })
    .await
    .expect("reader");
    assert_eq!(
        records.len(),
        6,
        "each event once (before: all behind the stuck one went out again on every retry)"
    );

    kafka::create_topics(bootstrap, std::slice::from_ref(&missing), &[]);
    wait_metric(&app, &held, 0.0).await;
    let got = kafka::read_at(bootstrap, &missing, 0, 0);
    assert!(got.value_str().contains("ticket_teleported"), "{got:?}");
    app.stop().await;
}

/// Makes every routed topic but the one unknown event types go to, and tells the bridge
/// not to make topics itself.
fn all_topics_but_unknown(s: &mut qminder_bridge::config::Settings, bootstrap: &str) {
    s.kafka.create_topics = false;
    let unknown = s.kafka.unknown_topic();
    let topics: Vec<String> = s.kafka.router().topics();
    let present: Vec<String> = topics.into_iter().filter(|t| *t != unknown).collect();
    kafka::create_topics(bootstrap, &present, &[]);
}

/// Forwarding attempts Kafka did not acknowledge, whatever the reason.
async fn failures(app: &crate::helpers::TestApp) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("qminder_bridge_spool_forward_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `series` until it reads `want` (at most 60 s).
async fn wait_metric(app: &crate::helpers::TestApp, series: &str, want: f64) {
    app.wait_for_metric(series, want, Duration::from_secs(60))
        .await;
}

/// A routed topic the broker does not have while `create_topics = false` is a warning and
/// a metric (with an alert on it), never a readiness failure: one missing topic must not
/// take the whole bridge out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_routed_topic_is_counted_not_a_readiness_failure() {
    let bootstrap = crate::helpers::broker::shared();
    let app = spawn_app_with(bootstrap, |s| {
        all_topics_but_unknown(s, bootstrap);
    })
    .await;
    wait_metric(&app, "qminder_bridge_kafka_topics_missing", 1.0).await;
    assert_eq!(app.readyz().await, 200);
    assert_eq!(app.post_signed(&ticket_created(1)).await.status(), 200);
    app.stop().await;
}
