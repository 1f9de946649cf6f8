//! OpenTelemetry traces (`[telemetry]`, `traces/`): `qminder_bridge_trace_spans_*`, what
//! the export delivered and what it gave up, by reason.

use prometheus::{IntCounter, IntCounterVec};

use super::Declare;

/// The reason labels of `trace_spans_dropped_total`: the export queue was full; an export
/// failed (an error, a refusal, a timeout).
pub const TRACE_QUEUE_FULL: &str = "queue_full";
pub const TRACE_EXPORT_FAILED: &str = "export_failed";

/// The span export's metrics.
#[derive(Debug, Clone)]
pub struct TraceMetrics {
    /// Spans the OTLP exporter delivered.
    pub exported: IntCounter,
    /// Spans given up, by reason ([`TRACE_QUEUE_FULL`], [`TRACE_EXPORT_FAILED`]).
    pub dropped: IntCounterVec,
}

impl TraceMetrics {
    pub(super) fn new(d: &Declare) -> Self {
        Self {
            exported: d.counter("trace_spans_exported_total",
                "Spans the OTLP exporter delivered to the collector ([telemetry]).",
            ),
            dropped: d.counter_vec("trace_spans_dropped_total",
                "Spans given up, by reason: queue_full (the export queue, telemetry.max_queued_spans, was full), export_failed (the collector refused, failed or timed out).",
                &["reason"],
            ),
        }
    }

    pub(super) fn precreate(&self) {
        for reason in [TRACE_QUEUE_FULL, TRACE_EXPORT_FAILED] {
            self.dropped.with_label_values(&[reason]);
        }
    }
}
