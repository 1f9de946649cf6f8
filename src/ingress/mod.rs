//! Stages 1 and 7 of the data path: the actix handler for `POST <endpoint.path>`.
//!
//! In order, cheapest refusal first: the IP allowlist (403), the `max_in_flight` slot
//! (else 503 at once), the Content-Length against `max_body_bytes` (else 413 before
//! reading), the signature header's presence and shape (else 401 before reading), then the
//! body, read within `request_timeout_ms − delivery_timeout_ms` (else 408; so that with
//! Kafka's bounded wait after it no request outlasts `request_timeout_ms`) and capped at
//! `max_body_bytes` as it arrives (chunked bodies carry no length). Then verify → parse →
//! route → encode → deliver, and answer 200 (or 202 for a dead-lettered body) only with
//! Kafka's partition and offset in hand.
//! actix runs each worker on one thread, so the handler future need not be `Send`.
//! Reading the body: `body.rs`; the success answers: `answer.rs`; building and draining:
//! `build.rs`; the handler's unit tests, with a fake delivery: `tests.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use prometheus::{Histogram, IntCounter, IntCounterVec};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::access::AccessPolicy;
use crate::dedupe::{Dedupe, Remembered};
use crate::delivery::{Deliver, Delivered};
use crate::errors::IngressError;
use crate::event;
use crate::metrics::{Metrics, NO_ENDPOINT};
use crate::privacy::Privacy;
use crate::record::{self, Context, Record, RecordFormat};
use crate::routing::{Route, Router};
use crate::shutdown::Stopping;
use crate::signature::{SIGNATURE_HEADER, Signature, Verified, Verifier};

mod answer;
mod body;
mod build;
#[cfg(test)]
mod tests;

use answer::answer;
use body::{content_length, read_capped};
pub use build::Parts;

/// One configured webhook: where it is served, how it is verified, how it is named.
#[derive(Debug)]
pub struct Endpoint {
    pub path: String,
    verifier: Verifier,
    source: String,
    /// Its metric children, resolved once: `accepted` by event-type label.
    accepted: HashMap<String, IntCounter>,
    duration: Histogram,
}

/// What every webhook request shares. Built by [`Ingress::new`] (`build.rs`).
pub struct Ingress {
    deliver: Arc<dyn Deliver>,
    router: Router,
    metrics: Metrics,
    format: RecordFormat,
    max_body_bytes: usize,
    max_header_bytes: usize,
    /// How long the body may take to arrive: `request_timeout_ms − delivery_timeout_ms`.
    body_timeout: Duration,
    retry_after_s: u32,
    /// One permit per request being handled; [`Ingress::drain`] takes them all.
    in_flight: Semaphore,
    max_in_flight: u32,
    dedupe: Option<Dedupe>,
    privacy: Option<Privacy>,
    access: AccessPolicy,
    /// `events_forwarded` children by event-type label (each label has one topic).
    forwarded: HashMap<String, IntCounter>,
    /// Set at shutdown: new webhooks are refused while those in flight finish.
    stopping: Arc<Stopping>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// `POST <endpoint.path>`
pub async fn receive(
    request: HttpRequest,
    payload: web::Payload,
    endpoint: web::Data<Endpoint>,
    ingress: web::Data<Ingress>,
) -> HttpResponse {
    let started = Instant::now();
    let response = match ingress.handle(&request, payload, &endpoint).await {
        Ok(response) => response,
        Err(error) => {
            match &error {
                IngressError::Delivery(_) => {} // counted as a failure where it happened
                rejected => {
                    ingress
                        .metrics
                        .events_rejected
                        .with_label_values(&[&endpoint.path, rejected.code()])
                        .inc();
                    tracing::info!(endpoint = %endpoint.path, reason = rejected.code(), "Rejected a webhook request.");
                }
            }
            error.response(ingress.retry_after_s)
        }
    };
    endpoint.duration.observe(started.elapsed().as_secs_f64());
    response
}

/// Any method but POST on an endpoint path.
pub async fn method_not_allowed(
    endpoint: web::Data<Endpoint>,
    ingress: web::Data<Ingress>,
) -> HttpResponse {
    reject(&ingress, &endpoint.path, IngressError::MethodNotAllowed)
}

/// Any path that is not configured.
pub async fn not_found(ingress: web::Data<Ingress>) -> HttpResponse {
    reject(&ingress, NO_ENDPOINT, IngressError::NotFound)
}

fn reject(ingress: &Ingress, endpoint: &str, error: IngressError) -> HttpResponse {
    ingress
        .metrics
        .events_rejected
        .with_label_values(&[endpoint, error.code()])
        .inc();
    error.response(ingress.retry_after_s)
}

impl Ingress {
    async fn handle(
        &self,
        request: &HttpRequest,
        payload: web::Payload,
        endpoint: &Endpoint,
    ) -> Result<HttpResponse, IngressError> {
        self.admit(request)?;
        let _slot = self
            .in_flight
            .try_acquire()
            .map_err(|_| IngressError::Overloaded)?;
        let _gauge = InFlight::enter(&self.metrics);
        let (signature, length) = self.check_head(request)?;
        let body = tokio::time::timeout(
            self.body_timeout,
            read_capped(payload, self.max_body_bytes, length),
        )
        .await
        .map_err(|_| IngressError::RequestTimeout)??;
        let verified = endpoint.verifier.verify_decoded(&signature, body)?;
        if let Some(answer) = self.replayed(&verified, endpoint) {
            return Ok(answer);
        }
        self.publish_verified(&verified, endpoint).await
    }

