//! Changing the bridge while it runs: `qminder_bridge_config_*` (reloads, `reload.rs`, and
//! which version each replica runs), producers renewed with new credentials, and which of
//! an endpoint's registrations deliver (a rotation's overlap).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::Declare;

/// The `result`s of `config_reloads_total`, one per way a reload ends.
pub const RELOAD_RESULTS: [&str; 3] = ["applied", "invalid", "restart_needed"];

/// The reloader's metrics.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    /// Reloads, by result.
    pub reloads: IntCounterVec,
    /// 1 for the version running (a hash of the configuration and the files it reads).
    info: IntGaugeVec,
    /// 1 if the last reload was applied (or none was tried), 0 if it was refused.
    pub last_successful: IntGauge,
    /// Producers replaced because a reload renewed the Kafka credentials.
    pub producer_renewals: IntCounter,
    /// Webhooks whose signature verified, by endpoint and registration (its URL).
    pub verified: IntCounterVec,
}

impl ReloadMetrics {
    pub(super) fn new(d: &Declare) -> Self {
        Self {
            reloads: d.counter_vec("config_reloads_total",
                "Reloads of the configuration (SIGHUP or a watched file changed), by result: applied, invalid (the file or a secret does not load or validate), restart_needed (a key that cannot change live changed). A refused reload leaves the running configuration in place.",
                &["result"],
            ),
            info: d.gauge_vec("config_info",
                "Always 1; version is a hash of the running configuration and of the files it reads (secrets, certificate), so a dashboard shows which replica runs what.",
                &["version"],
            ),
            last_successful: d.gauge("config_last_reload_successful",
                "1 if the last reload was applied (or none was tried yet), 0 if it was refused: the replica runs an older configuration than its files say.",
            ),
            producer_renewals: d.counter("producer_renewals_total",
                "Kafka producers replaced because a reload renewed the credentials (SASL password, TLS key password or files); the old one was flushed.",
            ),
            verified: d.counter_vec("webhooks_verified_total",
                "Webhooks whose signature verified, by endpoint and registration (the URL registered in Qminder that signed it): during a rotation, whether the new registration delivers yet.",
                &["endpoint", "registration"],
            ),
        }
    }

    /// Every series from the start, for `increase()`.
    pub(super) fn precreate(&self, registrations: &[(&str, &str)]) {
        for result in RELOAD_RESULTS {
            self.reloads.with_label_values(&[result]);
        }
        for (endpoint, url) in registrations {
            self.verified.with_label_values(&[endpoint, url]);
        }
        self.last_successful.set(1);
        // Until the bridge has built its configuration's version (at start).
        self.running("unset");
    }

    /// The version running from now on.
    pub fn running(&self, version: &str) {
        self.info.reset();
        self.info.with_label_values(&[version]).set(1);
    }
}
