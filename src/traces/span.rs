//! The spans of one webhook: the request's ([`WebhookSpan`], kind server), its steps
//! ([`Step`]) and its delivery ([`DeliverySpan`], kind producer), whose context the record
//! carries ([`TraceContext`]). Each ends when dropped, or when told how it ended.
//! Propagation is the SDK's W3C `TraceContextPropagator`, both ways.

use std::sync::Arc;

use actix_web::HttpRequest;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Span as SdkSpan;
use opentelemetry_semantic_conventions::attribute as semconv;

use super::{On, Traces};
use crate::record::{TYPE_PREFIX, TraceContext};

/// The span attribute that says how a webhook request ended: the answer's code
/// (`accepted`, `spooled`, `invalid_signature`, `kafka_timeout`, …; README, "Answers").
pub const OUTCOME: &str = "qminder_bridge.outcome";

/// A webhook request's span, or nothing when tracing is off.
#[derive(Debug, Default)]
pub struct WebhookSpan {
    on: Option<(Arc<On>, Context)>,
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(actix_web::http::header::HeaderName::as_str)
            .collect()
    }
}

impl Traces {
    /// The span of the webhook request `request` to `route` (an endpoint's path), a child
    /// of the caller's `traceparent` only if `trust_caller` says a trusted proxy sent it
    /// (asked only when tracing is on).
    pub fn webhook(
        &self,
        request: &HttpRequest,
        route: &str,
        trust_caller: impl FnOnce() -> bool,
    ) -> WebhookSpan {
        let Some(on) = &self.on else {
            return WebhookSpan::none();
        };
        let parent = if trust_caller() {
            on.propagator.extract(&Headers(request.headers()))
        } else {
            Context::new()
        };
        let scheme = if request.app_config().secure() {
            "https"
        } else {
            "http"
        };
        let version = match request.version() {
            actix_web::http::Version::HTTP_2 => "2",
            _ => "1.1",
        };
        let mut span = on
            .tracer
            .span_builder(format!("POST {route}"))
            .with_kind(SpanKind::Server)
            .start_with_context(&on.tracer, &parent);
        // Attributes only for a span that is recorded: an unsampled one costs its ids.
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new(semconv::HTTP_REQUEST_METHOD, "POST"),
                KeyValue::new(semconv::HTTP_ROUTE, route.to_owned()),
                KeyValue::new(semconv::URL_PATH, route.to_owned()),
                KeyValue::new(semconv::URL_SCHEME, scheme),
                KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, version),
            ]);
        }
        WebhookSpan::new(Arc::clone(on), parent, span)
    }
}

impl WebhookSpan {
    pub fn none() -> Self {
        Self::default()
    }

    pub(super) fn new(on: Arc<On>, parent: Context, span: SdkSpan) -> Self {
        Self {
            on: Some((on, parent.with_span(span))),
        }
    }

    /// The trace id, for log lines (`trace_id = span.trace_id()`); `None` when tracing is
    /// off. Shown as 32 hex digits.
    pub fn trace_id(&self) -> Option<tracing::field::DisplayValue<TraceId>> {
        let (_, cx) = self.on.as_ref()?;
        Some(tracing::field::display(cx.span().span_context().trace_id()))
    }

    /// This span's own context, for records that hang from it directly (a backfill run's).
    pub fn context(&self) -> Option<TraceContext> {
        let (on, cx) = self.on.as_ref()?;
        inject(on, cx)
    }

    /// Ends an operator run's span, saying how many records it published.
    pub fn end_run(self, published: u64, outcome: &'static str) {
        let Some((_, cx)) = self.on else { return };
        let span = cx.span();
        let published = i64::try_from(published).unwrap_or(i64::MAX);
        span.set_attribute(KeyValue::new("qminder_bridge.records_published", published));
        span.set_attribute(KeyValue::new(OUTCOME, outcome));
        span.end();
    }

    /// A child span for a step of the request, ended when dropped.
    pub fn step(&self, name: &'static str) -> Step {
        Step {
            _span: self
                .on
                .as_ref()
                .map(|(on, cx)| on.tracer.start_with_context(name, cx)),
        }
    }

