//! Stages 1 and 7 of the data path: the actix handler for `POST <endpoint.path>`.
//!
//! In order, cheapest refusal first ([`Ingress::handle`]): admit (the IP allowlist, 403;
//! shutdown, 503) → head (header size 431, Content-Length against `max_body_bytes` 413,
//! the signature header's presence and shape 401, all before reading) → body (read within
//! the unverified budget and `body_timeout_ms`, else 503 `body_budget_exhausted` or 408;
//! capped at `max_body_bytes` as it arrives) → verify → a `max_in_flight` slot, taken only
//! now (else 503 `overloaded`) → replay? → parse, route, encode → deliver → count → answer
//! 200 (or 202 for a dead-lettered body) only with Kafka's partition and offset in hand.
//! Who may hold what before and after verification: `admission.rs`.
//! actix runs each worker on one thread, so the handler future need not be `Send`.
//! Reading the body: `body.rs`; the success answers: `answer.rs`; building and draining:
//! `build.rs`; the handler's unit tests, with a fake delivery: `tests.rs`. With
//! `[telemetry]` on, the request has a span (`traces`), its steps and delivery child spans,
//! and the lines it logs carry the `trace_id`.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use prometheus::{Histogram, IntCounter};

use crate::dedupe::Dedupe;
use crate::delivery::{Deliver, RecordLimit};
use crate::errors::IngressError;
use crate::metrics::{Metrics, NO_ENDPOINT};
use crate::record::RecordFormat;
use crate::routing::Router;
use crate::shutdown::Stopping;
use crate::signature::{SIGNATURE_HEADER, Signature, Verified, Verifier};
use crate::traces::{Traces, WebhookSpan};

mod admission;
mod answer;
mod body;
mod build;
mod live;
mod publish;
#[cfg(test)]
mod tests;

use admission::{Admission, Reservation};
use answer::answer;
use body::{content_length, read_capped};
pub use build::Parts;
pub use live::{Current, Live, LiveError};

/// One configured webhook: where it is served, how it is verified, how it is named.
#[derive(Debug)]
pub struct Endpoint {
    pub path: String,
    verifier: Verifier,
    source: String,
    /// Its `events_accepted` children, resolved once, indexed by route id.
    accepted: Vec<IntCounter>,
    /// Its `webhooks_verified` children, indexed by registration.
    verified_by: Vec<IntCounter>,
    duration: Histogram,
    /// Its `requests_abandoned` children, unverified and verified.
    abandoned: [IntCounter; 2],
}

/// A request not answered yet. Dropped so (actix drops the handler when its client goes
/// away, or when the server stops at once), it is counted in `requests_abandoned_total`
/// by whether its signature had been verified.
struct Unanswered<'a> {
    abandoned: &'a [IntCounter; 2],
    verified: std::cell::Cell<bool>,
    answered: bool,
}

impl<'a> Unanswered<'a> {
    fn new(abandoned: &'a [IntCounter; 2]) -> Self {
        Self {
            abandoned,
            verified: std::cell::Cell::new(false),
            answered: false,
        }
    }

    fn verified(&self) {
        self.verified.set(true);
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.abandoned[usize::from(self.verified.get())].inc();
            tracing::debug!(
                verified = self.verified.get(),
                "A webhook request was dropped unanswered."
            );
        }
    }
}

