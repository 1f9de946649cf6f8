//! Kafka over TLS. tansu 0.6.0 did not serve TLS here (`--cert` alone starts a plain
//! listener; `--cert` with `--key` is refused), so a TLS-terminating proxy (rustls) sits in
//! front of a real tansu, which advertises the proxy's address: librdkafka does a real TLS
//! handshake, verifies the broker's certificate against `[kafka.security] ca_file`, and
//! produces through it.

use std::sync::Arc;
use std::time::Duration;

use qminder_bridge::config::{KafkaSecurity, SecurityProtocol};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::helpers::broker::{Tansu, free_port};
use crate::helpers::{kafka, spawn_app_unready, spawn_app_with};

/// Accepts TLS on `listener` and forwards the plaintext to `backend`, until dropped.
fn tls_proxy(
    listener: TcpListener,
    cert_pem: &str,
    key_pem: &str,
    backend: u16,
) -> tokio::task::JoinHandle<()> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", backend)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    })
}

fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_tls_after_verifying_the_brokers_certificate() {
    let tls_port = free_port();
    let broker = Tansu::start_advertising(tls_port);
    let listener = TcpListener::bind(("127.0.0.1", tls_port))
        .await
        .expect("proxy port");
    let (cert_pem, key_pem) = self_signed();
    let proxy = tls_proxy(listener, &cert_pem, &key_pem, broker.port());
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert_pem).expect("write");
    let (other_pem, _) = self_signed();
    let wrong_ca = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong_ca, &other_pem).expect("write");
    let bootstrap = format!("127.0.0.1:{tls_port}");

    let app = spawn_app_with(&bootstrap, |s| {
        s.kafka.security = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ca_file: Some(ca_file.clone()),
            ..KafkaSecurity::default()
        };
    })
    .await;
    let body = r#"{"type":"ticket_created","data":{"id":"tls-1"}}"#;
    let response = app.post_signed(body).await;
    assert_eq!(response.status(), 200);
    let ack: Value = response.json().await.expect("ack");
    let ca = ca_file.display().to_string();
    let record = tokio::task::spawn_blocking(move || {
        kafka::read_at_with(
            &bootstrap,
            &[("security.protocol", "ssl"), ("ssl.ca.location", &ca)],
            ack["topic"].as_str().expect("topic"),
            i32::try_from(ack["partition"].as_i64().expect("partition")).expect("i32"),
            ack["offset"].as_i64().expect("offset"),
        )
    })
    .await
    .expect("reader");
    assert_eq!(record.key_str(), Some("tls-1"));
    app.stop().await;

    // A certificate the configured CA did not sign: never ready, and nothing is delivered.
    let bootstrap = format!("127.0.0.1:{tls_port}");
    let untrusting = spawn_app_unready(&bootstrap, |s| {
        s.kafka.delivery_timeout_ms = 1000;
        s.server.request_timeout_ms = 2000;
        s.server.shutdown_timeout_ms = 5000;
        s.kafka.security = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ca_file: Some(wrong_ca.clone()),
            ..KafkaSecurity::default()
        };
    })
    .await;
    assert_eq!(untrusting.post_signed(body).await.status(), 503);
    assert_eq!(
        untrusting
            .metric(r#"qminder_bridge_events_failed_total{event_type="ticket_created",reason="timeout"}"#)
            .await,
        1.0
    );
    // Many health checks (every 200 ms) over 3 s: not one of them may find a broker.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(
            untrusting.readyz().await,
            503,
            "ready through an untrusted TLS peer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Had it trusted the peer, it would have created its topics and published the event.
    let topics = untrusting.topics();
    let ca = ca_file.display().to_string();
    let published = tokio::task::spawn_blocking(move || {
        kafka::count_with(
            &bootstrap,
            &[("security.protocol", "ssl"), ("ssl.ca.location", &ca)],
            &topics,
        )
    })
    .await
    .expect("counter");
    assert_eq!(published, 0, "nothing reached the broker");
    untrusting.stop().await;
    proxy.abort();
}
