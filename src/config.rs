//! The typed configuration tree, its layering and its validation.
//!
//! Layers, later wins: built-in defaults → the TOML file → environment variables
//! `QMINDER_BRIDGE__<SECTION>__<KEY>` (e.g. `QMINDER_BRIDGE__KAFKA__BOOTSTRAP_SERVERS`).
//! Unknown keys are errors (`deny_unknown_fields`), units are in key names, and
//! [`Settings::validate`] lists every problem with how to fix it. `config/example.toml`
//! is the annotated reference; keep it in step with this file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::RecordFormat;
use crate::secret::SecretSpec;

/// `bootstrap_servers` value that starts librdkafka's in-process mock cluster.
pub const EMBEDDED: &str = "embedded";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The HTTP side: listener, limits, timeouts.
    pub server: ServerSettings,
    /// The Kafka side: brokers, topics, delivery bounds, record format.
    pub kafka: KafkaSettings,
    /// Log output.
    pub log: LogSettings,
    /// Replay and duplicate suppression.
    pub dedupe: DedupeSettings,
    /// Personal-data controls: drop or hash named fields of `data`.
    pub privacy: PrivacySettings,
    /// Spool mode: acknowledge once durable on local disk, forward to Kafka in the background.
    pub spool: SpoolSettings,
    /// The webhooks, as registered in Qminder. At least one.
    pub endpoints: Vec<EndpointSettings>,
}

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
    /// Bound on a whole webhook request: reading the body plus the Kafka delivery.
    /// Must exceed `kafka.delivery_timeout_ms`.
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

/// `[kafka]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list, or `embedded` for an in-process mock cluster
    /// (try-out only: nothing persists).
    pub bootstrap_servers: String,
    /// Known event types go to `<topic_prefix>.<event_type>` unless overridden in `topics`.
    pub topic_prefix: String,
    /// Topic for event types without a topic of their own. Default `<topic_prefix>.unknown`.
    pub unknown_topic: Option<String>,
    /// Topic for authenticated bodies that are not events. Default `<topic_prefix>.deadletter`.
    pub dead_letter_topic: Option<String>,
    /// Longest wait for Kafka's acknowledgement before answering 503. Also librdkafka's
    /// `message.timeout.ms`, so librdkafka gives up on the record at the same time.
    pub delivery_timeout_ms: u64,
    /// `structured` (CloudEvents JSON value) or `binary` (data value, `ce_*` headers).
    pub record_format: RecordFormat,
    /// Create missing topics at start-up (and keep trying until the broker answers).
    pub create_topics: bool,
    /// Partitions of topics the bridge creates.
    pub partitions: i32,
    /// Replication factor of topics the bridge creates.
    pub replication_factor: i32,
    /// How often readiness asks the broker for metadata.
    pub health_interval_ms: u64,
    /// Per-event-type topic overrides, e.g. `ticket_created = "tickets.created"`. May name
    /// types Qminder adds later.
    pub topics: BTreeMap<String, String>,
    /// librdkafka producer properties passed through as they are, e.g.
    /// `"compression.type" = "zstd"`. Settings that weaken delivery guarantees are refused.
    pub librdkafka: BTreeMap<String, String>,
    /// TLS and SASL to the brokers.
    pub security: KafkaSecurity,
}

/// `[kafka.security]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// PEM file of the CA(s) that signed the brokers' certificates (default: the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by TLS.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
    /// Password of `key_file`, if it is encrypted: literal, `env:NAME` or `file:PATH`.
    pub key_password: Option<SecretSpec>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password: literal, `env:NAME` or `file:PATH`.
    pub sasl_password: Option<SecretSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: "qminder".into(),
            unknown_topic: None,
            dead_letter_topic: None,
            delivery_timeout_ms: 5_000,
            record_format: RecordFormat::Structured,
            create_topics: false,
            partitions: 3,
            replication_factor: 3,
            health_interval_ms: 1_000,
            topics: BTreeMap::new(),
            librdkafka: BTreeMap::new(),
            security: KafkaSecurity::default(),
        }
    }
}

impl KafkaSettings {
    pub fn unknown_topic(&self) -> String {
        self.unknown_topic
            .clone()
            .unwrap_or_else(|| format!("{}.unknown", self.topic_prefix))
    }

    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.deadletter", self.topic_prefix))
    }

    pub fn is_embedded(&self) -> bool {
        self.bootstrap_servers == EMBEDDED
    }
}

