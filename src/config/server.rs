//! `[server]`: the HTTP listener, its limits, timeouts and TLS.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Settings;

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// Largest accepted request body; larger ones get 413, refused by Content-Length before
    /// reading and capped while reading.
    pub max_body_bytes: usize,
    /// Webhook requests handled at once; beyond it requests get an immediate 503.
    pub max_in_flight: usize,
    /// Bound on a whole webhook request: the body must arrive within
    /// `request_timeout_ms − kafka.delivery_timeout_ms` (else 408), and Kafka then gets
    /// `delivery_timeout_ms` (else 503). Must exceed `kafka.delivery_timeout_ms`.
    pub request_timeout_ms: u64,
    /// On SIGTERM/SIGINT: time allowed for in-flight requests and the final flush.
    /// Must be at least `request_timeout_ms`.
    pub shutdown_timeout_ms: u64,
    /// Value of the `Retry-After` header sent with 503.
    pub retry_after_s: u32,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Time a client has to send a request's headers (slowloris defence); 408 after.
    pub client_request_timeout_ms: u64,
    /// Time a client has to acknowledge the connection's shutdown before it is dropped.
    pub client_disconnect_timeout_ms: u64,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive_s: u64,
    /// Concurrent connections each worker accepts; further ones wait in the backlog.
    pub max_connections_per_worker: usize,
    /// Largest total size of a webhook request's headers (names and values); 431 beyond.
    /// (actix-web itself refuses more than 96 headers or 128 KiB.)
    pub max_header_bytes: usize,
    /// If not empty, only clients in these networks (CIDRs or addresses) may POST webhooks;
    /// others get 403.
    pub allow_cidrs: Vec<String>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed when finding the client's address.
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) instead of plain HTTP.
    pub tls: Option<TlsSettings>,
}

/// `[server.tls]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM file with the private key.
    pub key_file: std::path::PathBuf,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_in_flight: 1024,
            request_timeout_ms: 10_000,
            shutdown_timeout_ms: 15_000,
            retry_after_s: 5,
            workers: 0,
            client_request_timeout_ms: 5_000,
            client_disconnect_timeout_ms: 1_000,
            keep_alive_s: 30,
            max_connections_per_worker: 10_000,
            max_header_bytes: 16 * 1024,
            allow_cidrs: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

impl Settings {
    pub(super) fn validate_server(&self, problems: &mut Vec<String>) {
        let s = &self.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen = {:?} is not an address; use host:port, e.g. \"0.0.0.0:8080\"",
                s.listen
            ));
        }
        if s.max_body_bytes == 0 || s.max_body_bytes > 32 * 1024 * 1024 {
            problems.push(
                "server.max_body_bytes must be between 1 and 33554432 (32 MiB; default 1048576)"
                    .into(),
            );
        }
        if s.max_in_flight == 0 || s.max_in_flight > 1_000_000 {
            problems
                .push("server.max_in_flight must be between 1 and 1000000 (default 1024)".into());
        }
        if s.client_request_timeout_ms == 0 {
            problems.push(
                "server.client_request_timeout_ms must be above 0, or slow clients can hold \
                 connections forever (default 5000)"
                    .into(),
            );
        }
        if s.max_connections_per_worker == 0 {
            problems
                .push("server.max_connections_per_worker must be above 0 (default 10000)".into());
        }
        for (key, list) in [
            ("server.allow_cidrs", &s.allow_cidrs),
            ("server.trusted_proxies", &s.trusted_proxies),
        ] {
            for cidr in list {
                if let Err(e) = crate::access::parse_cidr(cidr) {
                    problems.push(format!("{key}: {e}"));
                }
            }
        }
        if let Some(tls) = &s.tls
            && let Err(e) = crate::tls::server_config(&tls.cert_file, &tls.key_file)
        {
            problems.push(format!("server.tls: {e}"));
        }
        if s.max_header_bytes < 1024 {
            problems.push("server.max_header_bytes must be at least 1024 (default 16384)".into());
        }
        if s.request_timeout_ms <= self.kafka.delivery_timeout_ms {
            problems.push(format!(
                "server.request_timeout_ms ({}) must exceed kafka.delivery_timeout_ms ({}), \
                 or a request could end before Kafka answers; raise it",
                s.request_timeout_ms, self.kafka.delivery_timeout_ms
            ));
        }
        if s.shutdown_timeout_ms < s.request_timeout_ms {
            problems.push(format!(
                "server.shutdown_timeout_ms ({}) must be at least server.request_timeout_ms ({}), \
                 so requests in flight at shutdown can finish; raise it",
                s.shutdown_timeout_ms, s.request_timeout_ms
            ));
        }
    }
}
