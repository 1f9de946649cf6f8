//! OpenTelemetry traces of webhooks: a span per webhook request, from its head to its
//! answer, with child spans for the steps (`verify`, `prepare`: parse, privacy, route) and
//! for the delivery (`send <topic>`: encoding the record and waiting for Kafka's
//! acknowledgement or the spool's fsync). The delivery span's context goes into the record
//! (`record.rs` writes `traceparent`), so a consumer's span continues the trace.
//!
//! Qminder sends no trace context, so a trace begins here; a `traceparent` from the caller
//! is believed only from `server.trusted_proxies` (anyone else could pick our trace ids).
//! Attributes follow the OpenTelemetry semantic conventions for HTTP servers and messaging,
//! and carry no secret and no personal data: ids, types, topics, codes. What is exported,
//! and how it never waits on a collector: `export.rs`. Off ([`Traces::off`]) it costs a
//! branch per step. Spans are made with the OpenTelemetry API itself rather than through
//! `tracing-opentelemetry`: the bridge needs the delivery span's context while it is open,
//! and a handful of spans with fixed attributes does not need a bridge between two APIs.

mod export;
mod span;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

pub use export::{ExportPlan, SpanCounters};
pub use span::{DeliverySpan, OUTCOME, Step, WebhookSpan};

use crate::config::{Sampling, TelemetrySettings};
use crate::metrics::Metrics;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("telemetry: cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The bridge's tracer, or nothing.
#[derive(Clone, Default)]
pub struct Traces {
    on: Option<Arc<On>>,
}

struct On {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for On {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("On")
    }
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("on", &self.on.is_some())
            .finish()
    }
}

impl Traces {
    /// No spans, no context in records.
    pub fn off() -> Self {
        Self::default()
    }

    /// The tracer `settings` ask for (reading the OpenTelemetry variables for what they leave
    /// out), or [`Traces::off`].
    pub fn start(settings: &TelemetrySettings, metrics: &Metrics) -> Result<Self, TracesError> {
        Self::start_counting(settings, SpanCounters::of(metrics))
    }

    /// [`Traces::start`], counting in `counters`.
    pub fn start_counting(
        settings: &TelemetrySettings,
        counters: SpanCounters,
    ) -> Result<Self, TracesError> {
        let env = |name: &str| std::env::var(name).ok();
        if !settings.enabled(env) {
            return Ok(Self::off());
        }
        let service = settings
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "qminder-bridge".into());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        builder = builder.with_sampler(sampler(settings, env));
        if let Some(endpoint) = settings.endpoint(env) {
            let plan = ExportPlan {
                // A configured base gets the signal's path; the variables are the exporter's.
                url: settings
                    .otlp_endpoint
                    .as_ref()
                    .map(|_| format!("{}/v1/traces", endpoint.trim_end_matches('/'))),
                max_queued_spans: settings.queued_spans(env),
                timeout: settings.export_timeout_ms.map(Duration::from_millis),
            };
            builder = builder.with_span_processor(export::processor(&plan, counters)?);
            let endpoint = crate::config::shown_endpoint(&endpoint);
            tracing::info!(%endpoint, "Exporting traces over OTLP/HTTP.");
        }
        let provider = builder.build();
        let tracer = provider.tracer("qminder-bridge");
        Ok(Self {
            on: Some(Arc::new(On {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
            })),
        })
    }

    /// Whether spans are made.
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// Ends tracing: what is queued is exported within `timeout`, then nothing more.
    /// Blocks: call it from a blocking thread.
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(on) = &self.on
            && let Err(error) = on.provider.shutdown_with_timeout(timeout)
        {
            tracing::warn!(%error, "Not every span was exported at shutdown.");
        }
    }

    /// [`Traces::shutdown`] from async code, by `deadline` whatever the collector does.
    pub async fn shutdown_by(self, deadline: std::time::Instant) {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let blocking = tokio::task::spawn_blocking(move || self.shutdown(remaining));
        let _ = tokio::time::timeout(remaining, blocking).await;
    }

    /// The span of a run of `backfill` or the reconciler (`name`), whose context the
    /// records it rebuilds carry.
    pub fn run(&self, name: &'static str) -> WebhookSpan {
        match &self.on {
            None => WebhookSpan::none(),
            Some(on) => {
                let span = on.tracer.start(name);
                WebhookSpan::new(Arc::clone(on), Context::new(), span)
            }
        }
    }
}

/// The sampler in force (`[telemetry]`, else the OpenTelemetry variables), as the SDK's.
fn sampler(settings: &TelemetrySettings, env: impl Fn(&str) -> Option<String>) -> Sampler {
    let Sampling { name, ratio } = settings.sampling(env);
    let (parent_based, root) = match name.strip_prefix("parentbased_") {
        Some(root) => (true, root),
        None => (false, name),
    };
    let root = match root {
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        _ => Sampler::AlwaysOn,
    };
    if parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}