/// `[spool]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSettings {
    /// Answer 2xx once the event is fsynced to the spool (instead of after Kafka's ack).
    pub enabled: bool,
    /// Directory of the spool's segment files and cursor. Must survive restarts.
    pub dir: std::path::PathBuf,
    /// Most disk the spool may use; beyond it webhooks get 503 until forwarding frees room.
    pub max_bytes: u64,
    /// Size at which a segment file is closed and a new one started; forwarded segments
    /// are deleted whole.
    pub segment_bytes: u64,
    /// Records the forwarder hands to Kafka at once.
    pub forward_batch: usize,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "/var/lib/qminder-bridge/spool".into(),
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            forward_batch: 512,
        }
    }
}

/// `[dedupe]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeSettings {
    /// Answer a webhook whose id was already acknowledged within the window with the
    /// original acknowledgement, without publishing it again.
    pub enabled: bool,
    /// How long an acknowledged id is remembered.
    pub window_s: u64,
    /// Most ids remembered (about 100 bytes each); the oldest are forgotten first.
    pub max_entries: usize,
}

impl Default for DedupeSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            window_s: 3600,
            max_entries: 100_000,
        }
    }
}

/// `[privacy]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Key of the HMAC that `hash` uses: literal, `env:NAME` or `file:PATH`. Required when
    /// any field is hashed; keep it stable, or hashes stop matching across events.
    pub hash_key: Option<SecretSpec>,
    /// Field paths under `data` (dots for nesting, e.g. `called.caller`) → `drop` or `hash`.
    pub fields: BTreeMap<String, crate::privacy::Action>,
}

/// `[log]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (human) or `json` (one object per line). The level comes from `RUST_LOG`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[[endpoints]]`: one webhook registered in Qminder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// The path this bridge serves it on, e.g. `/webhooks/qminder`.
    pub path: String,
    /// The URL exactly as registered in Qminder; part of what is signed.
    pub url: String,
    /// The webhook's secret(s): literal, `env:NAME` or `file:PATH`. Several during rotation.
    pub secrets: Vec<SecretSpec>,
    /// CloudEvents `source` of its events. Default: `url`.
    #[serde(default)]
    pub source: Option<String>,
}