/// What every webhook request shares. Built by [`Ingress::new`] (`build.rs`).
pub struct Ingress {
    deliver: Arc<dyn Deliver>,
    router: Router,
    metrics: Metrics,
    format: RecordFormat,
    max_body_bytes: usize,
    max_header_bytes: usize,
    retry_after_s: u32,
    /// The budgets of unverified and verified work, and the count [`Ingress::drain`] waits on.
    admission: Admission,
    dedupe: Option<Dedupe>,
    /// The endpoints, privacy rules and allow-list: what a reload swaps (`live.rs`).
    live: Current,
    /// `events_forwarded` children, resolved once, indexed by route id.
    forwarded: Vec<IntCounter>,
    /// Set at shutdown: new webhooks are refused while those in flight finish.
    stopping: Arc<Stopping>,
    /// A body declaring more than any routed topic accepts is refused before reading.
    record_limit: Arc<RecordLimit>,
    /// The spans of webhook requests (off unless `[telemetry]` asks).
    traces: Traces,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Every path but the probes' and `/metrics`: a configured endpoint's (`POST`: a webhook,
/// any other method 405), else 404. The live configuration is taken once, here: the
/// request finishes under it whatever a reload swaps in meanwhile.
pub async fn dispatch(
    request: HttpRequest,
    payload: web::Payload,
    ingress: web::Data<Ingress>,
) -> HttpResponse {
    let live = ingress.live.load();
    match live.endpoint(request.path()) {
        None => reject(&ingress, NO_ENDPOINT, IngressError::NotFound),
        Some(endpoint) if request.method() != actix_web::http::Method::POST => {
            reject(&ingress, &endpoint.path, IngressError::MethodNotAllowed)
        }
        Some(endpoint) => receive(&request, payload, &live, endpoint, &ingress).await,
    }
}

/// `POST <endpoint.path>`
async fn receive(
    request: &HttpRequest,
    payload: web::Payload,
    live: &Live,
    endpoint: &Endpoint,
    ingress: &Ingress,
) -> HttpResponse {
    let started = Instant::now();
    let trusted = || {
        request
            .peer_addr()
            .is_some_and(|peer| live.access.is_trusted(peer.ip()))
    };
    let span = ingress.traces.webhook(request, &endpoint.path, trusted);
    let unanswered = Unanswered::new(&endpoint.abandoned);
    let handled = ingress
        .handle(request, payload, live, endpoint, &span, &unanswered)
        .await;
    unanswered.answered();
    let (response, outcome) = match handled {
        Ok(response) => {
            let outcome = if response.status() == actix_web::http::StatusCode::OK {
                "delivered"
            } else {
                "accepted"
            };
            (response, outcome)
        }
        Err(error) => {
            match &error {
                IngressError::Delivery(_) => {} // counted as a failure where it happened
                rejected => {
                    ingress
                        .metrics
                        .events_rejected
                        .with_label_values(&[&endpoint.path, rejected.code()])
                        .inc();
                    // DEBUG: a flood of refusals must not become a flood of log lines; the
                    // metric above carries the count.
                    tracing::debug!(endpoint = %endpoint.path, reason = rejected.code(), trace_id = span.trace_id(), "Rejected a webhook request.");
                }
            }
            (error.response(ingress.retry_after_s), error.code())
        }
    };
    span.finish(response.status().as_u16(), outcome);
    endpoint.duration.observe(started.elapsed().as_secs_f64());
    response
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
    /// The steps of one webhook request, cheapest refusal first; nothing is spent on a
    /// body before its sender is known beyond the unverified budget (`admission.rs`).
    async fn handle(
        &self,
        request: &HttpRequest,
        payload: web::Payload,
        live: &Live,
        endpoint: &Endpoint,
        span: &WebhookSpan,
        unanswered: &Unanswered<'_>,
    ) -> Result<HttpResponse, IngressError> {
        let _active = self.admission.enter();
        self.admit(request, live)?;
        let head = self.check_head(request)?;
        let (body, unverified) = self.read_body(payload, &head).await?;
        let verify = span.step("verify");
        let verified = endpoint.verifier.verify_decoded(&head.signature, body)?;
        drop(verify);
        unanswered.verified();
        if let Some(counter) = endpoint.verified_by.get(verified.registration()) {
            counter.inc();
        }
        let _slot = self.admission.verified(verified.body().len(), unverified)?;
        if let Some(answer) = self.replayed(&verified, endpoint) {
            return Ok(answer);
        }
        self.publish_verified(&verified, live, endpoint, span).await
    }

    /// The body, read within the unverified budget and `server.body_timeout_ms` (else 408).
    async fn read_body(
        &self,
        payload: web::Payload,
        head: &Head,
    ) -> Result<(bytes::Bytes, Reservation), IngressError> {
        let mut reservation = self.admission.unverified();
        let read = read_capped(payload, self.max_body_bytes, head.length, &mut reservation);
        let body = tokio::time::timeout(self.admission.body_timeout(), read)
            .await
            .map_err(|_| IngressError::RequestTimeout)??;
        Ok((body, reservation))
    }

    /// The refusals that need nothing of the request but its origin: the allowlist (403)
    /// and shutdown (503).
    fn admit(&self, request: &HttpRequest, live: &Live) -> Result<(), IngressError> {
        if live.access.restricts() {
            let lines = request.headers().get_all("x-forwarded-for");
            let forwarded_for = crate::access::forwarded_for(lines.map(|v| v.as_bytes()));
            let peer = request.peer_addr().map(|a| a.ip());
            if !live.access.allows(peer, forwarded_for.as_deref()) {
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
    fn check_head(&self, request: &HttpRequest) -> Result<Head, IngressError> {
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err(IngressError::HeadersTooLarge);
        }
        let length = content_length(request)?;
        let fits_no_topic = |n: usize| self.record_limit.get().is_some_and(|l| n as u64 > l);
        if length.is_some_and(|n| n > self.max_body_bytes || fits_no_topic(n)) {
            return Err(IngressError::BodyTooLarge);
        }
        let signature = match request.headers().get(SIGNATURE_HEADER) {
            None => return Err(IngressError::MissingSignature),
            Some(value) => Signature::from_header(value.as_bytes())?,
        };
        Ok(Head { signature, length })
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
}

/// What the request's head says, checked before the body is read.
struct Head {
    signature: Signature,
    /// The declared Content-Length; `None` for a chunked body.
    length: Option<usize>,
}

#[cfg(test)]
mod unanswered_tests {
    use super::Unanswered;
    use prometheus::IntCounter;

    #[test]
    fn a_request_dropped_unanswered_is_counted_by_how_far_it_got_and_an_answered_one_not() {
        let counters = || [0, 1].map(|i| IntCounter::new(format!("c{i}"), "h").expect("counter"));
        let abandoned = counters();
        drop(Unanswered::new(&abandoned));
        let verified = Unanswered::new(&abandoned);
        verified.verified();
        drop(verified);
        Unanswered::new(&abandoned).answered();
        assert_eq!(abandoned.map(|c| c.get()), [1, 1]);
    }
}
