//! The optional features' sections: `[spool]`, `[dedupe]`, `[privacy]`, `[log]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Settings;
use crate::secret::SecretSpec;

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
    /// are deleted whole. 65536 to 268435456 (recovery reads a segment whole).
    pub segment_bytes: u64,
    /// Records the forwarder hands to Kafka at once (and at most 4 MiB of them).
    pub forward_batch: usize,
    /// Longest wait for the spool's fsync before answering 503 `spool_unavailable`
    /// (reason `spool_timeout`); at most what `server.request_timeout_ms` leaves after the
    /// body's deadline is used. Above 0.
    pub write_timeout_ms: u64,
    /// Most of `max_bytes`, in percent, that the records of one held topic may take (a
    /// topic Kafka refuses for now: missing, not writable); past it that topic's new
    /// webhooks alone are answered 503, so one topic can never fill the spool. 1 to 100.
    pub held_topic_max_percent: u8,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "/var/lib/qminder-bridge/spool".into(),
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            forward_batch: 512,
            write_timeout_ms: 5_000,
            held_topic_max_percent: 25,
        }
    }
}

/// The largest `spool.segment_bytes`. Recovery reads a segment through a window, so this
/// no longer bounds its memory; it bounds what one deletion frees and how long a start-up
/// scan of one damaged segment (searched byte by byte) takes.
pub const MAX_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

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

impl PrivacySettings {
    /// The rules it configures, with its key resolved; none when it names no field.
    pub fn rules(&self) -> Result<Option<crate::privacy::Privacy>, crate::secret::SecretError> {
        if self.fields.is_empty() {
            return Ok(None);
        }
        let key = self.hash_key.as_ref().map(|k| k.resolve()).transpose()?;
        Ok(Some(crate::privacy::Privacy::new(
            &self.fields,
            key.as_ref(),
        )))
    }
}

/// `[reload]`: how a running bridge notices a changed configuration (SIGHUP always
/// reloads).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSettings {
    /// How often the configuration file, the `file:` secrets and the TLS certificate and
    /// key are read to see whether they changed (a Kubernetes volume swaps a `..data`
    /// symlink, which only reading sees); a change reloads. 0: only SIGHUP reloads.
    pub watch_interval_ms: u64,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self {
            watch_interval_ms: 1_000,
        }
    }
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

impl Settings {
    pub(super) fn validate_spool(&self, problems: &mut Vec<String>) {
        let s = &self.spool;
        if !s.enabled {
            return;
        }
        if s.dir.as_os_str().is_empty() {
            problems.push("spool.dir is empty; name a directory that survives restarts".into());
        }
        if !(64 * 1024..=MAX_SEGMENT_BYTES).contains(&s.segment_bytes) {
            problems.push(format!(
                "spool.segment_bytes ({}) must be 65536 to {MAX_SEGMENT_BYTES} (default \
                 67108864): start-up recovery reads a segment whole",
                s.segment_bytes
            ));
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
        if s.write_timeout_ms == 0 {
            problems.push("spool.write_timeout_ms must be above 0 (default 5000)".into());
        }
        if !(1..=100).contains(&s.held_topic_max_percent) {
            problems.push(format!(
                "spool.held_topic_max_percent ({}) must be 1 to 100 (default 25)",
                s.held_topic_max_percent
            ));
        }
    }

    pub(super) fn validate_privacy(&self, problems: &mut Vec<String>) {
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
}
