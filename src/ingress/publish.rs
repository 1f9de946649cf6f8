//! The steps after verification: prepare (parse, apply the privacy rules, route, encode),
//! deliver, count, and the answer's parts. A body that is not an event goes to the
//! dead-letter topic (202). A record Kafka will never accept (too large, invalid) gets a
//! final answer (413 / 422, no `Retry-After`) and is never dropped without a trace: a
//! stub (id, event type, topic, size, reason) goes to the dead-letter topic in its place.
//! Counters are resolved once per route at start-up and indexed by the route's id.
//! Spans: `prepare` (parse, privacy, route), then the delivery's (`send <topic>`), which
//! covers encoding (the record carries its context) and the wait for Kafka or the spool.

use std::borrow::Cow;
use std::time::Instant;

use actix_web::HttpResponse;
use time::OffsetDateTime;

use super::answer::answer;
use super::{Endpoint, Ingress, Live};
use crate::dedupe::Remembered;
use crate::delivery::{Delivered, DeliveryError};
use crate::errors::IngressError;
use crate::event;
use crate::record::{self, Context, Record};
use crate::routing::Route;
use crate::signature::Verified;
use crate::traces::{DeliverySpan, WebhookSpan};

impl Ingress {
    /// Prepare → deliver → count → answer; a body that is not an event goes to the
    /// dead-letter topic.
    pub(super) async fn publish_verified(
        &self,
        verified: &Verified,
        live: &Live,
        endpoint: &Endpoint,
        span: &WebhookSpan,
    ) -> Result<HttpResponse, IngressError> {
        let mut ctx = Context {
            source: &endpoint.source,
            received_at: OffsetDateTime::now_utc(),
            trace: None,
        };
        let prepare = span.step("prepare");
        match event::parse(verified) {
            Ok(mut event) => {
                if let Some(privacy) = &live.privacy
                    && let Cow::Owned(data) = privacy.apply(&event.data)
                {
                    event.data = Cow::Owned(data);
                }
                let route = self.router.route(&event.event_type);
                endpoint.accepted[route.id].inc();
                drop(prepare);
                let subject = event.entity_id.as_deref();
                let delivery = span.delivery(
                    &route.topic,
                    verified.id(),
                    Some(&event.event_type),
                    subject,
                );
                let trace = delivery.context().cloned();
                ctx.trace = trace.as_ref();
                let record = record::encode(self.format, verified, &event, route, ctx);
                let delivered = self.deliver(&record, route, None, ctx, delivery).await?;
                Ok(answer(record.id, record.topic, delivered, None, false))
            }
            Err(malformed) => {
                let route = self.router.dead_letter();
                endpoint.accepted[route.id].inc();
                drop(prepare);
                tracing::warn!(
                    endpoint = %endpoint.path,
                    reason = malformed.code(),
                    trace_id = span.trace_id(),
                    "Sending an authenticated body that is not an event to the dead-letter topic."
                );
                let delivery = span.delivery(&route.topic, verified.id(), None, None);
                let trace = delivery.context().cloned();
                ctx.trace = trace.as_ref();
                let record = record::encode_dead_letter(verified, malformed, route, ctx);
                let reason = Some(malformed.code());
                let delivered = self.deliver(&record, route, reason, ctx, delivery).await?;
                Ok(answer(record.id, record.topic, delivered, reason, false))
            }
        }
    }

    /// Delivers `record`, counts the outcome, and remembers an acknowledged one for
    /// `[dedupe]` (with the dead-letter reason its answer carried, if any).
    async fn deliver(
        &self,
        record: &Record<'_>,
        route: &Route,
        dead_letter_reason: Option<&'static str>,
        ctx: Context<'_>,
        span: DeliverySpan,
    ) -> Result<Delivered, IngressError> {
        let result = self.deliver.deliver(record).await;
        // For the log lines below, before the span ends.
        let trace_id = if result.is_err() {
            span.trace_id()
        } else {
            None
        };
        match &result {
            Ok(Delivered::Kafka { partition, offset }) => span.acknowledged(*partition, *offset),
            Ok(Delivered::Spooled { .. }) => span.spooled(),
            Err(error) => span.failed(error.reason()),
        }
        match result {
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
                    self.forwarded[route.id].inc();
                }
                Ok(delivered)
            }
            Err(error) => {
                self.metrics
                    .events_failed
                    .with_label_values(&[&route.label, error.reason()])
                    .inc();
                if error.is_final() {
                    self.leave_a_trace(record, &error, ctx, trace_id).await;
                } else {
                    tracing::warn!(
                        trace_id,
                        event_type = %route.label,
                        topic = %route.topic,
                        reason = error.reason(),
                        %error,
                        "Kafka did not acknowledge an event; answered 503."
                    );
                }
                Err(error.into())
            }
        }
    }

    /// For a record Kafka will never accept: a stub in the dead-letter topic says what was
    /// refused; if even that fails, the log says it, at ERROR.
    async fn leave_a_trace(
        &self,
        refused: &Record<'_>,
        error: &DeliveryError,
        ctx: Context<'_>,
        trace_id: Option<tracing::field::DisplayValue<opentelemetry::trace::TraceId>>,
    ) {
        let route = self.router.dead_letter();
        let stub = record::encode_refused(refused, error.failure().code, route, ctx);
        let outcome = self.deliver.deliver(&stub).await;
        let span = tracing::warn_span!(
            "refused for good",
            id = refused.id,
            event_type = refused.label,
            topic = refused.topic,
            bytes = refused.value.len(),
            reason = error.reason(),
            %error,
            trace_id,
        );
        let _refused = span.enter();
        match outcome {
            Ok(_) => tracing::warn!(
                dead_letter_topic = %route.topic,
                "Kafka will never accept this record; answered it for good and left a stub in the dead-letter topic."
            ),
            Err(stub_error) => tracing::error!(
                %stub_error,
                "Kafka will never accept this record, and its stub could not be written either; this line is the only trace."
            ),
        }
    }
}
