//! Reloading a running bridge: on SIGHUP, and when a file it reads changes.
//!
//! A reload reads the configuration again (the file and the `QMINDER_BRIDGE__…`
//! variables, as at start), validates it in full, refuses it if a key that needs a restart
//! changed (`config/reload.rs` says which), builds everything live first (the endpoints'
//! secrets re-read, the privacy rules, the allow-list, the TLS certificate and key), and
//! only then swaps them in: the ingress's between requests (`ingress/live.rs`), the
//! listener's certificate for new connections (`tls.rs`); if the Kafka credentials changed
//! (by value: `config::reload::kafka_credentials`), the producer is replaced gracefully
//! (`delivery/kafka/renewal.rs`). Any failure leaves the running configuration in place,
//! logged (naming the key or the file) and counted.
//!
//! The watch reads the configuration file and the files it names every
//! `reload.watch_interval_ms` and compares their bytes with the last read: a Kubernetes
//! ConfigMap or Secret volume changes by swapping its `..data` symlink, which reading
//! through the path sees and an inotify watch on the old file would not. A change refused
//! is not retried until the files change again (or SIGHUP). Installing the SIGHUP handler
//! also stops SIGHUP from killing the process, its default.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use sha2::{Digest, Sha256};

use crate::config::{Settings, reload};
use crate::delivery::kafka::Renewal;
use crate::ingress::{Ingress, Live};
use crate::metrics::ReloadMetrics;
use crate::shutdown::Stopping;
use crate::tls::Certificates;

/// What the reloader swaps things into.
#[derive(Debug)]
pub struct Reloader {
    /// The configuration file, if the bridge was started from one.
    pub file: Option<PathBuf>,
    pub running: Settings,
    pub ingress: web::Data<Ingress>,
    pub certificates: Option<Arc<Certificates>>,
    /// Renews the Kafka credentials when they change.
    pub kafka: Renewal,
    /// Where the reconciler takes the configuration of each run from.
    pub latest: reload::Latest,
    /// The hash of the credentials the producer was made with
    /// (`config::reload::kafka_credentials`, taken before it was made).
    pub credentials: Option<[u8; 32]>,
    pub metrics: ReloadMetrics,
    /// The error of the last reload, if it was refused as invalid (tried again).
    pub pending: Option<String>,
}

/// How a reload ended.
#[derive(Debug)]
enum Outcome {
    /// The configuration now running, and its Kafka credentials' hash.
    Applied(Box<Settings>, Option<[u8; 32]>),
    Invalid(String),
    RestartNeeded(Vec<&'static str>),
}

impl Reloader {
    /// Reloads on SIGHUP and on a change to a watched file, until `stopping`.
    pub fn spawn(mut self, stopping: Arc<Stopping>) {
        self.metrics
            .running(&version(&self.running, &self.inputs()));
        tokio::spawn(async move {
            let mut hangup = hangup();
            let interval_ms = self.running.reload.watch_interval_ms;
            let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
            let mut seen = self.read_inputs().await;
            loop {
                let trigger = tokio::select! {
                    () = stopping.wait() => return,
                    Some(()) = recv(&mut hangup) => "SIGHUP",
                    _ = tick.tick(), if interval_ms > 0 => "a watched file changed",
                };
                let now = self.read_inputs().await;
                if trigger == "SIGHUP" || now != seen {
                    self.reload(trigger).await;
                    // The files read now, each as it was before the attempt if it was
                    // watched then: one changed during the attempt is seen next time.
                    let after = self.read_inputs().await;
                    seen = after
                        .into_iter()
                        .map(|(file, hash)| (file.clone(), *now.get(&file).unwrap_or(&hash)))
                        .collect();
                } else if self.pending.is_some() {
                    // A configuration refused as invalid may name a file that another
                    // volume brings later (a ConfigMap before its Secret): tried again on
                    // every tick until it loads or changes.
                    self.reload("a refused configuration, tried again").await;
                }
            }
        });
    }

