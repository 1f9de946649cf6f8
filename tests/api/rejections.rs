//! Everything that is not a correctly signed webhook gets its status, a fixed JSON body, a
//! counted reason, and publishes nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::{PATH, SECRET, sign, spawn_app, spawn_app_with};

const BODY: &str =
    r#"{"type":"ticket_created","data":{"id":"1","created":{"date":"2020-05-25T00:00:00Z"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_every_bad_request_with_its_reason_and_publishes_nothing() {
    let app = spawn_app_with(crate::helpers::broker::shared(), |s| {
        s.server.max_body_bytes = 4096;
    })
    .await;
    let url = app.url().to_owned();
    let good = sign(SECRET, &url, BODY.as_bytes());
    let big = format!(
        r#"{{"type":"ticket_created","data":"{}"}}"#,
        "x".repeat(5000)
    );
    let big_signed = sign(SECRET, &url, big.as_bytes());
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("no signature", BODY.into(), None, 401, "missing_signature"),
        (
            "empty signature",
            BODY.into(),
            Some(String::new()),
            401,
            "invalid_signature",
        ),
        (
            "wrong secret",
            BODY.into(),
            Some(sign("other", &url, BODY.as_bytes())),
            401,
            "invalid_signature",
        ),
        (
            "signed over the body alone",
            BODY.into(),
            Some(sign(SECRET, "", BODY.as_bytes())),
            401,
            "invalid_signature",
        ),
        (
            "URL with a trailing slash",
            BODY.into(),
            Some(sign(SECRET, &format!("{url}/"), BODY.as_bytes())),
            401,
            "invalid_signature",
        ),
        (
            "http instead of https",
            BODY.into(),
            Some(sign(SECRET, &url.replace("https", "http"), BODY.as_bytes())),
            401,
            "invalid_signature",
        ),
        (
            "URL with a query",
            BODY.into(),
            Some(sign(SECRET, &format!("{url}?a=1"), BODY.as_bytes())),
            401,
            "invalid_signature",
        ),
        (
            "signature of another body",
            format!("{BODY} "),
            Some(good.clone()),
            401,
            "invalid_signature",
        ),
        (
            "truncated signature",
            BODY.into(),
            Some(good[..63].to_owned()),
            401,
            "invalid_signature",
        ),
        (
            "non-hex signature",
            BODY.into(),
            Some(format!("{}z", &good[..63])),
            401,
            "invalid_signature",
        ),
        (
            "prefixed signature",
            BODY.into(),
            Some(format!("sha256={good}")),
            401,
            "invalid_signature",
        ),
        (
            "body over max_body_bytes",
            big.clone(),
            Some(big_signed),
            413,
            "body_too_large",
        ),
    ];
    for (name, body, signature, status, reason) in &cases {
        let response = app.post(PATH, body, signature.as_deref()).await;
        assert_eq!(response.status(), *status, "{name}");
        assert!(response.headers().get("retry-after").is_none(), "{name}");
        let text = response.text().await.expect("a body");
        assert_eq!(text, format!(r#"{{"error":"{reason}"}}"#), "{name}");
    }
    let others = [
        (
            app.http.get(format!("{}{PATH}", app.address)),
            405,
            "method_not_allowed",
        ),
        (
            app.http.put(format!("{}{PATH}", app.address)).body(BODY),
            405,
            "method_not_allowed",
        ),
        (
            app.http
                .post(format!("{}/webhooks/other", app.address))
                .body(BODY),
            404,
            "not_found",
        ),
    ];
    for (request, status, reason) in others {
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status(), status);
        assert_eq!(
            response.text().await.expect("body"),
            format!(r#"{{"error":"{reason}"}}"#)
        );
    }

    for reason in ["missing_signature", "body_too_large", "method_not_allowed"] {
        let expected = cases.iter().filter(|c| c.4 == reason).count().max(1);
        let expected = if reason == "method_not_allowed" {
            2
        } else {
            expected
        };
        let series = format!(
            r#"qminder_bridge_events_rejected_total{{endpoint="{PATH}",reason="{reason}"}}"#
        );
        assert_eq!(app.metric(&series).await, expected as f64, "{reason}");
    }
    let invalid = cases.iter().filter(|c| c.4 == "invalid_signature").count();
    let series = format!(
        r#"qminder_bridge_events_rejected_total{{endpoint="{PATH}",reason="invalid_signature"}}"#
    );
    assert_eq!(app.metric(&series).await, invalid as f64);
    assert_eq!(
        app.metric(r#"qminder_bridge_events_rejected_total{endpoint="none",reason="not_found"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.published().await,
        0,
        "a rejected request published a record"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_an_upper_case_hex_signature() {
    let app = spawn_app().await;
    let signature = sign(SECRET, app.url(), BODY.as_bytes()).to_uppercase();
    assert_eq!(app.post(PATH, BODY, Some(&signature)).await.status(), 200);
    app.stop().await;
}

/// Sends headers and part of a body over a raw connection, so the request stays in flight.
fn start_slow_request(address: &str, headers: &str) -> TcpStream {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect");
    stream
        .write_all(format!("POST {PATH} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").as_bytes())
        .expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_oversized_chunked_body_while_reading_it() {
    let app = spawn_app_with(crate::helpers::broker::shared(), |s| {
        s.server.max_body_bytes = 1000;
    })
    .await;
    let signature = sign(SECRET, app.url(), b"whatever");
    let address = app.address.clone();
    let status = tokio::task::spawn_blocking(move || {
        let mut stream = start_slow_request(
            &address,
            &format!("X-Qminder-Signature: {signature}\r\nTransfer-Encoding: chunked\r\n"),
        );
        // No Content-Length: 600 + 600 bytes, the cap is hit while reading.
        for _ in 0..2 {
            let chunk = "a".repeat(600);
            let _ = stream.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = [0u8; 256];
        let n = stream.read(&mut answer).expect("an answer");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .expect("client");
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(status.contains(r#"{"error":"body_too_large"}"#), "{status}");
    assert_eq!(app.published().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_408_when_the_body_does_not_arrive_in_time_for_kafka_to_fit_the_request_timeout() {
    // The body gets request_timeout_ms - delivery_timeout_ms = 500 ms, not 3.5 s: the
    // Kafka wait that would follow must fit in the request timeout too.
    let app = spawn_app_with(crate::helpers::broker::shared(), |s| {
        s.kafka.delivery_timeout_ms = 3000;
        s.server.request_timeout_ms = 3500;
        s.server.shutdown_timeout_ms = 5000;
    })
    .await;
    let signature = sign(SECRET, app.url(), BODY.as_bytes());
    let address = app.address.clone();
    let (answer, waited) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut stream = start_slow_request(
            &address,
            &format!(
                "X-Qminder-Signature: {signature}\r\nContent-Length: {}\r\n",
                BODY.len()
            ),
        );
        // Half the body, then nothing more.
        let _ = stream.write_all(&BODY.as_bytes()[..BODY.len() / 2]);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = [0u8; 512];
        let n = stream
            .read(&mut answer)
            .expect("an answer before the read timeout");
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        (answer, started.elapsed())
    })
    .await
    .expect("client");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited < Duration::from_millis(2500),
        "the body had {waited:?}"
    );
    assert!(
        answer.contains(r#"{"error":"request_timeout"}"#),
        "{answer}"
    );
    let series = format!(
        r#"qminder_bridge_events_rejected_total{{endpoint="{PATH}",reason="request_timeout"}}"#
    );
    assert_eq!(app.metric(&series).await, 1.0);
    assert_eq!(app.published().await, 0);
    app.stop().await;
}

/// The bridge learns the topics' `max.message.bytes` at start (DescribeConfigs; tansu
/// reports what was set at creation) and refuses, before reading it, a body that declares
/// more than any routed topic accepts: it could never be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_before_reading_a_body_larger_than_any_topic_accepts() {
    let bootstrap = crate::helpers::broker::shared();
    let app = spawn_app_with(bootstrap, |s| {
        s.kafka.create_topics = false;
        let topics: Vec<String> = s.kafka.router().topics();
        crate::helpers::kafka::create_topics(bootstrap, &topics, &[("max.message.bytes", "2000")]);
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.metric("qminder_bridge_kafka_max_record_bytes").await != 2000.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the limit was never learned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signature = sign(SECRET, app.url(), b"whatever");
    let address = app.address.clone();
    let answer = tokio::task::spawn_blocking(move || {
        // Only the head: the answer comes before any of the body is sent.
        let mut stream = start_slow_request(
            &address,
            &format!("X-Qminder-Signature: {signature}\r\nContent-Length: 3000\r\n"),
        );
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).expect("an answer before the body");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .expect("client");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#"{"error":"body_too_large"}"#), "{answer}");
    // A body that fits is delivered.
    assert_eq!(app.post_signed(BODY).await.status(), 200);
    app.stop().await;
}
