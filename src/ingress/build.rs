//! Building the ingress from configuration, and draining it at shutdown.
//!
//! [`Ingress::new`] owns the ingress's own arithmetic: the body's share of
//! `request_timeout_ms` (what is left after `kafka.delivery_timeout_ms`), the
//! `max_in_flight` semaphore, the metric children resolved once per route.
//! [`Ingress::drain`] waits until every webhook request in flight has finished: each holds
//! an `in_flight` permit for its whole life, so having them all back means none is left.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Semaphore;

use super::{Endpoint, Ingress};
use crate::access::AccessPolicy;
use crate::config::{EndpointSettings, Settings};
use crate::dedupe::Dedupe;
use crate::delivery::Deliver;
use crate::metrics::Metrics;
use crate::privacy::Privacy;
use crate::routing::Router;
use crate::secret::SecretError;
use crate::shutdown::Stopping;
use crate::signature::Verifier;

/// What the ingress is built from, besides the settings.
#[derive(Clone)]
pub struct Parts {
    pub deliver: Arc<dyn Deliver>,
    pub router: Router,
    pub metrics: Metrics,
    pub privacy: Option<Privacy>,
    pub access: AccessPolicy,
    /// The bridge's one shutdown flag.
    pub stopping: Arc<Stopping>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

impl Ingress {
    /// The ingress for `settings` (validated: `request_timeout_ms > delivery_timeout_ms`).
    pub fn new(settings: &Settings, parts: Parts) -> Self {
        let server = &settings.server;
        let forwarded = parts
            .router
            .routes()
            .into_iter()
            .map(|(label, topic)| {
                let counter = parts
                    .metrics
                    .events_forwarded
                    .with_label_values(&[label, topic]);
                (label.to_owned(), counter)
            })
            .collect();
        let body_timeout = server
            .request_timeout_ms
            .saturating_sub(settings.kafka.delivery_timeout_ms)
            .max(1);
        Self {
            deliver: parts.deliver,
            router: parts.router,
            metrics: parts.metrics,
            format: settings.kafka.record_format,
            max_body_bytes: server.max_body_bytes,
            max_header_bytes: server.max_header_bytes,
            body_timeout: Duration::from_millis(body_timeout),
            retry_after_s: server.retry_after_s,
            in_flight: Semaphore::new(server.max_in_flight),
            max_in_flight: u32::try_from(server.max_in_flight).unwrap_or(u32::MAX),
            privacy: parts.privacy,
            forwarded,
            stopping: parts.stopping,
            access: parts.access,
            dedupe: settings.dedupe.enabled.then(|| {
                Dedupe::new(
                    Duration::from_secs(settings.dedupe.window_s),
                    settings.dedupe.max_entries,
                )
            }),
        }
    }

    /// Waits until no webhook request is in flight, or `deadline`; false if some still
    /// were then. New requests are refused once [`Stopping::begin`] was called.
    pub async fn drain(&self, deadline: Instant) -> bool {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let drained =
            tokio::time::timeout(remaining, self.in_flight.acquire_many(self.max_in_flight))
                .await
                .is_ok();
        if !drained {
            tracing::warn!(
                "Requests were still in flight at the shutdown timeout; dropping them unanswered."
            );
        }
        drained
    }
}

impl Endpoint {
    /// One configured webhook, its secrets resolved and its metric children created.
    pub fn new(
        settings: &EndpointSettings,
        metrics: &Metrics,
        router: &Router,
    ) -> Result<Self, SecretError> {
        let secrets = settings
            .secrets
            .iter()
            .map(|s| s.resolve())
            .collect::<Result<Vec<SecretString>, _>>()?;
        let accepted: HashMap<String, prometheus::IntCounter> = router
            .labels()
            .into_iter()
            .map(|label| {
                let counter = metrics
                    .events_accepted
                    .with_label_values(&[&settings.path, label]);
                (label.to_owned(), counter)
            })
            .collect();
        Ok(Self {
            path: settings.path.clone(),
            verifier: Verifier::new(&settings.url, &secrets),
            source: settings.source().to_owned(),
            accepted,
            duration: metrics
                .request_duration
                .with_label_values(&[&settings.path]),
        })
    }
}