    /// The refusals that need nothing of the request but its origin: the allowlist (403)
    /// and shutdown (503).
    fn admit(&self, request: &HttpRequest) -> Result<(), IngressError> {
        if self.access.restricts() {
            let lines = request.headers().get_all("x-forwarded-for");
            let forwarded_for = crate::access::forwarded_for(lines.map(|v| v.as_bytes()));
            let peer = request.peer_addr().map(|a| a.ip());
            if !self.access.allows(peer, forwarded_for.as_deref()) {
                return Err(IngressError::Forbidden);
            }
        }
        if self.stopping.is_set() {
            return Err(IngressError::ShuttingDown);
        }
        Ok(())
    }

    /// The checks made before the body is read: header size (431), Content-Length (400,
    /// 413), the signature header's presence and shape (401).
    fn check_head(
        &self,
        request: &HttpRequest,
    ) -> Result<(Signature, Option<usize>), IngressError> {
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err(IngressError::HeadersTooLarge);
        }
        let length = content_length(request)?;
        if length.is_some_and(|n| n > self.max_body_bytes) {
            return Err(IngressError::BodyTooLarge);
        }
        let signature = match request.headers().get(SIGNATURE_HEADER) {
            None => return Err(IngressError::MissingSignature),
            Some(value) => Signature::from_header(value.as_bytes())?,
        };
        Ok((signature, length))
    }

    /// With `[dedupe]`: the first answer again, for an event acknowledged before.
    fn replayed(&self, verified: &Verified, endpoint: &Endpoint) -> Option<HttpResponse> {
        let remembered = self.dedupe.as_ref()?.seen(verified.id(), Instant::now())?;
        self.metrics
            .events_deduplicated
            .with_label_values(&[&endpoint.path])
            .inc();
        Some(answer(
            verified.id(),
            &remembered.topic,
            remembered.delivered,
            remembered.dead_letter_reason,
            true,
        ))
    }

    /// Parse → route → encode → deliver; a body that is not an event goes to the
    /// dead-letter topic.
    async fn publish_verified(
        &self,
        verified: &Verified,
        endpoint: &Endpoint,
    ) -> Result<HttpResponse, IngressError> {
        let ctx = Context {
            source: &endpoint.source,
            received_at: OffsetDateTime::now_utc(),
        };
        match event::parse(verified) {
            Ok(mut event) => {
                if let Some(privacy) = &self.privacy
                    && let Cow::Owned(data) = privacy.apply(&event.data)
                {
                    event.data = Cow::Owned(data);
                }
                let route = self.router.route(&event.event_type);
                self.count_accepted(endpoint, route);
                let record = record::encode(self.format, verified, &event, route, ctx);
                let delivered = self.publish(&record, route, None).await?;
                Ok(answer(record.id, record.topic, delivered, None, false))
            }
            Err(malformed) => {
                let route = self.router.dead_letter();
                self.count_accepted(endpoint, route);
                tracing::warn!(
                    endpoint = %endpoint.path,
                    reason = malformed.code(),
                    "Sending an authenticated body that is not an event to the dead-letter topic."
                );
                let record = record::encode_dead_letter(verified, malformed, route, ctx);
                let reason = Some(malformed.code());
                let delivered = self.publish(&record, route, reason).await?;
                Ok(answer(record.id, record.topic, delivered, reason, false))
            }
        }
    }

    fn count_accepted(&self, endpoint: &Endpoint, route: &Route) {
        let labels = [endpoint.path.as_str(), &route.label];
        inc(
            &endpoint.accepted,
            &route.label,
            &self.metrics.events_accepted,
            &labels,
        );
    }

    /// Delivers `record`, counts the outcome, and remembers an acknowledged one for
    /// `[dedupe]` (with the dead-letter reason its answer carried, if any).
    async fn publish(
        &self,
        record: &Record<'_>,
        route: &Route,
        dead_letter_reason: Option<&'static str>,
    ) -> Result<Delivered, IngressError> {
        match self.deliver.deliver(record).await {
            Ok(delivered) => {
                if let Some(dedupe) = &self.dedupe {
                    let remembered = Remembered {
                        topic: record.topic.to_owned(),
                        delivered,
                        dead_letter_reason,
                    };
                    dedupe.remember(record.id, remembered, Instant::now());
                }
                if let Delivered::Kafka { .. } = delivered {
                    let labels = [route.label.as_str(), &route.topic];
                    inc(
                        &self.forwarded,
                        &route.label,
                        &self.metrics.events_forwarded,
                        &labels,
                    );
                }
                Ok(delivered)
            }
            Err(error) => {
                self.metrics
                    .events_failed
                    .with_label_values(&[&route.label, error.reason()])
                    .inc();
                tracing::warn!(
                    event_type = %route.label,
                    topic = %route.topic,
                    reason = error.reason(),
                    %error,
                    "Kafka did not acknowledge an event; answered 503."
                );
                Err(error.into())
            }
        }
    }
}

/// Increments the child resolved at start-up for `label` (every route has one), or else
/// the child of `vec` for `labels`.
fn inc(children: &HashMap<String, IntCounter>, label: &str, vec: &IntCounterVec, labels: &[&str]) {
    match children.get(label) {
        Some(counter) => counter.inc(),
        None => vec.with_label_values(labels).inc(),
    }
}

/// Keeps `requests_in_flight` right however the handler ends.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.requests_in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.requests_in_flight.dec();
    }
}