impl EndpointSettings {
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.url)
    }
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load the configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Loads defaults, then `file` (if any), then `QMINDER_BRIDGE__…` variables, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("QMINDER_BRIDGE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let settings: Self = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks everything that can be checked without a broker; lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.validate_server(&mut problems);
        self.validate_kafka(&mut problems);
        self.validate_endpoints(&mut problems);
        self.validate_spool(&mut problems);
        self.validate_privacy(&mut problems);
        if self.dedupe.enabled && (self.dedupe.window_s == 0 || self.dedupe.max_entries == 0) {
            problems.push(
                "dedupe.window_s and dedupe.max_entries must be above 0 when dedupe is enabled"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn validate_server(&self, problems: &mut Vec<String>) {
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
        if s.max_in_flight == 0 {
            problems.push("server.max_in_flight must be above 0 (default 1024)".into());
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
        if let Some(tls) = &s.tls {
            if let Err(e) = crate::tls::server_config(&tls.cert_file, &tls.key_file) {
                problems.push(format!("server.tls: {e}"));
            }
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

    fn validate_kafka(&self, problems: &mut Vec<String>) {
        let k = &self.kafka;
        if k.bootstrap_servers.trim().is_empty() {
            problems.push(
                "kafka.bootstrap_servers is empty; give host:port[,host:port] or \"embedded\""
                    .into(),
            );
        }
        if k.delivery_timeout_ms == 0 {
            problems.push("kafka.delivery_timeout_ms must be above 0 (default 5000)".into());
        }
        if k.health_interval_ms == 0 {
            problems.push("kafka.health_interval_ms must be above 0 (default 1000)".into());
        }
        if k.partitions < 1 {
            problems.push("kafka.partitions must be at least 1".into());
        }
        if k.replication_factor < 1 {
            problems.push("kafka.replication_factor must be at least 1".into());
        }
        let mut topics = vec![
            ("kafka.unknown_topic".to_owned(), k.unknown_topic()),
            ("kafka.dead_letter_topic".to_owned(), k.dead_letter_topic()),
        ];
        for t in crate::event::KNOWN_EVENT_TYPES {
            topics.push((
                "kafka.topic_prefix".into(),
                format!("{}.{t}", k.topic_prefix),
            ));
        }
        for (event_type, topic) in &k.topics {
            topics.push((format!("kafka.topics.{event_type}"), topic.clone()));
        }
        for (key, topic) in topics {
            if let Err(why) = check_topic_name(&topic) {
                problems.push(format!("{key} gives topic {topic:?}, which {why}"));
            }
        }
        crate::producer_config::check_passthrough(k, problems);
        crate::producer_config::check_security(&k.security, problems);
    }

    fn validate_spool(&self, problems: &mut Vec<String>) {
        let s = &self.spool;
        if !s.enabled {
            return;
        }
        if s.dir.as_os_str().is_empty() {
            problems.push("spool.dir is empty; name a directory that survives restarts".into());
        }
        if s.segment_bytes < 64 * 1024 {
            problems.push("spool.segment_bytes must be at least 65536 (default 67108864)".into());
        }
        let least = ((self.server.max_body_bytes as u64 + 64 * 1024) * 4).max(s.segment_bytes * 2);
        if s.max_bytes < least {
            problems.push(format!(
                "spool.max_bytes ({}) must be at least twice spool.segment_bytes and room for \
                 four of the largest requests ({least}), so that forwarded segments can be \
                 reclaimed; raise it or lower spool.segment_bytes",
                s.max_bytes
            ));
        }
        if s.forward_batch == 0 {
            problems.push("spool.forward_batch must be above 0 (default 512)".into());
        }
    }

    fn validate_privacy(&self, problems: &mut Vec<String>) {
        let p = &self.privacy;
        for path in p.fields.keys() {
            if path.split('.').any(str::is_empty) {
                problems.push(format!(
                    "privacy.fields.\"{path}\" is not a field path; use names joined by dots, \
                     e.g. \"phoneNumber\" or \"called.caller\""
                ));
            }
        }
        let hashes = p
            .fields
            .values()
            .any(|a| *a == crate::privacy::Action::Hash);
        match (&p.hash_key, hashes) {
            (None, true) => problems.push(
                "privacy.hash_key is required to hash fields; give a secret (literal, \
                 \"env:NAME\" or \"file:PATH\")"
                    .into(),
            ),
            (Some(key), _) => {
                if let Err(e) = key.resolve() {
                    problems.push(format!("privacy.hash_key: {e}"));
                }
            }
            (None, false) => {}
        }
    }

    fn validate_endpoints(&self, problems: &mut Vec<String>) {
        if self.endpoints.is_empty() {
            problems.push(
                "no [[endpoints]]: add one with path, url (as registered in Qminder) and secrets"
                    .into(),
            );
        }
        let mut paths = std::collections::HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}]");
            if !e.path.starts_with('/') || e.path.contains(['?', '#', '{', '}']) {
                problems.push(format!(
                    "{at}.path = {:?} must be a plain path starting with /, e.g. \"/webhooks/qminder\"",
                    e.path
                ));
            }
            if ["/healthz", "/readyz", "/metrics"].contains(&e.path.as_str()) {
                problems.push(format!(
                    "{at}.path = {:?} is reserved; choose another",
                    e.path
                ));
            }
            if !paths.insert(e.path.as_str()) {
                problems.push(format!(
                    "{at}.path = {:?} is used twice; paths must differ",
                    e.path
                ));
            }
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) || e.url.len() > 512
            {
                problems.push(format!(
                    "{at}.url must be the URL registered in Qminder, byte for byte: \
                     http(s)://…, at most 512 characters"
                ));
            }
            if e.secrets.is_empty() {
                problems.push(format!(
                    "{at}.secrets is empty; copy the webhook's secret from Qminder \
                     (literal, \"env:NAME\" or \"file:PATH\")"
                ));
            }
            for (j, secret) in e.secrets.iter().enumerate() {
                if let Err(e) = secret.resolve() {
                    problems.push(format!("{at}.secrets[{j}]: {e}"));
                }
            }
        }
    }
}

/// Kafka's rules for topic names.
fn check_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic == "." || topic == ".." {
        return Err("is not a valid Kafka topic name");
    }
    if topic.len() > 249 {
        return Err("is longer than Kafka's 249 characters");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("has characters Kafka refuses; use only a-z A-Z 0-9 . _ -");
    }
    Ok(())
}
