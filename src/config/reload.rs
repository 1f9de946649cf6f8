//! What a reload may change while the bridge runs, and what needs a restart: one table,
//! [`KEYS`], from which the reloader's verdict and the README's table both come.
//!
//! A configuration is compared key by key as its serialised tree (`key.sub`, arrays of
//! tables as `key[]`): every leaf that differs is looked up in [`KEYS`] (the longest entry
//! that is the key or a prefix of it). A change to any restart key refuses the whole
//! reload; the running configuration stays. The Kafka credentials are compared by value
//! ([`kafka_credentials`]): a change replaces the producer.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde_json::Value;

use super::Settings;

/// The configuration as last applied, for what reads it afresh each time (the
/// reconciler's runs: new Kafka credentials among it).
pub type Latest = std::sync::Arc<arc_swap::ArcSwap<Settings>>;

/// Whether a change to a key can be applied to a running bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Swapped in between requests; requests in flight finish under the old value.
    Live,
    /// Read once at start (a listener, a thread, a producer, a file): restart to change.
    Restart,
}

/// Every configuration key (or subtree), how a change to it applies, and why.
#[rustfmt::skip]
pub const KEYS: &[(&str, Apply, &str)] = &[
    ("endpoints", Apply::Live, "paths, URLs, secrets (file: secrets re-read), sources"),
    ("endpoints[].qminder", Apply::Live, "the reconciler's next run uses it"),
    ("privacy", Apply::Live, "fields and hash key"),
    ("server.allow_cidrs", Apply::Live, "the IP allow-list"),
    ("server.trusted_proxies", Apply::Live, "whose X-Forwarded-For and `traceparent` are believed; exempt from `max_connections_per_address`"),
    ("server.tls", Apply::Restart, "whether TLS is on and http2 shape the listener"),
    ("server.tls.cert_file", Apply::Live, "new connections get the new certificate"),
    ("server.tls.key_file", Apply::Live, "read with the certificate"),
    ("server", Apply::Restart, "listener, workers, timeouts and the memory budgets they size"),
    ("kafka", Apply::Restart, "the producer, its topics and the record format"),
    ("kafka.security.sasl_username", Apply::Live, "the producer is replaced, the old one flushed"),
    ("kafka.security.sasl_password", Apply::Live, "re-read; a new value replaces the producer"),
    ("kafka.security.key_password", Apply::Live, "re-read; a new value replaces the producer"),
    ("kafka.security.ca_file", Apply::Live, "watched; a change replaces the producer"),
    ("kafka.security.cert_file", Apply::Live, "watched; a change replaces the producer"),
    ("kafka.security.key_file", Apply::Live, "watched; a change replaces the producer"),
    ("spool", Apply::Restart, "the spool directory is locked and sized at start"),
    ("dedupe", Apply::Restart, "the replay cache is sized at start"),
    ("log", Apply::Restart, "the log format is set once; RUST_LOG sets the level"),
    ("reconcile", Apply::Restart, "the reconciler thread reads it at start"),
    ("reload", Apply::Restart, "the watch's interval is set at start"),
    ("telemetry", Apply::Restart, "the tracer and its exporter are built at start"),
];

