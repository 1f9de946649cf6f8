//! Renewing the Kafka credentials of a running bridge (a reload found the SASL password,
//! the TLS key's password or the Kafka TLS files changed): the producer is replaced
//! gracefully (`producers.rs`: the new one connected first, the old one flushed), and the
//! topic checks make their admin clients from the new properties from their next look.
//! librdkafka resolves credentials only when a client is created, so replacing the client
//! is the only way to change them.

use std::sync::Arc;

use super::producers::Configs;
use super::{Publisher, SharedConfig, config};
use crate::config::Settings;

/// The producer's properties for `settings` on `bootstrap`, credentials resolved now.
pub(super) fn producer_configs(settings: &Settings, bootstrap: &str) -> Configs {
    let kafka = &settings.kafka;
    let max_body = settings.server.max_body_bytes;
    Configs {
        near: config::producer(kafka, bootstrap, max_body, false),
        distant: kafka
            .max_in_flight_requests
            .is_none()
            .then(|| config::producer(kafka, bootstrap, max_body, true)),
    }
}

/// What a reload needs to renew the Kafka credentials: the producer and the admin
/// client's properties (the topic checks), and where the brokers are.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub(super) publisher: Publisher,
    pub(super) admin: SharedConfig,
    pub(super) bootstrap: String,
}

impl Renewal {
    /// Replaces the producer with one using `settings`' credentials (the old one flushed);
    /// the topic checks use them from their next look. Blocks only to resolve secrets.
    pub fn renew(&self, settings: &Settings) {
        self.admin
            .store(Arc::new(config::admin(&settings.kafka, &self.bootstrap)));
        self.publisher
            .renew(producer_configs(settings, &self.bootstrap));
    }
}
