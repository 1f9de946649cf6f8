//! Requests the HTTP layer refuses before the bridge sees them: a request head that does
//! not parse (400), one that outgrows actix's head buffer (431), one that never completes
//! (408 after `server.client_request_timeout_ms`, 1.5 s here: the bridge tells a timed-out
//! head by time, give or take the 500 ms of actix's clock). actix-http answers these itself, so the
//! bridge counts them from how the connection ended (`src/connection_end.rs`), in
//! `qminder_bridge_connections_refused_total{reason}`, and a client cannot make it write a
//! log line per connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::broker;
use crate::helpers::process::BridgeProcess;

/// What one connection sends, and the status line it must get back.
struct Case {
    what: &'static str,
    sends: Vec<u8>,
    answer: &'static str,
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    let huge_head = format!(
        "POST /webhooks/qminder HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(200_000)
    );
    vec![
        Case {
            what: "a request line that is not HTTP",
            sends: b"GARBAGE LINE\r\n\r\n".to_vec(),
            answer: "HTTP/1.1 400",
            reason: "bad_request",
        },
        Case {
            what: "a Content-Length that is not a number",
            sends: b"POST /webhooks/qminder HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
                .to_vec(),
            answer: "HTTP/1.1 400",
            reason: "bad_request",
        },
        Case {
            what: "a head larger than actix's head buffer",
            sends: huge_head.into_bytes(),
            answer: "HTTP/1.1 431",
            reason: "headers_too_large",
        },
        Case {
            what: "half a head, then nothing",
            sends: b"POST /webhooks/qminder HTTP/1.1\r\nHost: x\r\n".to_vec(),
            answer: "HTTP/1.1 408",
            reason: "request_timeout",
        },
    ]
}

/// Sends `bytes` on a new connection and reads until the bridge closes it (10 s at most).
async fn send_and_read(host: &str, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(host).await.expect("connect");
    // A large head may be refused before it is all written: what was read is the answer.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let _ = read
        .await
        .expect("the bridge closes the connection within 10 s");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn metrics(bridge: &BridgeProcess) -> String {
    reqwest::get(format!("{}/metrics", bridge.address))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Polls `/metrics` until `reason` has been counted `want` times (5 s at most: a
/// connection is counted as it ends, just after its client read the close), and returns
/// the count last seen.
async fn wait_refused(bridge: &BridgeProcess, reason: &str, want: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = refused(&metrics(bridge).await, reason);
        if seen >= want || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refused(metrics: &str, reason: &str) -> f64 {
    let series = format!(r#"qminder_bridge_connections_refused_total{{reason="{reason}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_layer_refuses_are_counted_by_reason_and_not_logged_one_by_one() {
    let bridge = BridgeProcess::start(broker::shared(), |s| {
        s.server.client_request_timeout_ms = 1500;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    let host = bridge.address.trim_start_matches("http://").to_owned();
    const EACH: usize = 20;
    for case in cases() {
        let before = refused(&metrics(&bridge).await, case.reason);
        let answers = (0..EACH).map(|_| send_and_read(&host, &case.sends));
        for answer in futures_util::future::join_all(answers).await {
            assert!(answer.starts_with(case.answer), "{}: {answer:?}", case.what);
        }
        let after = wait_refused(&bridge, case.reason, before + EACH as f64).await;
        assert_eq!(after - before, EACH as f64, "{}", case.what);
    }
    let log = bridge.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "{} ERROR lines:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_end_without_a_refusal_are_not_counted_as_refused() {
    let bridge = BridgeProcess::start(broker::shared(), |s| {
        s.server.client_request_timeout_ms = 1500;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    let host = bridge.address.trim_start_matches("http://").to_owned();
    // A TCP probe that connects and leaves, and a client that leaves half-way through a
    // head, before the head timeout: no answer was sent, nothing was refused.
    for _ in 0..5 {
        drop(TcpStream::connect(&host).await.expect("connect"));
        let mut half = TcpStream::connect(&host).await.expect("connect");
        half.write_all(b"POST /webhooks/qminder HTTP/1.1\r\n")
            .await
            .expect("write");
        drop(half);
    }
    // A keep-alive client whose requests were answered, idle past the head timeout.
    let mut kept = TcpStream::connect(&host).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 512];
    let n = kept.read(&mut answer).await.expect("an answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    drop(kept);
    // A reader that waits past the head timeout sees that counted, so the ones above had
    // time to be.
    let late = send_and_read(&host, b"GET /healthz HTTP/1.1\r\n").await;
    assert!(late.starts_with("HTTP/1.1 408"), "{late:?}");
    wait_refused(&bridge, "request_timeout", 1.0).await;
    let text = metrics(&bridge).await;
    for reason in ["bad_request", "headers_too_large", "per_address_limit"] {
        assert_eq!(refused(&text, reason), 0.0, "{reason}");
    }
    assert_eq!(refused(&text, "request_timeout"), 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_is_counted_as_refused() {
    for http2 in [false, true] {
        let (app, _certificate) = crate::helpers::app::spawn_tls_app(http2).await;
        let host = format!("127.0.0.1:{}", app.port());
        // Plain HTTP to the TLS port: not a ClientHello.
        let answer = send_and_read(&host, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        let series = r#"qminder_bridge_connections_refused_total{reason="tls_handshake_failed"}"#;
        app.wait_for_metric(series, 1.0, Duration::from_secs(5))
            .await;
        app.stop().await;
    }
}