    /// One reload, logged and counted.
    async fn reload(&mut self, trigger: &'static str) {
        let file = self.file.clone();
        let running = self.running.clone();
        let parts = Parts {
            ingress: self.ingress.clone(),
            certificates: self.certificates.clone(),
            kafka: self.kafka.clone(),
        };
        let before = self.credentials;
        let outcome = tokio::task::spawn_blocking(move || attempt(file, &running, before, &parts))
            .await
            .unwrap_or_else(|e| Outcome::Invalid(format!("the reload did not finish: {e}")));
        let result = match outcome {
            Outcome::Applied(next, now) => {
                self.running = *next;
                self.latest.store(Arc::new(self.running.clone()));
                self.credentials = now;
                self.pending = None;
                let version = version(&self.running, &self.inputs());
                self.metrics.running(&version);
                tracing::info!(trigger, %version, "Reloaded the configuration.");
                "applied"
            }
            Outcome::Invalid(error) if self.pending.as_ref() == Some(&error) => return,
            Outcome::Invalid(error) => {
                tracing::warn!(trigger, %error, "Refused a reload: the configuration does not load; still running the previous one (tried again on every watch until it loads).");
                self.pending = Some(error);
                "invalid"
            }
            Outcome::RestartNeeded(keys) => {
                self.pending = None;
                let keys = keys.join(", ");
                tracing::warn!(trigger, %keys, "Refused a reload: these keys cannot change while the bridge runs; restart it to apply them. Still running the previous configuration.");
                "restart_needed"
            }
        };
        self.metrics.reloads.with_label_values(&[result]).inc();
        self.metrics
            .last_successful
            .set(i64::from(result == "applied"));
    }

    /// The files a change to which reloads: the configuration file and those it names.
    fn inputs(&self) -> Vec<PathBuf> {
        self.file
            .iter()
            .cloned()
            .chain(reload::watched_files(&self.running))
            .collect()
    }

    /// Each of [`inputs`](Self::inputs), its bytes hashed (an unreadable file as empty).
    async fn read_inputs(&self) -> BTreeMap<PathBuf, [u8; 32]> {
        let inputs = self.inputs();
        let read = move || {
            let hash = |file: &PathBuf| digest(std::slice::from_ref(file));
            inputs.iter().map(|f| (f.clone(), hash(f))).collect()
        };
        tokio::task::spawn_blocking(read).await.unwrap_or_default()
    }
}

/// What a reload swaps into, for the blocking thread it runs on.
struct Parts {
    ingress: web::Data<Ingress>,
    certificates: Option<Arc<Certificates>>,
    kafka: Renewal,
}

/// Loads, validates, classifies and builds; swaps only if all of that succeeded.
fn attempt(
    file: Option<PathBuf>,
    running: &Settings,
    credentials: Option<[u8; 32]>,
    parts: &Parts,
) -> Outcome {
    let next = match Settings::load(file.as_deref()) {
        Ok(next) => next,
        Err(error) => return Outcome::Invalid(error.to_string()),
    };
    let restart = reload::restart_needed(running, &next);
    if !restart.is_empty() {
        return Outcome::RestartNeeded(restart);
    }
    let live: Live = match parts.ingress.live_for(&next) {
        Ok(live) => live,
        Err(error) => return Outcome::Invalid(error.to_string()),
    };
    // Compared with what the producer was made with: a `file:` secret read again now
    // would already show the new value for the running configuration too.
    let now = match reload::kafka_credentials(&next) {
        Ok(now) => now,
        Err(error) => return Outcome::Invalid(error),
    };
    if let (Some(certificates), Some(tls)) = (&parts.certificates, &next.server.tls)
        && let Err(error) = certificates.reload(&tls.cert_file, &tls.key_file)
    {
        return Outcome::Invalid(format!("server.tls: {error}"));
    }
    parts.ingress.swap_live(live);
    if credentials != Some(now) {
        parts.kafka.renew(&next);
    }
    Outcome::Applied(Box::new(next), Some(now))
}

/// A hash of `files`' bytes, in order.
fn digest(files: &[PathBuf]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for file in files {
        let bytes = std::fs::read(file).unwrap_or_default();
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    hash.finalize().into()
}

/// The version label: the configuration as serialised (literal secrets redacted) and the
/// bytes of the files it reads, hashed; 12 hex digits.
fn version(settings: &Settings, inputs: &[PathBuf]) -> String {
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(settings).unwrap_or_default());
    hash.update(digest(inputs));
    hex::encode(hash.finalize())[..12].to_owned()
}

fn hangup() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(
            |error| tracing::warn!(%error, "Cannot listen for SIGHUP; reload by the watch only."),
        )
        .ok()
}

/// The next SIGHUP; never, without a handler.
async fn recv(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
