//! Clients nobody on this project wrote read what the bridge publishes: Python's
//! confluent-kafka with the CloudEvents SDK (against tansu), and kcat (against the embedded
//! broker; Debian's kcat cannot talk to tansu).

use std::process::Command;
use std::time::{Duration, Instant};

use qminder_bridge::record::RecordFormat;
use serde_json::Value;

use crate::helpers::process::BridgeProcess;
use crate::helpers::{broker, spawn_app_with};

const DATA: &str = r#"{"id": 8080, "status": "CALLED", "firstName": "Zoë", "phoneNumber": "+3725551234",
 "called": {"date": "2021-03-04T05:06:07.089Z", "caller": 1}, "labels": [{"value": "VIP", "color": "ff0000"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_kafka_and_the_cloudevents_sdk_read_both_record_formats() {
    for format in [RecordFormat::Structured, RecordFormat::Binary] {
        let app = spawn_app_with(broker::shared(), |s| s.kafka.record_format = format).await;
        let body = format!(r#"{{"type":"ticket_called","data":{DATA}}}"#);
        let response = app.post_signed(&body).await;
        assert_eq!(response.status(), 200);
        let ack: Value = response.json().await.expect("ack");
        let output = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/read_cloudevent.py"
            ))
            .arg(&app.bootstrap)
            .arg(ack["topic"].as_str().expect("topic"))
            .arg(ack["partition"].to_string())
            .arg(ack["offset"].to_string())
            .output()
            .expect("python3 runs (scripts/setup installs its packages)");
        assert!(
            output.status.success(),
            "{format:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: Value = serde_json::from_slice(&output.stdout).expect("JSON from the reader");
        let expected_mode = match format {
            RecordFormat::Structured => "structured",
            RecordFormat::Binary => "binary",
        };
        assert_eq!(seen["mode"], expected_mode);
        assert_eq!(seen["key"], "8080");
        let a = &seen["attributes"];
        assert_eq!(a["specversion"], "1.0");
        assert_eq!(a["id"], ack["id"]);
        assert_eq!(a["type"], "com.qminder.ticket_called");
        assert_eq!(a["source"], app.url());
        assert_eq!(a["subject"], "8080");
        assert_eq!(a["partitionkey"], "8080");
        assert_eq!(a["time"], "2021-03-04T05:06:07.089000+00:00");
        assert_eq!(a["datacontenttype"], "application/json");
        let sent: Value = serde_json::from_str(DATA).expect("JSON");
        assert_eq!(seen["data"], sent);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_reads_what_the_bridge_publishes_to_its_embedded_broker() {
    let bridge = BridgeProcess::start("embedded", |s| {
        s.kafka.create_topics = false;
        s.kafka.partitions = 1;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    let log = bridge.log();
    let address = log
        .split("kcat -b ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the log names the embedded broker's address:\n{log}"))
        .to_owned();
    assert!(log.contains("nothing persists"), "the log warns:\n{log}");

    let body = format!(r#"{{"type":"ticket_created","data":{DATA}}}"#);
    let (status, ack) = bridge.post_signed(&body).await;
    assert_eq!(status, 200);
    let topic = ack["topic"].as_str().expect("topic").to_owned();

    let deadline = Instant::now() + Duration::from_secs(20);
    let output = loop {
        // `timeout`: a kcat stuck on metadata must not hang the test.
        let output = Command::new("timeout")
            .args([
                "10",
                "kcat",
                "-b",
                &address,
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
            ])
            .arg("-J")
            .output()
            .expect("kcat is installed (scripts/setup)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.contains("8080") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let line = output
        .lines()
        .next()
        .unwrap_or_else(|| panic!("kcat read nothing"));
    let message: Value = serde_json::from_str(line).expect("kcat -J prints JSON");
    assert_eq!(message["key"], "8080");
    assert_eq!(
        message["headers"],
        serde_json::json!([
            "content-type",
            "application/cloudevents+json; charset=utf-8"
        ])
    );
    let event: Value =
        serde_json::from_str(message["payload"].as_str().expect("a payload")).expect("JSON value");
    assert_eq!(event["id"], ack["id"]);
    assert_eq!(event["type"], "com.qminder.ticket_created");
}
