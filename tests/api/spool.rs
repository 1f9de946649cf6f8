//! Spool mode against a real broker: 202 once durable, forwarded in the background, through
//! a frozen broker and through SIGKILL; 503 when the spool is full.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use qminder_bridge::config::Settings;
use serde_json::Value;

use crate::helpers::broker::Tansu;
use crate::helpers::kafka;
use crate::helpers::process::BridgeProcess;
use crate::helpers::spawn_app_with;

fn spool_on(dir: &std::path::Path) -> impl FnOnce(&mut Settings) + '_ {
    move |s: &mut Settings| {
        s.spool.enabled = true;
        s.spool.dir = dir.to_owned();
        s.kafka.delivery_timeout_ms = 1500;
        s.server.request_timeout_ms = 3000;
        s.server.shutdown_timeout_ms = 5000;
    }
}

fn ticket(i: usize) -> String {
    format!(
        r#"{{"type":"ticket_created","data":{{"id":"{i}","created":{{"date":"2020-05-25T00:00:00Z"}}}}}}"#
    )
}

/// Waits until `topic` holds records with every id in `ids`.
async fn wait_in_kafka(bootstrap: &str, topic: &str, ids: &HashSet<String>) {
    kafka::wait_for_ids(bootstrap, topic, ids, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_202_once_spooled_and_keeps_answering_while_the_broker_is_frozen() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spawn_app_with(&broker.bootstrap(), spool_on(dir.path())).await;
    let mut ids = HashSet::new();
    let response = app.post_signed(&ticket(0)).await;
    assert_eq!(response.status(), 202);
    let ack: Value = response.json().await.expect("ack");
    assert_eq!(ack["spooled"], true);
    assert_eq!(ack["topic"], app.topic("ticket_created"));
    ids.insert(ack["id"].as_str().expect("id").to_owned());

    broker.freeze();
    for i in 1..20 {
        let started = Instant::now();
        let response = app.post_signed(&ticket(i)).await;
        assert_eq!(response.status(), 202, "spooled while Kafka is frozen");
        assert!(started.elapsed() < Duration::from_secs(1));
        let ack: Value = response.json().await.expect("ack");
        ids.insert(ack["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        app.readyz().await,
        200,
        "readiness follows the spool, not Kafka"
    );
    // The 19 posted while Kafka is frozen are all still in the spool (and maybe the first).
    assert!(app.metric("qminder_bridge_spool_events").await >= 19.0);
    broker.thaw();
    wait_in_kafka(&app.bootstrap, &app.topic("ticket_created"), &ids).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.metric("qminder_bridge_spool_events").await != 0.0 {
        assert!(Instant::now() < deadline, "the spool never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.metric("qminder_bridge_spool_forwarded_total").await >= 20.0);
    assert_eq!(
        app.metric("qminder_bridge_spool_oldest_age_seconds").await,
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_reaches_kafka_after_a_sigkill_and_a_restart() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("spool dir");
    let bridge = BridgeProcess::start(&broker.bootstrap(), spool_on(dir.path()));
    bridge.wait_ready(Duration::from_secs(30)).await;
    let settings = bridge.settings.clone();
    // Kafka is frozen: nothing can be forwarded before the kill.
    broker.freeze();
    let mut ids = HashSet::new();
    for i in 0..30 {
        let (status, ack) = bridge.post_signed(&ticket(i)).await;
        assert_eq!(status, 202);
        ids.insert(ack["id"].as_str().expect("id").to_owned());
    }
    bridge.kill();
    broker.thaw();

    let restarted = BridgeProcess::launch(settings);
    restarted.wait_ready(Duration::from_secs(30)).await;
    let topic = format!("{}.ticket_created", restarted.settings.kafka.topic_prefix);
    wait_in_kafka(&broker.bootstrap(), &topic, &ids).await;
    // The counter moves when Kafka's ack reaches the forwarder, just after the records
    // become readable: wait for it, and want exactly the 30 the killed process spooled.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", restarted.address))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let replayed: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("qminder_bridge_spool_replayed_total "))
            .expect("the replayed counter")
            .parse()
            .expect("a number");
        if replayed == 30.0 {
            break;
        }
        assert!(
            replayed < 30.0 && Instant::now() < deadline,
            "replayed {replayed}, want the 30 the killed process had spooled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_when_the_spool_is_full_and_202_again_once_it_drains() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spawn_app_with(&broker.bootstrap(), |s| {
        spool_on(dir.path())(s);
        s.server.max_body_bytes = 2048;
        s.spool.segment_bytes = 64 * 1024;
        s.spool.max_bytes = 300 * 1024;
    })
    .await;
    broker.freeze();
    let mut accepted = 0;
    let full = loop {
        let response = app.post_signed(&ticket(accepted)).await;
        match response.status().as_u16() {
            202 => accepted += 1,
            503 => break response,
            other => panic!("unexpected {other}"),
        }
        assert!(accepted < 10_000, "the spool never filled");
    };
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(
        full.text().await.expect("body"),
        r#"{"error":"spool_full"}"#
    );
    app.wait_ready(false, Duration::from_secs(5)).await;
    broker.thaw();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = app.post_signed(&ticket(100_000)).await.status();
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool never drained: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_ready(true, Duration::from_secs(10)).await;
    app.stop().await;
}

/// A spooled event's Kafka timestamp is when the bridge accepted the webhook, not when it
/// was forwarded, so that looking Kafka up by time (a backfill's "is it there already?")
/// finds it where Qminder's time says (issue 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_stamped_with_the_time_its_webhook_was_accepted_even_when_forwarded_later() {
    let broker = Tansu::start();
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spawn_app_with(&broker.bootstrap(), spool_on(dir.path())).await;
    let now_ms = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        i64::try_from(since.expect("a clock").as_millis()).expect("ms")
    };
    broker.freeze();
    let before = now_ms();
    let response = app.post_signed(&ticket(0)).await;
    let after = now_ms();
    assert_eq!(response.status(), 202);
    let ack: Value = response.json().await.expect("ack");
    // Forwarded no earlier than 2 s later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.thaw();
    let id = ack["id"].as_str().expect("id").to_owned();
    let (b, t) = (app.bootstrap.clone(), app.topic("ticket_created"));
    let record = tokio::task::spawn_blocking(move || {
        let mut found = None;
        kafka::scan(&b, &t, Duration::from_secs(60), |r| {
            found = Some(r.clone());
            r.json()["id"] == id.as_str()
        });
        found.expect("the record")
    })
    .await
    .expect("reader");
    let stamped = record.timestamp_ms.expect("a timestamp");
    assert!(
        (before..=after).contains(&stamped),
        "stamped {stamped}, accepted between {before} and {after}"
    );
    app.stop().await;
}