/// The entry of [`KEYS`] that decides for `key` (array indices read as `[]`): the longest
/// that is the key or encloses it.
pub fn entry(key: &str) -> Option<&'static (&'static str, Apply, &'static str)> {
    let key = &unindexed(key);
    let encloses = |prefix: &str| {
        key == prefix
            || key
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    KEYS.iter()
        .filter(|(prefix, _, _)| encloses(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
}

/// `endpoints[3].path` as `endpoints[].path`.
fn unindexed(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => in_index = true,
            ']' => {
                in_index = false;
                out.push_str("[]");
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// Every leaf of `settings`' tree, by key: tables recursed (`a.b`), arrays of tables
/// recursed by index (`a[0].b`), anything else (an empty table too) a leaf.
pub fn leaves(settings: &Settings) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let tree = serde_json::to_value(settings).unwrap_or(Value::Null);
    walk(String::new(), &tree, &mut out);
    out
}

fn walk(key: String, value: &Value, out: &mut BTreeMap<String, Value>) {
    let join = |name: &str| {
        if key.is_empty() {
            name.to_owned()
        } else {
            format!("{key}.{name}")
        }
    };
    match value {
        Value::Object(table) if !table.is_empty() => {
            table.iter().for_each(|(k, v)| walk(join(k), v, out));
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            for (i, item) in items.iter().enumerate() {
                walk(format!("{key}[{i}]"), item, out);
            }
        }
        leaf => {
            out.insert(key, leaf.clone());
        }
    }
}

/// The keys (entries of [`KEYS`]) that differ between `running` and `next` and need a
/// restart; empty when everything that changed can be swapped in. A key absent on one
/// side and unset (`null`) on the other has not changed.
pub fn restart_needed(running: &Settings, next: &Settings) -> Vec<&'static str> {
    let (old, new) = (leaves(running), leaves(next));
    let value = |tree: &BTreeMap<String, Value>, k: &str| tree.get(k).cloned().unwrap_or_default();
    let changed = old
        .keys()
        .chain(new.keys())
        .filter(|k| value(&old, k) != value(&new, k))
        .map(|k| entry(k).map_or(("(unknown key)", Apply::Restart), |e| (e.0, e.1)));
    let mut keys: Vec<&'static str> = changed
        .filter(|(_, apply)| *apply == Apply::Restart)
        .map(|(key, _)| key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What the producer authenticates with, hashed: the SASL user and password, the TLS
/// key's password (resolved: a literal serialises redacted, a `file:` one may change
/// behind the same reference) and the bytes of the Kafka TLS files. A change replaces
/// the producer. Errors name the secret or file.
pub fn kafka_credentials(settings: &Settings) -> Result<[u8; 32], String> {
    use sha2::{Digest, Sha256};
    let security = &settings.kafka.security;
    let mut hash = Sha256::new();
    let mut add = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    add(security
        .sasl_username
        .as_deref()
        .unwrap_or_default()
        .as_bytes());
    for (key, secret) in [
        ("sasl_password", &security.sasl_password),
        ("key_password", &security.key_password),
    ] {
        let value = secret.as_ref().map(|s| s.resolve()).transpose();
        let value = value.map_err(|e| format!("kafka.security.{key}: {e}"))?;
        add(value.as_ref().map_or("", |v| v.expose_secret()).as_bytes());
    }
    for file in [&security.ca_file, &security.cert_file, &security.key_file]
        .into_iter()
        .flatten()
    {
        let unreadable =
            |e: std::io::Error| format!("kafka.security: cannot read {}: {e}", file.display());
        // `ca_file` may name a directory of certificates, as librdkafka allows.
        let files = match std::fs::read_dir(file) {
            Ok(entries) => {
                let mut files: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
                files.sort();
                files
            }
            Err(_) => vec![file.clone()],
        };
        for file in files.iter().filter(|f| !f.is_dir()) {
            add(&std::fs::read(file).map_err(unreadable)?);
        }
    }
    Ok(hash.finalize().into())
}

/// The files the running configuration reads besides itself: `file:` secrets and the
/// ingress's TLS certificate and key. A change to any of them triggers a reload.
pub fn watched_files(settings: &Settings) -> Vec<std::path::PathBuf> {
    use crate::secret::SecretSpec;
    let file = |spec: &SecretSpec| match spec {
        SecretSpec::File(path) => Some(path.clone()),
        _ => None,
    };
    let endpoints = settings.endpoints.iter().flat_map(|e| e.secrets.iter());
    let privacy = settings.privacy.hash_key.iter();
    let security = &settings.kafka.security;
    let kafka = security.sasl_password.iter().chain(&security.key_password);
    let tls = settings
        .server
        .tls
        .iter()
        .flat_map(|t| [t.cert_file.clone(), t.key_file.clone()]);
    let kafka_tls = [&security.ca_file, &security.cert_file, &security.key_file]
        .into_iter()
        .flatten()
        .cloned();
    endpoints
        .chain(privacy)
        .chain(kafka)
        .filter_map(file)
        .chain(tls)
        .chain(kafka_tls)
        .collect()
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
