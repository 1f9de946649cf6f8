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
            // Naming the crates keeps their per-connection lines on (telemetry.rs).
            ("RUST_LOG", "trace,actix_http=trace,rustls=trace"),
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
async fn serves_https_over_http1_and_over_http2_only_when_asked_to() {
    // HTTP/2 runs with limits no setting can lower (src/tls.rs), so it is opt-in: a client
    // that prefers it gets HTTP/1.1 unless server.tls.http2 is on.
    for (http2, preferred_gets) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let (app, tls) = spawn_tls_app(http2).await;
        let port = app.port();
        let url = format!("https://localhost:{port}{PATH}");
        let root = reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).expect("root");
        let signature = sign(SECRET, app.url(), TICKET.as_bytes());
        let prefers_h2 = reqwest::Client::builder().add_root_certificate(root.clone());
        let http1 = reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .http1_only();
        for (client, version) in [
            (prefers_h2, preferred_gets),
            (http1, reqwest::Version::HTTP_11),
        ] {
            let response = client
                .build()
                .expect("client")
                .post(&url)
                .header("X-Qminder-Signature", &signature)
                .body(TICKET)
                .send()
                .await
                .expect("an answer over TLS");
            assert_eq!(response.version(), version, "http2 = {http2}");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_cleartext_http2_on_the_plain_port() {
    let app = spawn_app_with(broker::shared(), |_| {}).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let signature = sign(SECRET, app.url(), TICKET.as_bytes());
    let answers = tokio::task::spawn_blocking(move || {
        let read_all = |mut stream: TcpStream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            answer
        };
        // Prior knowledge: the HTTP/2 connection preface, then an empty SETTINGS frame.
        let mut prior = TcpStream::connect(&address).expect("connect");
        prior
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .expect("write");
        let prior = read_all(prior);
        // An upgrade request: answered as the HTTP/1.1 request it also is, never 101.
        let mut upgrade = TcpStream::connect(&address).expect("connect");
        let request = format!(
            "POST {PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Qminder-Signature: {signature}\r\n\
             Content-Length: {}\r\n\r\n{TICKET}",
            TICKET.len()
        );
        upgrade.write_all(request.as_bytes()).expect("write");
        (prior, read_all(upgrade))
    })
    .await
    .expect("client");
    let (prior, upgrade) = (
        String::from_utf8_lossy(&answers.0).into_owned(),
        String::from_utf8_lossy(&answers.1).into_owned(),
    );
    // No SETTINGS frame back (it would begin with a 3-byte length and type 0x04): an
    // HTTP/1.1 error, or the connection closed.
    assert!(
        prior.is_empty() || prior.starts_with("HTTP/1.1 4"),
        "{prior:?}"
    );
    assert!(upgrade.starts_with("HTTP/1.1 200"), "{upgrade}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_an_environment_variable_ending_in_a_newline_is_trimmed_like_a_file() {
    // A Kubernetes Secret made with --from-file, exposed as a variable, ends in a newline.
    let with_newline = format!("{SECRET}\n");
    let bridge = BridgeProcess::start_with_env(
        broker::shared(),
        |_| {},
        &[("QMINDER_BRIDGE_TEST_SECRET", with_newline.as_str())],
    );
    bridge.wait_ready(Duration::from_secs(30)).await;
    let (status, answer) = bridge.post_signed(TICKET).await;
    assert_eq!(status, 200, "{answer}\n{}", bridge.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_flood_is_counted_in_the_metrics_not_logged_line_by_line() {
    let bridge = BridgeProcess::start(broker::shared(), |_| {});
    bridge.wait_ready(Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let url = format!("{}{PATH}", bridge.address);
    for _ in 0..200 {
        let response = client.post(&url).body(TICKET).send().await.expect("answer");
        assert_eq!(response.status(), 401);
    }
    let metrics = client
        .get(format!("{}/metrics", bridge.address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let series = format!(
        r#"qminder_bridge_events_rejected_total{{endpoint="{PATH}",reason="missing_signature"}} 200"#
    );
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    let log = bridge.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("missing_signature"))
        .count();
    assert!(
        lines <= 1,
        "{lines} log lines for 200 rejections at RUST_LOG=info:\n{log}"
    );
}
