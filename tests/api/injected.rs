//! Broker errors injected with librdkafka's mock cluster (real brokers cannot be told to
//! fail on cue): each maps to 503 + Retry-After, a counted failure, and, when the producer
//! can no longer deliver, a replaced producer that delivers the next event. In spool mode,
//! a record the broker refuses outright is parked rather than blocking the spool.

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use qminder_bridge::config::Settings;
use qminder_bridge::delivery::spool::forwarder::PARK_AFTER;

use crate::helpers::{TestApp, spawn_app_with};

const BODY: &str =
    r#"{"type":"ticket_served","data":{"id":"31","served":{"date":"2020-05-25T01:00:00Z"}}}"#;

type Cluster<'a> = MockCluster<'a, rdkafka::producer::DefaultProducerContext>;

async fn app_on(cluster: &Cluster<'_>) -> TestApp {
    let app = app_with(cluster, |_| {}).await;
    // A first delivery proves the producer is set up (idempotence initialised).
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app
}

/// The bridge on the mock cluster, whose topics it makes first; `tweak` applies last.
async fn app_with(cluster: &Cluster<'_>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(&cluster.bootstrap_servers(), |s| {
        s.kafka.create_topics = false;
        s.kafka.delivery_timeout_ms = 1500;
        s.server.request_timeout_ms = 3000;
        s.server.shutdown_timeout_ms = 5000;
        for t in qminder_bridge::event::KNOWN_EVENT_TYPES {
            cluster
                .create_topic(&format!("{}.{t}", s.kafka.topic_prefix), 1, 1)
                .expect("mock topic");
        }
        cluster
            .create_topic(&s.kafka.dead_letter_topic(), 1, 1)
            .expect("mock topic");
        tweak(s);
    })
    .await
}

/// The bridge in spool mode on the mock cluster, with a first event forwarded.
async fn spool_app_on(cluster: &Cluster<'_>, dir: &std::path::Path) -> TestApp {
    let app = app_with(cluster, |s| {
        s.spool.enabled = true;
        s.spool.dir = dir.to_owned();
    })
    .await;
    assert_eq!(app.post_signed(BODY).await.status(), 202);
    wait_metric(&app, "qminder_bridge_spool_forwarded_total", 1.0).await;
    app
}

/// Polls `series` until it reads `want` (at most 20 s).
async fn wait_metric(app: &TestApp, series: &str, want: f64) {
    app.wait_for_metric(series, want, Duration::from_secs(20))
        .await;
}

fn failed(reason: &str) -> String {
    format!(r#"qminder_bridge_events_failed_total{{event_type="ticket_served",reason="{reason}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retriable_broker_error_that_outlasts_the_delivery_timeout_is_a_503() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_on(&cluster).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let started = Instant::now();
    let response = app.post_signed(BODY).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"kafka_timeout"}"#
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.metric(&failed("timeout")).await, 1.0);
    app.stop().await;
}

/// Row 3 of issue 19: a record Kafka will never accept gets a final 413 (no
/// `Retry-After`: sending it again cannot help), counted under its own reason, and a stub
/// in the dead-letter topic says what was refused. Made with librdkafka's own limit
/// (`message.max.bytes`, lowered through the passthrough as an operator matching a topic's
/// limit would): tansu enforces no `max.message.bytes`, and a broker's refusal alone is
/// not final (below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_kafka_will_never_accept_gets_a_final_413_and_leaves_a_stub() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_with(&cluster, |s| {
        s.kafka
            .librdkafka
            .insert("message.max.bytes".into(), "1000".into());
    })
    .await;
    let large = BODY.replace(
        "\"31\"",
        &format!("\"31\",\"note\":\"{}\"", "n".repeat(1500)),
    );
    let response = app.post_signed(&large).await;
    assert_eq!(response.status(), 413);
    assert!(!response.headers().contains_key("retry-after"));
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"record_too_large"}"#
    );
    assert_eq!(app.metric(&failed("too_large")).await, 1.0);
    let (bootstrap, topic) = (
        app.bootstrap.clone(),
        app.settings.kafka.dead_letter_topic(),
    );
    let stubs = tokio::task::spawn_blocking(move || {
        crate::helpers::kafka::read_until(&bootstrap, &topic, Duration::from_secs(15), |r| {
            !r.is_empty()
        })
    })
    .await
    .expect("reader");
    let stub = stubs[0].json();
    assert_eq!(stub["reason"], "record_too_large");
    assert_eq!(stub["event_type"], "ticket_served");
    assert_eq!(stub["bytes"].as_u64().map(|b| b > 1500), Some(true));
    assert_eq!(
        stubs[0].headers["qminder-bridge-reason"],
        "record_too_large"
    );
    // The refusal was for that record only.
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app.stop().await;
}

