//! Security and privacy controls: replay suppression, personal-data rules, request limits,
//! and logs that never carry secrets or personal data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use qminder_bridge::privacy::Action;
use qminder_bridge::record::RecordFormat;
use qminder_bridge::secret::SecretSpec;
use serde_json::Value;

use crate::helpers::app::spawn_tls_app;
use crate::helpers::process::BridgeProcess;
use crate::helpers::schema::checked_event;
use crate::helpers::{PATH, SECRET, broker, sign, spawn_app_with};

const TICKET: &str = r#"{"type":"ticket_created","data":{"id":"501","firstName":"Zanzibar-PII-FIRST","lastName":"Quixote-PII-LAST","phoneNumber":15550001111,"email":"pii-marker@example.com","created":{"date":"2020-05-25T00:00:00Z"},"extra":[{"title":"Note","value":"kept"}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_replayed_webhook_with_its_first_acknowledgement_and_publishes_it_once() {
    let app = spawn_app_with(broker::shared(), |s| s.dedupe.enabled = true).await;
    let first = app.post_signed(TICKET).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("ack");
    for _ in 0..3 {
        let again = app.post_signed(TICKET).await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.expect("ack");
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["partition"], first["partition"]);
        assert_eq!(again["offset"], first["offset"]);
        assert_eq!(again["duplicate"], true);
    }
    let series = format!(r#"qminder_bridge_events_deduplicated_total{{endpoint="{PATH}"}}"#);
    assert_eq!(app.metric(&series).await, 3.0);
    let forwarded = format!(
        r#"qminder_bridge_events_forwarded_total{{event_type="ticket_created",topic="{}"}}"#,
        app.topic("ticket_created")
    );
    assert_eq!(app.metric(&forwarded).await, 1.0);
    // Read from the broker, not the bridge's own counters: one record (one batch each).
    assert_eq!(app.published().await, 1, "published once");
    // Another event is not a duplicate.
    let other = TICKET.replace("\"501\"", "\"502\"");
    let response = app.post_signed(&other).await;
    assert_eq!(response.status(), 200);
    let response: Value = response.json().await.expect("ack");
    assert!(response.get("duplicate").is_none());
    assert_ne!(response["id"], first["id"]);
    assert_eq!(app.published().await, 2);
    // A replayed dead letter gets the answer its first delivery got, 202 and reason too.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app.post_signed("not json, but signed").await;
        assert_eq!(response.status(), 202);
        answers.push(response.json::<Value>().await.expect("ack"));
    }
    assert_eq!(answers[0]["dead_letter_reason"], "not_json");
    assert_eq!(answers[1]["dead_letter_reason"], "not_json");
    assert_eq!(answers[1]["offset"], answers[0]["offset"]);
    assert_eq!(answers[1]["duplicate"], true);
    assert_eq!(app.published().await, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_hashes_personal_data_alike_in_both_record_formats() {
    for format in [RecordFormat::Structured, RecordFormat::Binary] {
        let app = spawn_app_with(broker::shared(), |s| {
            s.kafka.record_format = format;
            s.privacy.hash_key = Some(SecretSpec::parse("privacy-key-123"));
            s.privacy.fields.insert("email".into(), Action::Drop);
            s.privacy.fields.insert("lastName".into(), Action::Hash);
            s.privacy.fields.insert("phoneNumber".into(), Action::Hash);
        })
        .await;
        let ack: Value = app.post_signed(TICKET).await.json().await.expect("ack");
        let record = app.record_for(&ack).await;
        let event = checked_event(&record);
        let data = &event["data"];
        assert!(data.get("email").is_none(), "{format:?}");
        assert_eq!(
            data["lastName"],
            sign("privacy-key-123", "", b"Quixote-PII-LAST")
        );
        assert_eq!(
            data["phoneNumber"],
            sign("privacy-key-123", "", b"15550001111")
        );
        assert_eq!(data["firstName"], "Zanzibar-PII-FIRST");
        assert_eq!(data["extra"][0]["value"], "kept");
        assert!(!record.value_str().contains("pii-marker"));
        assert!(!record.value_str().contains("Quixote"));
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_oversized_headers_and_slow_headers() {
    let app = spawn_app_with(broker::shared(), |s| {
        s.server.max_header_bytes = 4096;
        s.server.client_request_timeout_ms = 500;
    })
    .await;
    let signature = sign(SECRET, app.url(), TICKET.as_bytes());
    let response = app
        .http
        .post(format!("{}{PATH}", app.address))
        .header("X-Qminder-Signature", &signature)
        .header("X-Padding", "p".repeat(5000))
        .body(TICKET)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 431);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"headers_too_large"}"#
    );

    // Slowloris: half a request line, then nothing. The bridge gives up on its own.
    let address = app.address.trim_start_matches("http://").to_owned();
    let waited = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"POST /webhooks/qminder HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    })
    .await
    .expect("client");
    assert!(waited.0 < Duration::from_secs(5), "held for {:?}", waited.0);
    assert!(
        waited.1.is_empty() || waited.1.starts_with("HTTP/1.1 408"),
        "{}",
        waited.1
    );
    assert_eq!(app.published().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_trace_level_never_contain_secrets_or_personal_data() {
    let bridge = BridgeProcess::start_with_env(
        broker::shared(),
        |s| {
            s.privacy.hash_key = Some(SecretSpec::parse("env:QMINDER_BRIDGE_TEST_PRIVACY_KEY"));
            s.privacy.fields.insert("email".into(), Action::Drop);
        },
        &[
            ("RUST_LOG", "trace"),
            ("QMINDER_BRIDGE_TEST_PRIVACY_KEY", "Privacy-Key-Marker-77"),
        ],
    );
    bridge.wait_ready(Duration::from_secs(30)).await;
    let (status, _) = bridge.post_signed(TICKET).await;
    assert_eq!(status, 200);
    let (status, _) = bridge
        .post_signed("not an event, Quixote-PII-LAST inside")
        .await;
    assert_eq!(status, 202);
    let client = reqwest::Client::new();
    for signature in [Some(sign("wrong", "u", TICKET.as_bytes())), None] {
        let mut request = client
            .post(format!("{}{PATH}", bridge.address))
            .body(TICKET);
        if let Some(signature) = signature {
            request = request.header("X-Qminder-Signature", signature);
        }
        assert_eq!(request.send().await.expect("answer").status(), 401);
    }
    let log = bridge.log();
    assert!(log.len() > 1000, "trace logging ran:\n{log}");
    for marker in [
        SECRET,
        "Privacy-Key-Marker-77",
        "Zanzibar-PII-FIRST",
        "Quixote-PII-LAST",
        "pii-marker@example.com",
        "15550001111",
    ] {
        assert!(!log.contains(marker), "the log contains {marker:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_clients_outside_the_allowlist_and_believes_only_trusted_proxies() {
    let app = spawn_app_with(broker::shared(), |s| {
        s.server.allow_cidrs = vec!["192.0.2.0/24".into()];
    })
    .await;
    let signature = sign(SECRET, app.url(), TICKET.as_bytes());
    let post = |forwarded: Option<&'static str>| {
        let mut request = app
            .http
            .post(format!("{}{PATH}", app.address))
            .header("X-Qminder-Signature", &signature)
            .body(TICKET);
        if let Some(f) = forwarded {
            request = request.header("X-Forwarded-For", f);
        }
        request.send()
    };
    // 127.0.0.1 is not allowed, and it is no trusted proxy, so its header is ignored.
    for forwarded in [None, Some("192.0.2.5")] {
        let response = post(forwarded).await.expect("answer");
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"error":"ip_not_allowed"}"#
        );
    }
    assert_eq!(app.published().await, 0);
    app.stop().await;

    let app = spawn_app_with(broker::shared(), |s| {
        s.server.allow_cidrs = vec!["192.0.2.0/24".into()];
        s.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let signature = sign(SECRET, app.url(), TICKET.as_bytes());
    // Each case: the X-Forwarded-For header lines, in order. A proxy may add its own line
    // after one the client forged; the chain is all lines, read from the right.
    for (lines, status) in [
        (&["192.0.2.5"][..], 200),
        (&["198.51.100.1, 192.0.2.5"][..], 200),
        (&["192.0.2.5, 198.51.100.1"][..], 403),
        (&["192.0.2.5", "198.51.100.1"][..], 403),
        (&["198.51.100.1", "192.0.2.5"][..], 200),
    ] {
        let mut request = app
            .http
            .post(format!("{}{PATH}", app.address))
            .header("X-Qminder-Signature", &signature)
            .body(TICKET);
        for line in lines {
            request = request.header("X-Forwarded-For", *line);
        }
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), status, "{lines:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_over_http2_and_http1_with_a_configured_certificate() {
    let (app, tls) = spawn_tls_app().await;
    let port = app.port();
    let cert_pem = tls.cert_pem.clone();
    let url = format!("https://localhost:{port}{PATH}");
    let root = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("root");
    let signature = sign(SECRET, app.url(), TICKET.as_bytes());
    for (client, version) in [
        (
            reqwest::Client::builder()
                .add_root_certificate(root.clone())
                .build(),
            reqwest::Version::HTTP_2,
        ),
        (
            reqwest::Client::builder()
                .add_root_certificate(root.clone())
                .http1_only()
                .build(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let response = client
            .expect("client")
            .post(&url)
            .header("X-Qminder-Signature", &signature)
            .body(TICKET)
            .send()
            .await
            .expect("an answer over TLS");
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
    }
    // Plain HTTP on the TLS port, even correctly signed, gets no HTTP answer at all.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{PATH}"))
        .header("X-Qminder-Signature", &signature)
        .body(TICKET)
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP answered: {:?}",
        plain.map(|r| r.status())
    );
    app.stop().await;
}
