//! Exporting finished spans over OTLP/HTTP (protobuf), never on a request's path.
//!
//! The OpenTelemetry SDK's `BatchSpanProcessor` does the work on a thread of its own: a
//! request's span, when it ends, is only offered to a bounded queue (`try_send`, never a
//! wait), and the batch thread exports with the `opentelemetry-otlp` exporter (blocking
//! reqwest, with its timeout). A collector that is slow, stopped or refusing therefore costs
//! requests nothing: spans wait in the queue, and once it is full new ones are dropped.
//!
//! The SDK counts its drops but does not show the count, so two thin wrappers keep
//! the bridge's own: [`Gate`], in front of the batch processor, holds the queue's bound
//! itself (a span beyond it is dropped and counted as `queue_full` before the SDK would), and
//! [`Counted`], around the exporter, counts what each export did (`exported`, or dropped
//! as `export_failed`: an error, a refusal or a timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use prometheus::IntCounter;

use crate::metrics::{Metrics, TRACE_EXPORT_FAILED, TRACE_QUEUE_FULL};

/// What the export counts: the bridge's metrics, or (an operator tool) counters of its own.
#[derive(Debug, Clone)]
pub struct SpanCounters {
    pub exported: IntCounter,
    pub export_failed: IntCounter,
    pub queue_full: IntCounter,
}

impl SpanCounters {
    pub fn of(metrics: &Metrics) -> Self {
        let dropped = |reason| metrics.traces.dropped.with_label_values(&[reason]);
        Self {
            exported: metrics.traces.exported.clone(),
            export_failed: dropped(TRACE_EXPORT_FAILED),
            queue_full: dropped(TRACE_QUEUE_FULL),
        }
    }

    /// Counters no registry exports (`backfill` has no `/metrics`).
    pub fn unexported() -> Self {
        let counter = |name| IntCounter::new(name, name).expect("a valid name");
        Self {
            exported: counter("exported"),
            export_failed: counter("export_failed"),
            queue_full: counter("queue_full"),
        }
    }
}

/// Where and how spans go.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// The full URL (`…/v1/traces`) when the configuration names it; else the exporter
    /// reads the OpenTelemetry variables itself.
    pub url: Option<String>,
    pub max_queued_spans: usize,
    pub timeout: Option<Duration>,
}

/// The batch processor, behind the [`Gate`], exporting through [`Counted`].
pub fn processor(
    plan: &ExportPlan,
    counters: SpanCounters,
) -> Result<Gate, opentelemetry_otlp::ExporterBuildError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(url) = &plan.url {
        builder = builder.with_endpoint(url.clone());
    }
    if let Some(timeout) = plan.timeout {
        builder = builder.with_timeout(timeout);
    }
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = Counted {
        inner: builder.build()?,
        queued: Arc::clone(&queued),
        exported: counters.exported,
        failed: counters.export_failed,
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(plan.max_queued_spans)
                .build(),
        )
        .build();
    Ok(Gate {
        inner: batch,
        queued,
        max: plan.max_queued_spans,
        dropped: counters.queue_full,
    })
}

/// Holds the export queue's bound and counts what it drops.
#[derive(Debug)]
pub struct Gate {
    inner: BatchSpanProcessor,
    /// Spans handed to the batch processor and not yet taken by an export.
    queued: Arc<AtomicUsize>,
    max: usize,
    dropped: IntCounter,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting each batch's fate.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    exported: IntCounter,
    failed: IntCounter,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        // Taken off the queue: room for as many new spans.
        self.queued.fetch_sub(n, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        let counter = if result.is_ok() {
            &self.exported
        } else {
            &self.failed
        };
        counter.inc_by(n as u64);
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
