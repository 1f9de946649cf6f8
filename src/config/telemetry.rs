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
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_shown"
    )]
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

/// One of [`SAMPLERS`], as a variable may write it (surrounding blanks allowed).
fn known_sampler(name: &str) -> Option<&'static str> {
    SAMPLERS.iter().find(|k| **k == name.trim()).copied()
}

/// A sampling ratio from 0 to 1, as a variable may write it.
fn ratio_of(text: &str) -> Option<f64> {
    let ratio = text.trim().parse::<f64>().ok()?;
    (0.0..=1.0).contains(&ratio).then_some(ratio)
}

/// `otlp_endpoint` as `check-config` and the log show it: a user name, password or query,
/// which may carry credentials, shown as `[redacted]`.
pub fn shown_endpoint(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        let plain = !url.contains(['@', '?']);
        return if plain {
            url.to_owned()
        } else {
            "[redacted]".into()
        };
    };
    let userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    let query = parsed.query().is_some();
    if !userinfo && !query {
        return url.to_owned();
    }
    // Neither can fail for a URL with a host, the only kind that has a user name.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    let mut shown = parsed.to_string();
    if userinfo && let Some(at) = shown.find("://") {
        shown.insert_str(at + 3, "[redacted]@");
    }
    if query {
        shown.push_str("?[redacted]");
    }
    shown
}

fn serialize_shown<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    url.as_deref().map(shown_endpoint).serialize(s)
}

/// The sampler in force: a name of [`SAMPLERS`] and the ratio of the `*traceidratio` ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub name: &'static str,
    pub ratio: f64,
}

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

    /// The sampler in force: each key, else its variable (a value the SDK would not
    /// understand counts as unset, as the SDK treats it), else the default,
    /// `parentbased_always_on` with ratio 1. A ratio with no sampler named anywhere means
    /// `parentbased_traceidratio`.
    pub fn sampling(&self, env: impl Fn(&str) -> Option<String>) -> Sampling {
        let ratio = self
            .sampler_arg
            .or_else(|| env("OTEL_TRACES_SAMPLER_ARG").as_deref().and_then(ratio_of));
        let name = match &self.sampler {
            Some(name) => known_sampler(name),
            None => env("OTEL_TRACES_SAMPLER")
                .as_deref()
                .and_then(known_sampler)
                .or(self.sampler_arg.map(|_| "parentbased_traceidratio")),
        };
        Sampling {
            name: name.unwrap_or("parentbased_always_on"),
            ratio: ratio.unwrap_or(1.0),
        }
    }

    /// Ended spans that may wait for export: the key, else `OTEL_BSP_MAX_QUEUE_SIZE`, else
    /// [`DEFAULT_MAX_QUEUED_SPANS`].
    pub fn queued_spans(&self, env: impl Fn(&str) -> Option<String>) -> usize {
        self.max_queued_spans
            .or_else(|| env("OTEL_BSP_MAX_QUEUE_SIZE").and_then(|v| v.trim().parse().ok()))
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_QUEUED_SPANS)
    }

    /// The OpenTelemetry variables the SDK would not understand: it falls back to its
    /// defaults without a word, so `check-config` and `serve` say it (warnings, as for any
    /// variable: the keys above are refused instead).
    pub fn environment_warnings(&self, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(sampler) = env("OTEL_TRACES_SAMPLER")
            && self.sampler.is_none()
            && known_sampler(&sampler).is_none()
        {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER = {sampler:?} is not a sampler this bridge knows; the \
                 SDK falls back to parentbased_always_on; use one of {}",
                SAMPLERS.join(", ")
            ));
        }
        if let Some(arg) = env("OTEL_TRACES_SAMPLER_ARG")
            && self.sampler_arg.is_none()
            && ratio_of(&arg).is_none()
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
#[path = "telemetry_tests.rs"]
mod tests;
