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
    /// Authenticated webhook requests handled at once (a slot is taken once the signature
    /// has matched); beyond it requests get an immediate 503 `overloaded`.
    pub max_in_flight: usize,
    /// Sum of the bodies of authenticated requests being handled; beyond it, 503
    /// `overloaded`. At least `max_body_bytes`.
    pub max_in_flight_body_bytes: usize,
    /// Sum of the bodies being read whose signature is not yet checked, across all
    /// connections, beyond each request's own first 16 KiB: what unauthenticated clients
    /// can make the bridge hold. Without room, a larger body gets 503
    /// `body_budget_exhausted` at once. At least `max_body_bytes`.
    pub max_unverified_body_bytes: usize,
    /// Time a body has to arrive once the headers are in (408 after); at most
    /// `request_timeout_ms − kafka.delivery_timeout_ms` is used. Qminder sends its few KiB
    /// at once, so this bounds how long a client that drips can hold a connection.
    pub body_timeout_ms: u64,
    /// The memory the bridge may use (the pod's limit): `check-config` and `serve` warn
    /// when the limits' worst case (docs/reliability.md, "How much memory") exceeds it.
    pub memory_limit_bytes: u64,
    /// Bound on a whole webhook request: the body must arrive within
    /// `min(body_timeout_ms, request_timeout_ms − kafka.delivery_timeout_ms)` (else 408), and
    /// Kafka then gets `delivery_timeout_ms` (else 503). Must exceed
    /// `kafka.delivery_timeout_ms`.
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
    /// Concurrent connections, all workers together (each takes its share); further ones
    /// wait in the kernel's backlog. A term of the memory bound: ~40 KiB each at worst.
    pub max_connections: usize,
    /// Concurrent connections one client address (an IPv4 address, an IPv6 /64) may hold;
    /// further ones are closed at once. Not applied to `trusted_proxies`. 0: no cap (set it
    /// behind SNAT or a balancer that hides client addresses without X-Forwarded-For).
    pub max_connections_per_address: usize,
    /// Deprecated: concurrent connections per worker. When set it wins over
    /// `max_connections` (workers × this), and a warning suggests `max_connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_worker: Option<usize>,
    /// Largest total size of a webhook request's headers (names and values); 431 beyond.
    /// (actix-web itself refuses more than 96 headers or 128 KiB.)
    pub max_header_bytes: usize,
    /// If not empty, only clients in these networks (CIDRs or addresses) may POST webhooks;
    /// others get 403.
    pub allow_cidrs: Vec<String>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed when finding the client's address.
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS (HTTP/1.1; HTTP/2 only if `tls.http2`) instead of plain HTTP.
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
    /// Also offer HTTP/2 (ALPN `h2`). Off: actix-http runs HTTP/2 with the h2 crate's
    /// default limits (16 MiB header lists, unlimited streams per connection), which no
    /// setting here can lower (`tls.rs`); `check-config` warns when it is on.
    #[serde(default)]
    pub http2: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_in_flight: 1024,
            max_in_flight_body_bytes: 16 * 1024 * 1024,
            max_unverified_body_bytes: 16 * 1024 * 1024,
            body_timeout_ms: 2_000,
            memory_limit_bytes: 256 * 1024 * 1024,
            request_timeout_ms: 10_000,
            shutdown_timeout_ms: 15_000,
            retry_after_s: 5,
            workers: 0,
            client_request_timeout_ms: 5_000,
            client_disconnect_timeout_ms: 1_000,
            keep_alive_s: 30,
            max_connections: 2048,
            max_connections_per_address: 256,
            max_connections_per_worker: None,
            max_header_bytes: 16 * 1024,
            allow_cidrs: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

impl Settings {
    /// HTTP workers: `server.workers`, or one per CPU the process may use.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }

    /// Connections each worker accepts: its share of `server.max_connections` (rounded
    /// up), or the deprecated `max_connections_per_worker`.
    pub fn connections_per_worker(&self) -> usize {
        self.server
            .max_connections_per_worker
            .unwrap_or_else(|| self.server.max_connections.div_ceil(self.workers()))
    }

    /// Connections all workers accept together.
    pub fn connections(&self) -> usize {
        self.connections_per_worker() * self.workers()
    }

    /// How long a body may take to arrive: `server.body_timeout_ms`, but never more than
    /// what `request_timeout_ms` leaves after Kafka's `delivery_timeout_ms`.
    pub fn body_timeout_ms(&self) -> u64 {
        let left = self
            .server
            .request_timeout_ms
            .saturating_sub(self.kafka.delivery_timeout_ms);
        self.server.body_timeout_ms.min(left).max(1)
    }

    /// How long an append may wait for the spool's fsync: `spool.write_timeout_ms`, but
    /// never more than what `request_timeout_ms` leaves after the body's deadline.
    pub fn spool_write_timeout_ms(&self) -> u64 {
        let left = self
            .server
            .request_timeout_ms
            .saturating_sub(self.body_timeout_ms());
        self.spool.write_timeout_ms.min(left).max(1)
    }

    pub(super) fn validate_server(&self, problems: &mut Vec<String>) {
        self.validate_server_limits(problems);
        self.validate_server_timeouts(problems);
        self.validate_server_network(problems);
    }

    /// Body, header, in-flight and connection limits.
    fn validate_server_limits(&self, problems: &mut Vec<String>) {
        let s = &self.server;
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
        for (key, budget) in [
            (
                "server.max_unverified_body_bytes",
                s.max_unverified_body_bytes,
            ),
            (
                "server.max_in_flight_body_bytes",
                s.max_in_flight_body_bytes,
            ),
        ] {
            if budget < s.max_body_bytes && s.max_body_bytes <= 32 * 1024 * 1024 {
                problems.push(format!(
                    "{key} ({budget}) is below server.max_body_bytes ({}): the largest body \
                     allowed could never be read; raise it or lower max_body_bytes",
                    s.max_body_bytes
                ));
            }
        }
        if s.max_connections == 0 || s.max_connections_per_worker == Some(0) {
            problems.push("server.max_connections must be above 0 (default 2048)".into());
        }
        if s.max_header_bytes < 1024 {
            problems.push("server.max_header_bytes must be at least 1024 (default 16384)".into());
        }
    }

    /// The timeouts, and how they must nest.
    fn validate_server_timeouts(&self, problems: &mut Vec<String>) {
        let s = &self.server;
        if s.body_timeout_ms == 0 {
            problems.push(
                "server.body_timeout_ms must be above 0 (default 2000: Qminder sends its body \
                 at once)"
                    .into(),
            );
        }
        if s.client_request_timeout_ms == 0 {
            problems.push(
                "server.client_request_timeout_ms must be above 0, or slow clients can hold \
                 connections forever (default 5000)"
                    .into(),
            );
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

    /// The address, the access lists and TLS.
    fn validate_server_network(&self, problems: &mut Vec<String>) {
        let s = &self.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen = {:?} is not an address; use host:port, e.g. \"0.0.0.0:8080\"",
                s.listen
            ));
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
            && let Err(e) = crate::tls::Certificates::load(&tls.cert_file, &tls.key_file)
        {
            problems.push(format!("server.tls: {e}"));
        }
    }
}
