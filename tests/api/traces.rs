//! OpenTelemetry traces, checked by parties nobody here wrote: the bridge's OTLP export is
//! decoded by the official protobuf definitions, its record read by confluent-kafka and
//! its context extracted by the OpenTelemetry Python SDK's W3C propagator. And a collector
//! that is stopped or refuses costs the webhooks nothing: its spans are dropped and counted.

use std::process::Command;
use std::time::Duration;

use qminder_bridge::config::Settings;
use qminder_bridge::record::RecordFormat;
use serde_json::Value;

use crate::helpers::otlp::OtlpReceiver;
use crate::helpers::process::BridgeProcess;
use crate::helpers::{SECRET, broker};

const DATA: &str = r#"{"id":"7024061","line":1,"firstName":"Zoë","lastName":"Kask","phoneNumber":"+3725551234","called":{"date":"2021-03-04T05:06:07.089Z"}}"#;

/// The spans' batches go out every 100 ms rather than every 5 s.
const QUICK_BATCHES: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "100")];

/// What the OpenTelemetry Python SDK's propagator finds in the record `ack` answered for
/// (by its partition and offset, or in spool mode by its id).
fn trace_of_record(bootstrap: &str, ack: &Value) -> Value {
    let place = match ack["offset"].as_i64() {
        Some(offset) => [ack["partition"].to_string(), offset.to_string()],
        None => ["--id".into(), ack["id"].as_str().expect("an id").into()],
    };
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/trace_of_record.py"
        ))
        .arg(bootstrap)
        .arg(ack["topic"].as_str().expect("topic"))
        .args(place)
        .output()
        .expect("python3 runs (scripts/setup installs its packages)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the reader")
}

pub(super) fn attribute<'a>(span: &'a Value, name: &str) -> &'a Value {
    &span["attributes"][name]
}

/// A bridge exporting to `receiver`, with `tweak`, ready.
async fn exporting_to(receiver: &OtlpReceiver, tweak: impl FnOnce(&mut Settings)) -> BridgeProcess {
    let endpoint = receiver.endpoint();
    let bridge = BridgeProcess::start_with_env(
        broker::shared(),
        |s| {
            s.telemetry.otlp_endpoint = Some(endpoint);
            tweak(s);
        },
        QUICK_BATCHES,
    );
    bridge.wait_ready(Duration::from_secs(30)).await;
    bridge
}