    /// The delivery's span (`send <topic>`), whose context the record will carry: of the
    /// event `event_id` of Qminder's type `event_type` (none for a dead letter) about the
    /// ticket or line `subject`.
    pub fn delivery(
        &self,
        topic: &str,
        event_id: &str,
        event_type: Option<&str>,
        subject: Option<&str>,
    ) -> DeliverySpan {
        let Some((on, cx)) = &self.on else {
            return DeliverySpan::default();
        };
        let mut span = on
            .tracer
            .span_builder(format!("send {topic}"))
            .with_kind(SpanKind::Producer)
            .start_with_context(&on.tracer, cx);
        if span.is_recording() {
            span.set_attributes(delivery_attributes(topic, event_id, event_type, subject));
        }
        let cx = cx.with_span(span);
        let headers = inject(on, &cx);
        DeliverySpan {
            cx: Some(cx),
            headers,
        }
    }
    /// Ends the request's span with its answer's status and code.
    pub fn finish(self, status: u16, outcome: &'static str) {
        let Some((_, cx)) = self.on else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            semconv::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new(OUTCOME, outcome));
        if status >= 500 {
            span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, outcome));
            span.set_status(Status::error(outcome));
        }
        span.end();
    }
}

/// A step's span; ends when dropped.
#[derive(Debug)]
pub struct Step {
    _span: Option<SdkSpan>,
}

/// A delivery's span and the context the record carries; ends when told how the delivery
/// ended, or when dropped.
#[derive(Debug, Default)]
pub struct DeliverySpan {
    cx: Option<Context>,
    headers: Option<TraceContext>,
}

impl DeliverySpan {
    /// The trace id, for a log line; `None` when tracing is off.
    pub fn trace_id(&self) -> Option<tracing::field::DisplayValue<TraceId>> {
        let cx = self.cx.as_ref()?;
        Some(tracing::field::display(cx.span().span_context().trace_id()))
    }

    /// What the record carries; `None` when tracing is off.
    pub fn context(&self) -> Option<&TraceContext> {
        self.headers.as_ref()
    }

    /// Kafka acknowledged the record at `partition` and `offset`.
    pub fn acknowledged(self, partition: i32, offset: i64) {
        self.end(|span| {
            span.set_attribute(KeyValue::new(
                semconv::MESSAGING_DESTINATION_PARTITION_ID,
                partition.to_string(),
            ));
            span.set_attribute(KeyValue::new(semconv::MESSAGING_KAFKA_OFFSET, offset));
        });
    }

    /// The spool has it on disk (fsynced); the forwarder sends it later.
    pub fn spooled(self) {
        self.end(|span| span.set_attribute(KeyValue::new("qminder_bridge.spooled", true)));
    }

    /// It is not known to be in Kafka, for `reason` (a failure code).
    pub fn failed(self, reason: &'static str) {
        self.end(|span| {
            span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, reason));
            span.set_status(Status::error(reason));
        });
    }

    fn end(self, describe: impl FnOnce(&opentelemetry::trace::SpanRef<'_>)) {
        if let Some(cx) = &self.cx {
            let span = cx.span();
            describe(&span);
            span.end();
        }
    }
}

/// The delivery span's attributes (semantic conventions for messaging and CloudEvents).
fn delivery_attributes(
    topic: &str,
    event_id: &str,
    event_type: Option<&str>,
    subject: Option<&str>,
) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new(semconv::MESSAGING_SYSTEM, "kafka"),
        KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
        KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "send"),
        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
        KeyValue::new(semconv::CLOUDEVENTS_EVENT_ID, event_id.to_owned()),
    ];
    if let Some(event_type) = event_type {
        let ce_type = format!("{TYPE_PREFIX}{event_type}");
        attributes.push(KeyValue::new(semconv::CLOUDEVENTS_EVENT_TYPE, ce_type));
    }
    if let Some(subject) = subject {
        attributes.push(KeyValue::new(
            semconv::CLOUDEVENTS_EVENT_SUBJECT,
            subject.to_owned(),
        ));
    }
    attributes
}

/// Where the propagator writes: the two fields a record carries.
#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The W3C context of `cx`'s span, as a record carries it.
fn inject(on: &On, cx: &Context) -> Option<TraceContext> {
    let mut carrier = Carrier::default();
    on.propagator.inject_context(cx, &mut carrier);
    Some(TraceContext {
        traceparent: carrier.traceparent?,
        tracestate: carrier.tracestate,
    })
}
