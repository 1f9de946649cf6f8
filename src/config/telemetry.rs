//! `[telemetry]`: OpenTelemetry traces. Each key maps to the OpenTelemetry environment
//! variable named in its comment; a key left out leaves that variable (read by the
//! OpenTelemetry SDK and exporter themselves) in charge, so either way of configuring works.
//! Off unless an OTLP endpoint is configured (key or variable) or `propagate_without_export`.

use serde::{Deserialize, Serialize};

/// `[telemetry]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP (protobuf) receiver, e.g. `http://otel-collector:4318`;
    /// spans go to `<it>/v1/traces`. Variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the
    /// whole URL), `OTEL_EXPORTER_OTLP_ENDPOINT` (the base). Unset: nothing is exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans. Variable: `OTEL_SERVICE_NAME`. Default
    /// `qminder-bridge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Which traces are recorded and exported: `always_on`, `always_off`, `traceidratio`,
    /// `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`.
    /// Variable: `OTEL_TRACES_SAMPLER`. Default `parentbased_always_on`. Records carry
    /// context either way (flags `00` when not sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    /// The ratio of the `*traceidratio` samplers, 0 to 1. Variable:
    /// `OTEL_TRACES_SAMPLER_ARG`. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler_arg: Option<f64>,
    /// Put trace context (`traceparent`) in records even when nothing is exported, so that
    /// consumers' traces begin at the bridge.
    pub propagate_without_export: bool,
    /// Ended spans waiting to be exported, at most; more are dropped and counted
    /// (`qminder_bridge_trace_spans_dropped_total`). Variable: `OTEL_BSP_MAX_QUEUE_SIZE`.
    /// Default 2048. A term of the memory bound (~2 KiB a span).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_spans: Option<usize>,
    /// Time one export may take before its spans are given up (counted as dropped).
    /// Variables: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT`.
    /// Default 10000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_timeout_ms: Option<u64>,
}

/// The samplers `sampler` may name (the OpenTelemetry specification's).
pub const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// Spans queued for export when neither `max_queued_spans` nor the variable says.
pub const DEFAULT_MAX_QUEUED_SPANS: usize = 2048;

impl TelemetrySettings {
    /// The OTLP endpoint in force: the key, else the variables; `None`: no export.
    pub fn endpoint(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        self.otlp_endpoint.clone().or_else(|| {
            [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ]
            .into_iter()
            .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
        })
    }

    /// Whether the bridge makes spans at all: when it exports them or propagates context.
    pub fn enabled(&self, env: impl Fn(&str) -> Option<String>) -> bool {
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        !disabled && (self.propagate_without_export || self.endpoint(env).is_some())
    }

    /// The OpenTelemetry variables the SDK would not understand: it falls back to its
    /// defaults without a word, so `check-config` and `serve` say it (warnings, as for any
    /// variable: the keys above are refused instead).
    pub fn environment_warnings(&self, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(sampler) = env("OTEL_TRACES_SAMPLER")
            && self.sampler.is_none()
            && !SAMPLERS.contains(&sampler.as_str())
        {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER = {sampler:?} is not a sampler this bridge knows; the \
                 SDK falls back to parentbased_always_on; use one of {}",
                SAMPLERS.join(", ")
            ));
        }
        if let Some(arg) = env("OTEL_TRACES_SAMPLER_ARG")
            && self.sampler_arg.is_none()
            && !arg
                .trim()
                .parse::<f64>()
                .is_ok_and(|r| (0.0..=1.0).contains(&r))
        {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER_ARG = {arg:?} is not a ratio from 0 to 1; the SDK \
                 samples every trace instead"
            ));
        }
        warnings
    }

    /// What is wrong with the keys, each said with how to fix it.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(sampler) = &self.sampler
            && !SAMPLERS.contains(&sampler.as_str())
        {
            problems.push(format!(
                "telemetry.sampler = {sampler:?} is not a sampler; use one of {}",
                SAMPLERS.join(", ")
            ));
        }
        if let Some(ratio) = self.sampler_arg
            && !(0.0..=1.0).contains(&ratio)
        {
            problems.push(format!(
                "telemetry.sampler_arg = {ratio} must be a ratio from 0 to 1 (0.01: one trace in 100)"
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "telemetry.otlp_endpoint = {endpoint:?} must be an http:// or https:// URL, e.g. \
                 \"http://otel-collector:4318\""
            ));
        }
        if self.max_queued_spans == Some(0) || self.export_timeout_ms == Some(0) {
            problems.push(
                "telemetry.max_queued_spans and telemetry.export_timeout_ms must be above 0".into(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn is_on_with_an_endpoint_from_the_key_or_the_variables_or_to_propagate_only() {
        let mut t = TelemetrySettings::default();
        assert!(!t.enabled(env(&[])));
        assert!(t.enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])));
        assert!(t.enabled(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )])));
        assert!(!t.enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        t.propagate_without_export = true;
        assert!(t.enabled(env(&[])));
        assert!(!t.enabled(env(&[("OTEL_SDK_DISABLED", "TRUE")])));
        t.propagate_without_export = false;
        t.otlp_endpoint = Some("http://collector:4318".into());
        assert_eq!(
            t.endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")]))
                .as_deref(),
            Some("http://collector:4318")
        );
    }

    #[test]
    fn refuses_keys_an_operator_mistyped_with_what_to_write() {
        type Mistype = fn(&mut TelemetrySettings);
        let cases: &[(Mistype, &str)] = &[
            (
                |t| t.sampler = Some("parentbased_ratio".into()),
                "telemetry.sampler",
            ),
            (|t| t.sampler_arg = Some(1.5), "telemetry.sampler_arg"),
            (
                |t| t.otlp_endpoint = Some("collector:4318".into()),
                "telemetry.otlp_endpoint",
            ),
            (|t| t.max_queued_spans = Some(0), "max_queued_spans"),
        ];
        for (mistype, key) in cases {
            let mut t = TelemetrySettings::default();
            assert!(t.problems().is_empty());
            mistype(&mut t);
            let problems = t.problems();
            assert_eq!(problems.len(), 1, "{key}: {problems:?}");
            assert!(problems[0].contains(key), "{problems:?}");
        }
    }

    #[test]
    fn warns_of_variables_the_sdk_would_silently_ignore() {
        let t = TelemetrySettings::default();
        assert!(
            t.environment_warnings(env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01")
            ]))
            .is_empty()
        );
        assert_eq!(
            t.environment_warnings(env(&[("OTEL_TRACES_SAMPLER", "ratio")]))
                .len(),
            1
        );
        assert_eq!(
            t.environment_warnings(env(&[("OTEL_TRACES_SAMPLER_ARG", "1%")]))
                .len(),
            1
        );
    }
}