/// Sends a ticket_called, expects `status`; the answer, what the Python SDK found in its
/// record, and the delivery span with those ids once `receiver` has it.
async fn send_and_trace(
    bridge: &BridgeProcess,
    receiver: &OtlpReceiver,
    status: u16,
) -> (Value, Value, Value) {
    let (got, ack) = bridge
        .post_signed(&format!(r#"{{"type":"ticket_called","data":{DATA}}}"#))
        .await;
    assert_eq!(got, status, "{ack}");
    let record = trace_of_record(broker::shared(), &ack);
    let span_id = record["span_id"].as_str().expect("a span id").to_owned();
    let spans = receiver
        .wait_for("the delivery span", |s| s["span_id"] == span_id.as_str())
        .await;
    let delivery = spans.into_iter().find(|s| s["span_id"] == span_id.as_str());
    let delivery = delivery.expect("found above");
    assert_eq!(delivery["trace_id"], record["trace_id"]);
    (ack, record, delivery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_carries_the_context_of_the_exported_delivery_span_in_both_formats() {
    for format in [RecordFormat::Structured, RecordFormat::Binary] {
        let receiver = OtlpReceiver::start();
        let bridge = exporting_to(&receiver, |s| s.kafka.record_format = format).await;
        let (ack, record, delivery) = send_and_trace(&bridge, &receiver, 200).await;
        let delivery = &delivery;
        assert_eq!(record["valid"], true, "{format:?}: {record}");
        assert_eq!(record["sampled"], true);
        let topic = ack["topic"].as_str().unwrap();
        assert_eq!(delivery["name"], format!("send {topic}"));
        assert_eq!(delivery["kind"], "SPAN_KIND_PRODUCER");
        assert_eq!(attribute(delivery, "messaging.system"), "kafka");
        assert_eq!(attribute(delivery, "messaging.destination.name"), topic);
        assert_eq!(
            *attribute(delivery, "messaging.destination.partition.id"),
            Value::String(ack["partition"].to_string())
        );
        assert_eq!(
            *attribute(delivery, "messaging.kafka.offset"),
            ack["offset"]
        );
        assert_eq!(*attribute(delivery, "cloudevents.event_id"), ack["id"]);
        assert_eq!(
            attribute(delivery, "cloudevents.event_type"),
            "com.qminder.ticket_called"
        );
        assert_eq!(attribute(delivery, "cloudevents.event_subject"), "7024061");
        // Its parent: the request's span, which said how the request ended.
        let spans = receiver
            .wait_for("the request's span", |s| {
                s["span_id"] == delivery["parent_span_id"]
            })
            .await;
        let request = spans
            .iter()
            .find(|s| s["span_id"] == delivery["parent_span_id"])
            .unwrap();
        assert_eq!(request["kind"], "SPAN_KIND_SERVER");
        assert_eq!(request["name"], "POST /webhooks/qminder");
        assert_eq!(attribute(request, "http.response.status_code"), 200);
        assert_eq!(attribute(request, "qminder_bridge.outcome"), "delivered");
        assert_eq!(request["resource"]["service.name"], "qminder-bridge");
        for step in ["verify", "prepare"] {
            assert!(
                spans
                    .iter()
                    .any(|s| s["name"] == step && s["parent_span_id"] == request["span_id"]),
                "a {step} span under the request's: {spans:#?}"
            );
        }
        let exported = serde_json::to_string(&spans).unwrap();
        for secret_or_personal in [SECRET, "Zoë", "Kask", "+3725551234"] {
            assert!(
                !exported.contains(secret_or_personal),
                "{secret_or_personal} in {exported}"
            );
        }
        let log = bridge.log();
        assert!(!log.contains(SECRET));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_forwarded_from_the_spool_carries_the_context_of_the_request_accepted() {
    let receiver = OtlpReceiver::start();
    let spool = tempfile::tempdir().expect("a spool directory");
    let bridge = exporting_to(&receiver, |s| {
        s.spool.enabled = true;
        s.spool.dir = spool.path().to_owned();
    })
    .await;
    let (ack, _, delivery) = send_and_trace(&bridge, &receiver, 202).await;
    let delivery = &delivery;
    assert_eq!(attribute(delivery, "qminder_bridge.spooled"), true);
    assert_eq!(*attribute(delivery, "cloudevents.event_id"), ack["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_written_while_handling_a_webhook_carry_its_trace_id() {
    let bridge = BridgeProcess::start(broker::shared(), |s| {
        s.telemetry.propagate_without_export = true;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    // Not an event: a WARN line while the request is handled, and a dead letter.
    let (status, ack) = bridge.post_signed("not json").await;
    assert_eq!(status, 202, "{ack}");
    let record = trace_of_record(broker::shared(), &ack);
    let trace_id = record["trace_id"].as_str().expect("a trace id");
    let log = bridge.log();
    let line = log
        .lines()
        .find(|l| l.contains("dead-letter topic"))
        .unwrap_or_else(|| panic!("the dead-letter WARN line:\n{log}"));
    assert!(line.contains(&format!("trace_id={trace_id}")), "{line}");
    assert!(
        !log.contains("webhook{"),
        "no span per request in the logs:\n{log}"
    );
}

/// Sends `n` signed events one after another; their statuses.
async fn send(bridge: &BridgeProcess, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"type":"ticket_created","data":{{"id":"t{i}","line":1}}}}"#);
        statuses.push(bridge.post_signed(&body).await.0);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_collector_costs_the_webhooks_nothing_and_its_dropped_spans_are_counted() {
    let receiver = OtlpReceiver::start();
    let bridge = exporting_to(&receiver, |s| {
        s.telemetry.max_queued_spans = Some(40);
        s.telemetry.export_timeout_ms = Some(2_000);
    })
    .await;
    assert!(send(&bridge, 5).await.iter().all(|s| *s == 200));
    receiver.wait_for("a span before the stop", |_| true).await;
    receiver.signal("STOP");
    let statuses = send(&bridge, 100).await;
    receiver.signal("CONT");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let dropped = bridge
        .metric("qminder_bridge_trace_spans_dropped_total{reason=\"queue_full\"}")
        .await;
    assert!(
        dropped > 0.0,
        "400 spans, a queue of 40, and nobody taking them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_connections_costs_the_webhooks_nothing_and_is_counted() {
    let closed = broker::free_port();
    let bridge = BridgeProcess::start_with_env(
        broker::shared(),
        |s| s.telemetry.otlp_endpoint = Some(format!("http://127.0.0.1:{closed}")),
        QUICK_BATCHES,
    );
    bridge.wait_ready(Duration::from_secs(30)).await;
    let statuses = send(&bridge, 50).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let failed = bridge
            .metric("qminder_bridge_trace_spans_dropped_total{reason=\"export_failed\"}")
            .await;
        if failed > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed export counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
