//! The trace context in the records, read back from Kafka: every record carries one when
//! tracing is on and none when it is off, and what a backfill run rebuilt carries the
//! run's span.

use serde_json::Value;

use qminder_bridge::record::RecordFormat;

use crate::helpers::broker;
use crate::helpers::otlp::OtlpReceiver;
use crate::traces::attribute;

/// Whether `text` is a W3C `traceparent` of version 00 with non-zero ids.
fn valid_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    let nonzero = |s: &str| s.chars().any(|c| c != '0');
    parts.len() == 4
        && parts.iter().map(|p| p.len()).eq([2, 32, 16, 2])
        && parts.iter().all(|p| hex(p))
        && parts[0] == "00"
        && nonzero(parts[1])
        && nonzero(parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_carries_a_valid_traceparent_with_telemetry_on_and_none_with_it_off() {
    use crate::helpers::{kafka, spawn_app_with};
    for on in [true, false] {
        let app = spawn_app_with(broker::shared(), |s| {
            s.telemetry.propagate_without_export = on;
            s.kafka.record_format = RecordFormat::Binary;
        })
        .await;
        let mut span_ids = std::collections::HashSet::new();
        for i in 0..24 {
            let body = match i % 4 {
                0 => "not json".to_owned(),
                1 => format!(r#"{{"type":"line_changed","data":{{"id":{i}}}}}"#),
                _ => format!(r#"{{"type":"ticket_called","data":{{"id":"t{i}","line":1}}}}"#),
            };
            let response = app.post_signed(&body).await;
            assert!(response.status().is_success());
            let ack: Value = response.json().await.expect("ack");
            let topic = ack["topic"].as_str().expect("topic");
            let (partition, offset) = (
                ack["partition"].as_i64().unwrap(),
                ack["offset"].as_i64().unwrap(),
            );
            let record = kafka::read_at(&app.bootstrap, topic, partition as i32, offset);
            let traceparent = record.headers.get("traceparent");
            if on {
                let traceparent = traceparent.unwrap_or_else(|| panic!("{body}: {record:?}"));
                assert!(valid_traceparent(traceparent), "{traceparent}");
                span_ids.insert(traceparent.split('-').nth(2).unwrap().to_owned());
                if i % 4 != 0 {
                    assert_eq!(record.headers.get("ce_traceparent"), Some(traceparent));
                }
            } else {
                assert!(
                    !record.headers.keys().any(|k| k.contains("trace")),
                    "{record:?}"
                );
            }
        }
        assert_eq!(
            span_ids.len(),
            if on { 24 } else { 0 },
            "a span of its own each"
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_run_is_a_span_whose_context_every_record_it_rebuilt_carries() {
    use crate::backfill::{Outage, config_with, in_kafka, published};
    let receiver = OtlpReceiver::start();
    let mut outage = Outage::new(60).await;
    outage.config = config_with(&outage.app, &outage.sim, |s| {
        s.telemetry.otlp_endpoint = Some(receiver.endpoint());
    });
    let (run, report) = outage.backfill().await;
    assert!(run.status.success(), "{report}");
    let rebuilt = published(&report);
    assert!(rebuilt > 0, "{report}");
    let spans = receiver
        .wait_for("the run's span", |s| s["name"] == "backfill")
        .await;
    let span = spans.iter().find(|s| s["name"] == "backfill").unwrap();
    assert_eq!(
        *attribute(span, "qminder_bridge.records_published"),
        rebuilt
    );
    let traceparent = format!(
        "00-{}-{}-01",
        span["trace_id"].as_str().unwrap(),
        span["span_id"].as_str().unwrap()
    );
    let found = in_kafka(&outage.app, 0).await;
    let marked: Vec<&Value> = found
        .values()
        .flatten()
        .filter(|e| e["qminderorigin"] == "backfill")
        .collect();
    assert_eq!(marked.len() as u64, rebuilt);
    assert!(
        marked
            .iter()
            .all(|e| e["traceparent"] == traceparent.as_str()),
        "{marked:#?}"
    );
    assert!(
        found
            .values()
            .flatten()
            .all(|e| e["qminderorigin"] == "backfill" || e.get("traceparent").is_none()),
        "the live records (sent without [telemetry]) carry none"
    );
}
