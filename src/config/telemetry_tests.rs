//! `[telemetry]`'s unit tests: the keys' checks, the variables read where a key is left
//! out, and what is shown of the endpoint.

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
fn an_endpoints_credentials_are_never_shown() {
    let cases = [
        ("http://collector:4318", "http://collector:4318"),
        (
            "https://user:s3cret@collector:4318/base",
            "https://[redacted]@collector:4318/base",
        ),
        (
            "https://s3cret@collector:4318",
            "https://[redacted]@collector:4318/",
        ),
        (
            "https://collector:4318/?api-key=s3cret",
            "https://collector:4318/?[redacted]",
        ),
        ("not a URL, s3cret@", "[redacted]"),
    ];
    for (url, shown) in cases {
        assert_eq!(shown_endpoint(url), shown);
        let t = TelemetrySettings {
            otlp_endpoint: Some(url.to_owned()),
            ..TelemetrySettings::default()
        };
        let text = toml::to_string(&t).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[test]
fn a_sampler_key_left_out_leaves_its_variable_in_charge() {
    // (sampler key, sampler_arg key, variables, the sampler in force)
    type Vars = &'static [(&'static str, &'static str)];
    type Case = (Option<&'static str>, Option<f64>, Vars, (&'static str, f64));
    let cases: [Case; 8] = [
        (
            Some("parentbased_traceidratio"),
            None,
            &[("OTEL_TRACES_SAMPLER_ARG", "0.01")],
            ("parentbased_traceidratio", 0.01),
        ),
        (
            None,
            Some(0.5),
            &[("OTEL_TRACES_SAMPLER", "always_off")],
            ("always_off", 0.5),
        ),
        (None, Some(0.5), &[], ("parentbased_traceidratio", 0.5)),
        (
            Some("traceidratio"),
            Some(0.2),
            &[
                ("OTEL_TRACES_SAMPLER", "always_off"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.9"),
            ],
            ("traceidratio", 0.2),
        ),
        (
            None,
            None,
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
            ("traceidratio", 0.25),
        ),
        (None, None, &[], ("parentbased_always_on", 1.0)),
        // Values the SDK does not understand: its defaults (and a warning, below).
        (
            None,
            None,
            &[("OTEL_TRACES_SAMPLER", "jaeger_remote")],
            ("parentbased_always_on", 1.0),
        ),
        (
            Some("traceidratio"),
            None,
            &[("OTEL_TRACES_SAMPLER_ARG", "1%")],
            ("traceidratio", 1.0),
        ),
    ];
    for (sampler, sampler_arg, vars, (name, ratio)) in cases {
        let t = TelemetrySettings {
            sampler: sampler.map(str::to_owned),
            sampler_arg,
            ..TelemetrySettings::default()
        };
        assert_eq!(
            t.sampling(env(vars)),
            Sampling { name, ratio },
            "keys {sampler:?} {sampler_arg:?}, variables {vars:?}"
        );
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
