//! Building the ingress from configuration, and draining it at shutdown.
//!
//! [`Ingress::new`] owns the ingress's own arithmetic: the budgets of `admission.rs` (the
//! body's deadline from `Settings::body_timeout_ms`), the metric children resolved once
//! per route. [`Ingress::drain`] waits until every webhook request has finished: each
//! counts as active in `admission.rs` for its whole life, whatever stage it is in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission::{Admission, Gauges, Limits};
use super::{Current, Endpoint, Ingress, Live};
use crate::config::{EndpointSettings, Settings};
use crate::dedupe::Dedupe;
use crate::delivery::{Deliver, RecordLimit};
use crate::metrics::{ABANDONED_STAGES, Metrics};
use crate::routing::Router;
use crate::secret::SecretError;
use crate::shutdown::Stopping;
use crate::signature::Verifier;
use secrecy::SecretString;

/// What the ingress is built from, besides the settings.
pub struct Parts {
    pub deliver: Arc<dyn Deliver>,
    pub router: Router,
    pub metrics: Metrics,
    /// The endpoints, privacy rules and allow-list, as configured at start.
    pub live: Live,
    /// The bridge's one shutdown flag.
    pub stopping: Arc<Stopping>,
    /// The largest record a routed topic accepts, once Kafka has said.
    pub record_limit: Arc<RecordLimit>,
    /// The spans of webhook requests (`Traces::off()` without `[telemetry]`).
    pub traces: crate::traces::Traces,
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
            .all()
            .iter()
            .map(|route| {
                parts
                    .metrics
                    .events_forwarded
                    .with_label_values(&[&route.label, &route.topic])
            })
            .collect();
        let limits = Limits {
            max_unverified_body_bytes: server.max_unverified_body_bytes,
            max_in_flight: server.max_in_flight,
            max_in_flight_body_bytes: server.max_in_flight_body_bytes,
            body_timeout: Duration::from_millis(settings.body_timeout_ms()),
        };
        let gauges = Gauges {
            unverified_bytes: parts.metrics.unverified_body_bytes.clone(),
            in_flight_bytes: parts.metrics.in_flight_body_bytes.clone(),
            in_flight: parts.metrics.requests_in_flight.clone(),
        };
        Self {
            deliver: parts.deliver,
            router: parts.router,
            metrics: parts.metrics,
            format: settings.kafka.record_format,
            max_body_bytes: server.max_body_bytes,
            max_header_bytes: server.max_header_bytes,
            retry_after_s: server.retry_after_s,
            admission: Admission::new(limits, gauges),
            forwarded,
            stopping: parts.stopping,
            record_limit: parts.record_limit,
            traces: parts.traces,
            live: Current::new(parts.live),
            dedupe: settings.dedupe.enabled.then(|| {
                Dedupe::new(
                    Duration::from_secs(settings.dedupe.window_s),
                    settings.dedupe.max_entries,
                )
            }),
        }
    }

    /// The live part of `settings` (`live.rs`), its secrets read again; nothing changes yet.
    pub fn live_for(&self, settings: &Settings) -> Result<Live, super::LiveError> {
        Live::build(settings, &self.metrics, &self.router)
    }

    /// Whether `ip` is one of the trusted proxies of the live configuration.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.live.load().access.is_trusted(ip)
    }

    /// From the next request on, `live`; requests in flight finish under theirs.
    pub fn swap_live(&self, live: Live) {
        self.live.swap(live);
    }

    /// Waits until no webhook request is being handled, or `deadline`; false if some still
    /// were then. New requests are refused once [`Stopping::begin`] was called.
    pub async fn drain(&self, deadline: Instant) -> bool {
        let drained = self.admission.drain(deadline).await;
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
        let registrations = settings
            .all_registrations()
            .into_iter()
            .map(|(url, secrets)| {
                let secrets = secrets.iter().map(|s| s.resolve());
                Ok((url, secrets.collect::<Result<Vec<SecretString>, _>>()?))
            })
            .collect::<Result<Vec<_>, SecretError>>()?;
        let keyed: Vec<(&str, &[SecretString])> = registrations
            .iter()
            .map(|(url, secrets)| (*url, secrets.as_slice()))
            .collect();
        let verified_by = registrations
            .iter()
            .map(|(url, _)| {
                let labels = [settings.path.as_str(), url];
                metrics.reload.verified.with_label_values(&labels)
            })
            .collect();
        let accepted = router
            .all()
            .iter()
            .map(|route| {
                metrics
                    .events_accepted
                    .with_label_values(&[&settings.path, &route.label])
            })
            .collect();
        Ok(Self {
            path: settings.path.clone(),
            verifier: Verifier::registered(&settings.url, &keyed),
            verified_by,
            source: settings.source().to_owned(),
            accepted,
            duration: metrics
                .request_duration
                .with_label_values(&[&settings.path]),
            abandoned: ABANDONED_STAGES.map(|stage| {
                metrics
                    .requests_abandoned
                    .with_label_values(&[&settings.path, stage])
            }),
        })
    }
}
