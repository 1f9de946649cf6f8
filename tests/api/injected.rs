//! Broker errors injected with librdkafka's mock cluster (real brokers cannot be told to
//! fail on cue): each maps to 503 + Retry-After, a counted failure, and, when the producer
//! can no longer deliver, a replaced producer that delivers the next event.

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::helpers::{TestApp, spawn_app_with};

const BODY: &str =
    r#"{"type":"ticket_served","data":{"id":"31","served":{"date":"2020-05-25T01:00:00Z"}}}"#;

async fn app_on(cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> TestApp {
    let bootstrap = cluster.bootstrap_servers();
    let app = spawn_app_with(&bootstrap, |s| {
        s.kafka.create_topics = false;
        s.kafka.delivery_timeout_ms = 1500;
        s.server.request_timeout_ms = 3000;
        s.server.shutdown_timeout_ms = 5000;
        for t in qminder_bridge::event::KNOWN_EVENT_TYPES {
            cluster
                .create_topic(&format!("{}.{t}", s.kafka.topic_prefix), 1, 1)
                .expect("mock topic");
        }
    })
    .await;
    // A first delivery proves the producer is set up (idempotence initialised).
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_is_a_503_counted_as_refused() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let app = app_on(&cluster).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let response = app.post_signed(BODY).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"kafka_unavailable"}"#
    );
    assert_eq!(app.metric(&failed("refused")).await, 1.0);
    // The error was for that request only.
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
    assert_eq!(
        app.metric("qminder_bridge_producer_restarts_total").await,
        1.0
    );
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