/// A broker refuses a whole produce batch as too large: a small record refused with a
/// large one it shared a batch with is worth sending again, so its answer is a 503, not a
/// final 413 (the broker's refusal is made here with the mock cluster's error injection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_record_the_broker_refuses_as_too_large_is_a_503_worth_retrying() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_on(&cluster).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let response = app.post_signed(BODY).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"kafka_unavailable"}"#
    );
    assert_eq!(app.metric(&failed("refused")).await, 1.0);
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_replaced_and_the_next_event_is_delivered() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_on(&cluster).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let response = app.post_signed(BODY).await;
    assert_eq!(response.status(), 503);
    // The replacement is built off the request path.
    wait_metric(&app, "qminder_bridge_producer_restarts_total", 1.0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.post_signed(BODY).await.status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the producer was replaced"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_spool_mode_a_record_the_broker_keeps_refusing_is_parked_and_the_rest_flow() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spool_app_on(&cluster, dir.path()).await;

    // The broker refuses the next record every time the forwarder tries it.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; PARK_AFTER as usize],
    );
    let refused = BODY.replace("\"31\"", "\"32\"");
    assert_eq!(app.post_signed(&refused).await.status(), 202);
    wait_metric(&app, "qminder_bridge_spool_parked_total", 1.0).await;
    assert_eq!(
        app.metric(r#"qminder_bridge_spool_forward_failures_total{reason="unacceptable"}"#)
            .await,
        f64::from(PARK_AFTER)
    );
    // No sender was answered 503 for it: not an HTTP failure.
    assert_eq!(app.metric(&failed("refused")).await, 0.0);
    let mut parked: Vec<String> = std::fs::read_dir(dir.path().join("parked"))
        .expect("parked/")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("a name")
        })
        .collect();
    parked.sort();
    assert_eq!(
        parked.len(),
        2,
        "the record and why Kafka refused it: {parked:?}"
    );
    assert!(parked[0].ends_with(".frame") && parked[1].ends_with(".reason"));
    let reason =
        std::fs::read_to_string(dir.path().join("parked").join(&parked[1])).expect("the reason");
    assert!(reason.contains("refuses this record itself"), "{reason}");

    // What comes after it is not held up.
    let next = BODY.replace("\"31\"", "\"33\"");
    assert_eq!(app.post_signed(&next).await.status(), 202);
    wait_metric(&app, "qminder_bridge_spool_forwarded_total", 2.0).await;
    wait_metric(&app, "qminder_bridge_spool_events", 0.0).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_at_once_beyond_max_in_flight_authenticated_requests() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_with(&cluster, |s| s.server.max_in_flight = 1).await;
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    // The only slot is held by an authenticated request whose ack is 1 s away.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(1000))
        .expect("rtt");
    let held = tokio::spawn({
        let (url, signature) = (
            format!("{}{}", app.address, crate::helpers::PATH),
            sign_body(),
        );
        async move {
            reqwest::Client::new()
                .post(url)
                .header("X-Qminder-Signature", signature)
                .body(BODY)
                .send()
                .await
                .expect("an answer")
                .status()
        }
    });
    wait_metric(&app, "qminder_bridge_requests_in_flight", 1.0).await;
    let started = Instant::now();
    let response = app.post_signed(BODY).await;
    assert_eq!(response.status(), 503);
    // Shed, not queued: the held request's ack is 1 s away.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "waited for the slot"
    );
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"overloaded"}"#
    );
    assert_eq!(held.await.expect("held request"), 200);
    let series = format!(
        r#"qminder_bridge_events_rejected_total{{endpoint="{}",reason="overloaded"}}"#,
        crate::helpers::PATH
    );
    assert_eq!(app.metric(&series).await, 1.0);
    cluster
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("rtt");
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app.stop().await;
}

fn sign_body() -> String {
    crate::helpers::sign(
        crate::helpers::SECRET,
        "https://bridge.example.com/webhooks/qminder",
        BODY.as_bytes(),
    )
}

/// Row 6 of issue 19, made with the mock cluster's error injection: a producer fenced on
/// every produce request (as a missing IdempotentWrite ACL would leave it) is replaced with
/// exponential back-off, not once per request, and the requests meanwhile are answered at
/// once (503), never held behind the replacement; once the broker relents, events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_keeps_failing_fatally_is_replaced_with_back_off() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_on(&cluster).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 2000],
    );
    let started = Instant::now();
    let mut answers = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        let status = app.post_signed(BODY).await.status();
        slowest = slowest.max(sent.elapsed());
        assert_eq!(status, 503);
        answers += 1;
    }
    let restarts = app.metric("qminder_bridge_producer_restarts_total").await;
    assert!(answers >= 20, "{answers} answers in 3 s");
    // Immediately, then after 1 s and 2 s more: at most three in 3 s.
    assert!(
        restarts <= 3.0,
        "{restarts} restarts for {answers} requests"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?}"
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.post_signed(BODY).await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "no 200 after the broker relented"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// Row 5 of issue 19: `create_topics = true` on a cluster whose topics exist but that
/// refuses CreateTopics (librdkafka's mock cluster has no handler for it, as a broker
/// without the CREATE grant would refuse it): the bridge looks before it creates, needs no
/// CreateTopics for topics that exist, and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_topics_need_no_create_permission() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_with(&cluster, |s| {
        s.kafka.create_topics = true;
        cluster
            .create_topic(&s.kafka.unknown_topic(), 1, 1)
            .expect("mock topic");
    })
    .await;
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app.stop().await;
}

/// Issue 20, row 4: when the broker refuses every record alike (here `INVALID_TIMESTAMP`,
/// as clock skew makes it), the cause is the cluster: nothing is parked, the breaker says
/// so, and the events go out in order once the refusal stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_spool_mode_a_refusal_of_every_record_parks_none_and_resumes_in_order() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spool_app_on(&cluster, dir.path()).await;

    // Refused for about 6 s of retries, then taken again.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP; 6],
    );
    for id in 40..45 {
        let body = BODY.replace("\"31\"", &format!("\"{id}\""));
        assert_eq!(app.post_signed(&body).await.status(), 202);
    }
    wait_metric(&app, "qminder_bridge_spool_park_breaker_open", 1.0).await;
    wait_metric(&app, "qminder_bridge_spool_forwarded_total", 6.0).await;
    wait_metric(&app, "qminder_bridge_spool_park_breaker_open", 0.0).await;
    assert_eq!(app.metric("qminder_bridge_spool_parked_total").await, 0.0);
    assert_eq!(app.metric("qminder_bridge_spool_events").await, 0.0);
    app.stop().await;
}
