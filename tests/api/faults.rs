//! The broker misbehaves; the bridge tells the truth (503 + Retry-After, never a false 2xx)
//! and recovers by itself. Each test freezes a private broker (SIGSTOP), never the shared one.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::broker::{Tansu, free_port};
use crate::helpers::process::BridgeProcess;
use crate::helpers::{spawn_app_unready, spawn_app_with};

const BODY: &str =
    r#"{"type":"ticket_called","data":{"id":"55","called":{"date":"2020-05-25T00:05:00Z"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_while_the_broker_is_frozen_and_recovers_after_without_a_restart() {
    let broker = Tansu::start();
    let app = spawn_app_with(&broker.bootstrap(), |s| {
        s.kafka.delivery_timeout_ms = 1500;
        s.server.request_timeout_ms = 3000;
        s.server.shutdown_timeout_ms = 5000;
    })
    .await;
    assert_eq!(app.post_signed(BODY).await.status(), 200);

    broker.freeze();
    let started = Instant::now();
    let response = app.post_signed(BODY).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"kafka_timeout"}"#
    );
    assert!(
        waited < Duration::from_secs(3),
        "bounded by the delivery timeout: {waited:?}"
    );
    app.wait_ready(false, Duration::from_secs(10)).await;
    let failed = app
        .metric(
            r#"qminder_bridge_events_failed_total{event_type="ticket_called",reason="timeout"}"#,
        )
        .await;
    assert_eq!(failed, 1.0);

    broker.thaw();
    app.wait_ready(true, Duration::from_secs(30)).await;
    // librdkafka bumped its idempotent epoch for the timed-out record; Kafka accepts that,
    // tansu fences the producer for good (docs/testing.md). So against tansu one request
    // may be refused as fenced: the producer is replaced then, and the next is delivered.
    let mut response = app.post_signed(BODY).await;
    if response.status() == 503 {
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"error":"kafka_unavailable"}"#
        );
        assert_eq!(
            app.metric("qminder_bridge_producer_restarts_total").await,
            1.0,
            "a fenced producer is replaced"
        );
        response = app.post_signed(BODY).await;
    }
    assert_eq!(
        response.status(),
        200,
        "delivered after recovery, at most one fenced request after the epoch bump"
    );
    let ack: Value = response.json().await.expect("ack");
    assert_eq!(app.record_for(&ack).await.key_str(), Some("55"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_a_broker_and_serves_once_one_appears() {
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let app = spawn_app_unready(&bootstrap, |s| {
        s.kafka.delivery_timeout_ms = 1000;
        s.server.request_timeout_ms = 2000;
        s.server.shutdown_timeout_ms = 5000;
    })
    .await;
    assert_eq!(app.readyz().await, 503);
    let response = app.post_signed(BODY).await;
    let (status, retry) = (
        response.status(),
        response.headers().contains_key("retry-after"),
    );
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(retry);

    let _broker = Tansu::start_on(port);
    app.wait_ready(true, Duration::from_secs(30)).await;
    let response = app.post_signed(BODY).await;
    assert_eq!(response.status(), 200);
    app.record_for(&response.json().await.expect("ack")).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_is_still_delivered_and_the_bridge_exits_zero() {
    let broker = Tansu::start();
    let bridge = BridgeProcess::start(&broker.bootstrap(), |s| {
        s.kafka.delivery_timeout_ms = 8000;
        s.server.request_timeout_ms = 10_000;
        s.server.shutdown_timeout_ms = 15_000;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;

    // Hold a request in flight: the broker is frozen, so Kafka cannot ack yet.
    broker.freeze();
    let pending = tokio::spawn(bridge.post_signed(BODY));
    bridge.wait_in_flight(1, Duration::from_secs(10)).await;
    // Not ready at once, new webhooks refused, and the request stays in flight ...
    terminate_and_wait_until_not_ready(&bridge).await;
    let (status, refused) = bridge.post_signed(BODY).await;
    assert_eq!(
        (status, refused),
        (503, serde_json::json!({"error": "shutting_down"}))
    );
    // ... until Kafka acks it.
    broker.thaw();
    let (status, ack) = match pending.await {
        Ok(answer) => answer,
        Err(e) => panic!(
            "the request failed ({e}); the bridge's log:\n{}",
            bridge.log()
        ),
    };
    assert_eq!(status, 200);
    let exit = bridge.wait_exit(Duration::from_secs(20));
    assert_eq!(exit, Some(0), "exit status");
    let bootstrap = broker.bootstrap();
    let record = tokio::task::spawn_blocking(move || {
        crate::helpers::kafka::read_at(
            &bootstrap,
            ack["topic"].as_str().expect("topic"),
            i32::try_from(ack["partition"].as_i64().expect("partition")).expect("i32"),
            ack["offset"].as_i64().expect("offset"),
        )
    })
    .await
    .expect("reader");
    assert_eq!(record.key_str(), Some("55"));
}

/// The shutdown deadline counts from the signal, not from start-up: a bridge that has run
/// for longer than `shutdown_timeout_ms` still waits for the request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_that_ran_longer_than_its_shutdown_timeout_still_finishes_requests_in_flight() {
    let broker = Tansu::start();
    let bridge = BridgeProcess::start(&broker.bootstrap(), |s| {
        s.kafka.delivery_timeout_ms = 3000;
        s.server.request_timeout_ms = 4000;
        s.server.shutdown_timeout_ms = 4000;
    });
    let started = Instant::now();
    bridge.wait_ready(Duration::from_secs(30)).await;
    // What is tested is the bridge's age at the signal: make it older than the timeout.
    let age = Duration::from_millis(4500);
    tokio::time::sleep(age.saturating_sub(started.elapsed())).await;

    broker.freeze();
    let pending = tokio::spawn(bridge.post_signed(BODY));
    bridge.wait_in_flight(1, Duration::from_secs(10)).await;
    terminate_and_wait_until_not_ready(&bridge).await;
    broker.thaw();
    let (status, _) = match pending.await {
        Ok(answer) => answer,
        Err(e) => panic!(
            "the request in flight was dropped ({e}); the bridge's log:\n{}",
            bridge.log()
        ),
    };
    assert_eq!(status, 200);
    assert_eq!(
        bridge.wait_exit(Duration::from_secs(20)),
        Some(0),
        "exit status"
    );
}

/// However shutdown goes, the process is gone by `shutdown_timeout_ms` after the signal:
/// here the request in flight uses nearly all of it (Kafka frozen, it times out at 3 s of
/// 4), and an idle connection would keep actix's own graceful stop (up to 2 s) waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_never_outlasts_shutdown_timeout_ms() {
    let broker = Tansu::start();
    let bridge = BridgeProcess::start(&broker.bootstrap(), |s| {
        s.kafka.delivery_timeout_ms = 3000;
        s.server.request_timeout_ms = 4000;
        s.server.shutdown_timeout_ms = 4000;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    let host = bridge.address.trim_start_matches("http://").to_owned();
    let _idle = std::net::TcpStream::connect(&host).expect("an idle connection");
    broker.freeze();
    let pending = tokio::spawn(bridge.post_signed(BODY));
    bridge.wait_in_flight(1, Duration::from_secs(10)).await;
    let signalled = Instant::now();
    bridge.terminate();
    let exit = tokio::task::spawn_blocking(move || bridge.wait_exit(Duration::from_secs(20)))
        .await
        .expect("waiter");
    let took = signalled.elapsed();
    broker.thaw();
    assert_eq!(exit, Some(0));
    let _ = pending.await;
    // The deadline, and a margin for the process to exit and this test to notice.
    assert!(took < Duration::from_millis(4600), "shutdown took {took:?}");
}

/// A bridge restarted at once (a crash loop, `docker compose restart`, a pod on the host
/// network) binds its port again, though connections it closed itself linger there in
/// TIME_WAIT for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_restarted_at_once_listens_again_on_its_port() {
    let bridge = BridgeProcess::start(crate::helpers::broker::shared(), |_| {});
    bridge.wait_ready(Duration::from_secs(30)).await;
    // Asked to close, the bridge closes first: the TIME_WAIT is on the bridge's side.
    let host = bridge.address.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&host).expect("a connection");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
        .expect("a request");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("an answer, then EOF");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stream);
    let settings = bridge.settings.clone();
    bridge.terminate();
    let exit = tokio::task::spawn_blocking(move || bridge.wait_exit(Duration::from_secs(20)));
    assert_eq!(exit.await.expect("waiter"), Some(0));

    let restarted = BridgeProcess::launch(settings);
    restarted.wait_ready(Duration::from_secs(30)).await;
}

/// Sends SIGTERM and polls `/readyz` until it is no longer 200 (at most 10 s).
async fn terminate_and_wait_until_not_ready(bridge: &BridgeProcess) {
    bridge.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge.readyz().await == 200 {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
