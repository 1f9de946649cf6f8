//! The typed configuration tree, its layering and its validation.
//!
//! Layers, later wins: built-in defaults → the TOML file → environment variables
//! `QMINDER_BRIDGE__<SECTION>__<KEY>` (e.g. `QMINDER_BRIDGE__KAFKA__BOOTSTRAP_SERVERS`).
//! Variables are read as strings and converted only where the field is a number or a
//! boolean, so a topic `007` or a password `0123` stays what was written.
//! Unknown keys are errors (`deny_unknown_fields`), units are in key names, and
//! [`Settings::validate`] lists every problem with how to fix it. `config/example.toml`
//! is the annotated reference; keep it in step with these files (one per section group).

use std::path::Path;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::secret::SecretSpec;

mod kafka;
pub mod memory;
pub(crate) mod options;
mod passthrough;
mod qminder;
pub mod reload;
mod security;
mod server;
mod telemetry;

pub use kafka::KafkaSettings;
pub use memory::{MemoryBound, Term};
pub use options::{
    DedupeSettings, LogFormat, LogSettings, PrivacySettings, ReloadSettings, SpoolSettings,
};
pub use passthrough::Passthrough;
pub use qminder::{
    DEFAULT_API_URL, MAX_LOOKBACK_HOURS, QminderSettings, ReconcileSettings, qminder_endpoint,
};
pub use security::{KafkaSecurity, SaslMechanism, SecurityProtocol};
pub use server::{ServerSettings, TlsSettings};
pub use telemetry::{
    DEFAULT_MAX_QUEUED_SPANS, SAMPLERS, Sampling, TelemetrySettings, shown_endpoint,
};

/// The shortest webhook secret accepted (Qminder's own are 40 characters).
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

/// The shortest watch of the configuration's files (`reload.watch_interval_ms`, 0 = off).
pub const MIN_WATCH_INTERVAL_MS: u64 = 50;

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
    /// Continuous reconciliation against Qminder's API (needs `[endpoints.qminder]`).
    pub reconcile: ReconcileSettings,
    /// Reloading a running bridge: SIGHUP, and watching the files it reads.
    pub reload: ReloadSettings,
    /// OpenTelemetry traces: export over OTLP, context in records.
    pub telemetry: TelemetrySettings,
    /// The webhooks, as registered in Qminder. At least one.
    pub endpoints: Vec<EndpointSettings>,
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
    /// May be empty when `registrations` has one (the registration at `url` was removed).
    pub secrets: Vec<SecretSpec>,
    /// More registrations delivering to this path, each with its own URL (differing from
    /// `url` only in its query string) and secret: the overlap of a rotation. Event ids
    /// stay computed from `url`, so an event delivered by two registrations has one id.
    #[serde(default)]
    pub registrations: Vec<RegistrationSettings>,
    /// CloudEvents `source` of its events. Default: `url`.
    #[serde(default)]
    pub source: Option<String>,
    /// The account's REST API, for `backfill`. Optional.
    #[serde(default)]
    pub qminder: Option<QminderSettings>,
}

/// `[[endpoints.registrations]]`: another registration of the same webhook in Qminder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    /// The URL exactly as registered; the endpoint's `url` with another query string.
    pub url: String,
    /// Its secret(s).
    pub secrets: Vec<SecretSpec>,
}

impl EndpointSettings {
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.url)
    }

    /// Every secret with its key under `at`: `at.secrets[j]`, `at.registrations[k].secrets[j]`.
    fn secret_keys(&self, at: &str) -> Vec<(String, &SecretSpec)> {
        let lists = std::iter::once((format!("{at}.secrets"), &self.secrets)).chain(
            self.registrations
                .iter()
                .enumerate()
                .map(|(k, r)| (format!("{at}.registrations[{k}].secrets"), &r.secrets)),
        );
        lists
            .flat_map(|(key, secrets)| {
                let keyed = secrets.iter().enumerate();
                keyed.map(move |(j, s)| (format!("{key}[{j}]"), s))
            })
            .collect()
    }

    /// What is wrong with `registrations`' URLs, each under `at`.
    fn registration_problems(&self, at: &str) -> Vec<String> {
        let base = |url: &str| url.split(['?', '#']).next().unwrap_or(url).to_owned();
        let wrong =
            |r: &&RegistrationSettings| base(&r.url) != base(&self.url) || r.url == self.url;
        let wrong = self
            .registrations
            .iter()
            .enumerate()
            .filter(|(_, r)| wrong(r));
        wrong
            .map(|(j, _)| {
                format!(
                    "{at}.registrations[{j}].url must be {at}.url with another query string \
                     (e.g. \"{}?registration=2\"): Qminder delivers it to the same path",
                    base(&self.url)
                )
            })
            .collect()
    }

    /// Every registration, `(url, secrets)`: the one at `url` first.
    pub fn all_registrations(&self) -> Vec<(&str, &[SecretSpec])> {
        std::iter::once((self.url.as_str(), self.secrets.as_slice()))
            .chain(
                self.registrations
                    .iter()
                    .map(|r| (r.url.as_str(), r.secrets.as_slice())),
            )
            .collect()
    }
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The parser's message without the text it quotes: a line of the file (a literal
    /// secret on it, or half of one while an editor writes the file) must not reach a log.
    #[error("cannot load the configuration: {}", without_quotes(&.0.to_string()))]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

/// `message` without the lines that show the file's text (TOML errors quote the line,
/// `3 | secret = "…`) and with every quoted value masked (`"…"`); the position and the
/// reason stay.
fn without_quotes(message: &str) -> String {
    let shown = |line: &&str| {
        !line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start()
            .starts_with('|')
    };
    let kept: Vec<&str> = message.lines().filter(shown).collect();
    let mut out = String::with_capacity(message.len());
    for (n, part) in kept.join(" ").split('"').enumerate() {
        match n % 2 {
            0 => out.push_str(part),
            _ => out.push_str("\"…\""),
        }
    }
    out
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
                .separator("__"),
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
        problems.extend(self.reconcile.problems(&self.endpoints));
        problems.extend(self.telemetry.problems());
        let watch = self.reload.watch_interval_ms;
        if watch != 0 && watch < MIN_WATCH_INTERVAL_MS {
            problems.push(format!(
                "reload.watch_interval_ms = {watch} re-reads every watched file {} times a \
                 second; use {MIN_WATCH_INTERVAL_MS} or more (1000 is the default), or 0 for \
                 SIGHUP only",
                1000 / watch
            ));
        }
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
            if e.all_registrations().iter().all(|(_, s)| s.is_empty()) {
                problems.push(format!(
                    "{at}.secrets is empty; copy the webhook's secret from Qminder \
                     (literal, \"env:NAME\" or \"file:PATH\")"
                ));
            }
            problems.extend(e.registration_problems(&at));
            for (key, secret) in e.secret_keys(&at) {
                match secret.resolve() {
                    Err(e) => problems.push(format!("{key}: {e}")),
                    Ok(value) if value.expose_secret().len() < MIN_WEBHOOK_SECRET_BYTES => {
                        problems.push(format!(
                            "{key} is {} bytes; a webhook secret must be at least \
                             {MIN_WEBHOOK_SECRET_BYTES}, or it can be guessed: use the secret \
                             Qminder generated for the webhook",
                            value.expose_secret().len()
                        ));
                    }
                    Ok(_) => {}
                }
            }
            if let Some(qminder) = &e.qminder {
                problems.extend(qminder.problems(&format!("{at}.qminder")));
            }
        }
    }
}

#[cfg(test)]
mod registration_tests;
#[cfg(test)]
mod tests;
