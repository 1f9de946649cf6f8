//! Requests the HTTP layer refuses before the bridge sees them: a request head that does
//! not parse (400), one that outgrows actix's head buffer (431), one that never completes
//! (408 after `server.client_request_timeout_ms`), and failed TLS handshakes. actix-http
//! answers these itself, so the bridge counts them from how the connection ended
//! (`src/connection_end/`), in `qminder_bridge_connections_refused_total{reason}`, and a
//! client cannot make it write a log line per connection.

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
            what: "more than 96 headers",
            sends: format!(
                "POST /webhooks/qminder HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..100)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
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

/// Fails, listing them, if any line of `bridge`'s log is `unwanted`.
fn assert_no_log_lines(bridge: &BridgeProcess, unwanted: impl Fn(&str) -> bool) {
    let log = bridge.log();
    let found: Vec<&str> = log.lines().filter(|l| unwanted(l)).collect();
    assert!(
        found.is_empty(),
        "{} lines:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The head of a webhook POST with a well-formed but wrong signature, declaring a body of
/// 100 bytes, with `extra` header lines (each ending in CRLF), then `body_start`.
fn wrongly_signed_head(extra: &str, body_start: &str) -> String {
    format!(
        "POST /webhooks/qminder HTTP/1.1\r\nHost: x\r\nX-Qminder-Signature: {}\r\n{extra}\
         Content-Length: 100\r\n\r\n{body_start}",
        "0".repeat(64)
    )
}

/// A bridge process with `tweak`, ready, and its `host:port`.
async fn ready_bridge(
    tweak: impl FnOnce(&mut qminder_bridge::config::Settings),
) -> (BridgeProcess, String) {
    let bridge = BridgeProcess::start(broker::shared(), tweak);
    bridge.wait_ready(Duration::from_secs(30)).await;
    let host = bridge.address.trim_start_matches("http://").to_owned();
    (bridge, host)
}

/// Polls `/metrics` until `reason` has been counted `want` times (5 s at most: a
/// connection is counted as it ends, just after its client read the close), and returns
/// the count last seen.
async fn wait_refused(bridge: &BridgeProcess, reason: &str, want: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = refused(&bridge.metrics().await, reason);
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
    let (bridge, host) = ready_bridge(|s| {
        s.server.client_request_timeout_ms = 500;
    })
    .await;
    const EACH: usize = 20;
    for case in cases() {
        let before = refused(&bridge.metrics().await, case.reason);
        let answers = (0..EACH).map(|_| send_and_read(&host, &case.sends));
        for answer in futures_util::future::join_all(answers).await {
            assert!(answer.starts_with(case.answer), "{}: {answer:?}", case.what);
        }
        let after = wait_refused(&bridge, case.reason, before + EACH as f64).await;
        assert_eq!(after - before, EACH as f64, "{}", case.what);
    }
    assert_no_log_lines(&bridge, |l| l.contains("ERROR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_end_without_a_refusal_of_the_http_layer_are_not_counted() {
    let (bridge, host) = ready_bridge(|s| {
        s.server.client_request_timeout_ms = 500;
        s.server.body_timeout_ms = 300;
    })
    .await;
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
    // A keep-alive client whose request was answered, idle past the head timeout.
    let mut kept = TcpStream::connect(&host).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 512];
    let n = kept.read(&mut answer).await.expect("an answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(kept);
    // The bridge's own 408 (a body too slow, after a head that reached it) is the app's
    // refusal, counted with the requests', not the HTTP layer's.
    let slow_body = wrongly_signed_head("", "{");
    let own = send_and_read(&host, slow_body.as_bytes()).await;
    assert!(
        own.starts_with("HTTP/1.1 408") && own.ends_with(r#"{"error":"request_timeout"}"#),
        "{own:?}"
    );
    // One head timeout last: once it is counted, the connections above have ended too.
    let late = send_and_read(&host, b"GET /healthz HTTP/1.1\r\n").await;
    assert!(late.starts_with("HTTP/1.1 408"), "{late:?}");
    assert_eq!(wait_refused(&bridge, "request_timeout", 1.0).await, 1.0);
    let text = bridge.metrics().await;
    for reason in [
        "bad_request",
        "headers_too_large",
        "per_address_limit",
        "request_timeout",
    ] {
        let want = if reason == "request_timeout" {
            1.0
        } else {
            0.0
        };
        assert_eq!(refused(&text, reason), want, "{reason}");
    }
    let own = format!(
        r#"qminder_bridge_events_rejected_total{{endpoint="{}",reason="request_timeout"}} 1"#,
        crate::helpers::PATH
    );
    assert!(text.contains(&own), "{own}");
}

/// The bridge on TLS with HTTP/2 offered, and its certificate (DER).
fn tls_bridge() -> (BridgeProcess, Vec<u8>) {
    let dir = tempfile::tempdir().expect("dir");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, generated.cert.pem()).expect("write");
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).expect("write");
    let bridge = BridgeProcess::start(broker::shared(), |s| {
        s.server.tls = Some(qminder_bridge::config::TlsSettings {
            cert_file,
            key_file,
            http2: true,
        });
    });
    // The files are read at start; the directory may go once the bridge is ready.
    std::mem::forget(dir);
    (bridge, generated.cert.der().to_vec())
}

/// What is sent first on a TLS connection instead of a ClientHello.
const NOT_CLIENT_HELLOS: [(&str, &[u8]); 2] = [
    // rustls logs a WARN for this one in its own code ("Received a ChangeCipherSpec
    // message while expecting [Handshake]").
    (
        "a ChangeCipherSpec record",
        &[0x14, 0x03, 0x01, 0x00, 0x01, 0x01],
    ),
    ("plain HTTP", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_are_counted_and_not_logged_but_tcp_probes_are_neither() {
    let (bridge, _cert) = tls_bridge();
    bridge.wait_ready(Duration::from_secs(30)).await;
    let host = bridge.address.trim_start_matches("https://").to_owned();
    // TCP probes (a load balancer's health check) connect and leave: not refusals.
    for _ in 0..5 {
        drop(TcpStream::connect(&host).await.expect("connect"));
    }
    const EACH: usize = 10;
    for (what, record) in NOT_CLIENT_HELLOS {
        let sent = (0..EACH).map(|_| send_and_read(&host, record));
        for answer in futures_util::future::join_all(sent).await {
            // Nothing, or a TLS alert record (content type 21).
            assert!(
                answer.is_empty() || answer.starts_with('\u{15}'),
                "{what}: {answer:?}"
            );
        }
    }
    let want = (NOT_CLIENT_HELLOS.len() * EACH) as f64;
    assert_eq!(
        wait_refused(&bridge, "tls_handshake_failed", want).await,
        want
    );
    // Requests served over TLS (`/metrics`, by a client that then leaves): nothing refused.
    let text = bridge.metrics().await;
    assert_eq!(
        refused(&text, "tls_handshake_failed"),
        want,
        "the probes were not counted"
    );
    assert_eq!(refused(&text, "request_timeout"), 0.0);
    assert_no_log_lines(&bridge, |l| {
        (l.contains("WARN") || l.contains("ERROR"))
            && (l.contains(" rustls::") || l.contains(" actix_http::"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_head_never_finished_on_a_kept_alive_connection_is_closed_and_counted() {
    // actix-http times out only a connection's first head; the bridge closes a connection
    // that has gone request_timeout + keep_alive + client_request_timeout (4.5 s here)
    // without a request.
    let (bridge, host) = ready_bridge(|s| {
        s.server.client_request_timeout_ms = 500;
        s.server.keep_alive_s = 1;
        s.server.request_timeout_ms = 3000;
        s.kafka.delivery_timeout_ms = 2000;
    })
    .await;
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 512];
    let n = stream.read(&mut first).await.expect("an answer");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest));
    let _ = closed
        .await
        .expect("the bridge closes the connection (before: held for good)");
    assert_eq!(wait_refused(&bridge, "request_timeout", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_by_the_client_is_a_bad_request_not_a_wrong_signature() {
    let (_bridge, host) = ready_bridge(|_| {}).await;
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    let head = wrongly_signed_head("", "{\"type\":");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let _ = read.await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.ends_with(r#"{"error":"bad_request"}"#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_an_http2_client_was_never_sent_do_not_write_a_log_line_each() {
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let (bridge, cert) = tls_bridge();
    bridge.wait_ready(Duration::from_secs(30)).await;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(cert)).expect("root");
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let host = bridge.address.trim_start_matches("https://").to_owned();
    let tcp = TcpStream::connect(&host).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The preface, empty SETTINGS, then PING frames flagged ACK for pings never sent.
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for i in 0..200u8 {
        frames.extend_from_slice(&[0, 0, 8, 6, 1, 0, 0, 0, 0, i, 0, 0, 0, 0, 0, 0, 0]);
    }
    // Last, a real PING: its ack comes back once the frames before it were handled.
    frames.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(b"lastping");
    tls.write_all(&frames).await.expect("write");
    tls.flush().await.expect("flush");
    let mut answer = Vec::new();
    let acked = async {
        let mut chunk = [0u8; 1024];
        while !answer.windows(8).any(|w| w == b"lastping") {
            let n = tls.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before the ping's ack");
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), acked)
        .await
        .expect("the last ping acknowledged");
    drop(tls);
    assert_no_log_lines(&bridge, |l| l.contains(" h2::"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_resets_mid_body_is_counted_as_abandoned() {
    let (bridge, host) = ready_bridge(|_| {}).await;
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    let head = wrongly_signed_head("Expect: 100-continue\r\n", "");
    stream.write_all(head.as_bytes()).await.expect("write");
    // actix answers 100 Continue as it hands the request to the bridge.
    let mut interim = [0u8; 64];
    let n = stream.read(&mut interim).await.expect("100 Continue");
    assert!(
        interim[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        &interim[..n]
    );
    // A reset with nothing else to read: actix drops the handler (a reset read together
    // with data it takes for the body's end instead, answered 400).
    stream.set_zero_linger().expect("linger 0: a reset");
    drop(stream);
    let series = format!(
        r#"qminder_bridge_requests_abandoned_total{{endpoint="{}",stage="unverified"}} "#,
        crate::helpers::PATH
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = bridge.metrics().await;
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or("0");
        if value == "1" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{series}{value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rejected = bridge.metrics().await;
    assert!(
        !rejected.contains("reason=\"bad_request\"} 1"),
        "counted once, as abandoned"
    );
}
