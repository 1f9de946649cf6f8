//! Tests of `reload.rs`: every key is classified, and the verdict follows the table.

use super::*;
use crate::config::EndpointSettings;
use crate::secret::SecretSpec;

/// The annotated example, with every optional key given a value, so that every key the
/// configuration has shows up as a leaf.
fn every_key() -> Settings {
    let text = std::fs::read_to_string("config/example.toml").expect("the example config");
    let mut s: Settings = toml::from_str(&text).expect("the example parses");
    s.server.max_connections_per_worker = Some(10);
    s.server.tls = Some(crate::config::TlsSettings {
        cert_file: "c.pem".into(),
        key_file: "k.pem".into(),
        http2: false,
    });
    s.kafka.max_in_flight_requests = Some(1);
    s.kafka.unknown_topic = Some("u".into());
    s.kafka.dead_letter_topic = Some("d".into());
    s.kafka.topics.insert("ticket_created".into(), "t".into());
    s.privacy.hash_key = Some(SecretSpec::parse("a-privacy-key-of-32-bytes-at-least!"));
    s.endpoints[0].source = Some("qminder://x".into());
    s.endpoints[0].qminder = Some(toml::from_str("api_key = \"k\"").expect("qminder"));
    s
}

#[test]
fn classifies_every_key_the_configuration_has() {
    let unclassified: Vec<String> = leaves(&every_key())
        .into_keys()
        .filter(|k| entry(k).is_none())
        .collect();
    assert_eq!(unclassified, Vec::<String>::new(), "add them to KEYS");
}

#[test]
fn names_only_keys_the_configuration_has() {
    let keys = leaves(&every_key());
    for (prefix, _, _) in KEYS {
        assert!(
            keys.keys()
                .any(|k| entry(k).is_some_and(|e| e.0 == *prefix)),
            "{prefix} decides no key: a stale row of KEYS"
        );
    }
}

#[test]
fn the_readme_lists_every_row_of_the_table() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    for (key, apply, why) in KEYS {
        let apply = match apply {
            Apply::Live => "live",
            Apply::Restart => "restart",
        };
        let row = format!("| `{key}` | {apply} | {why} |");
        assert!(readme.contains(&row), "README.md lacks the row\n{row}");
    }
}

#[test]
fn lets_live_changes_through_and_names_the_keys_that_need_a_restart() {
    let running = every_key();
    let mut next = running.clone();
    next.endpoints[0].secrets = vec![SecretSpec::parse("another-secret-of-enough-bytes")];
    next.endpoints.push(EndpointSettings {
        path: "/second".into(),
        url: "https://b.example/second".into(),
        secrets: vec![SecretSpec::parse("env:SECOND")],
        source: None,
        qminder: None,
        registrations: Vec::new(),
    });
    next.server.allow_cidrs = vec!["10.0.0.0/8".into()];
    next.privacy.fields.clear();
    if let Some(tls) = &mut next.server.tls {
        tls.cert_file = "renewed.pem".into();
    }
    assert_eq!(restart_needed(&running, &next), Vec::<&str>::new());

    let mut next = running.clone();
    next.server.listen = "0.0.0.0:9".into();
    next.spool.dir = "/elsewhere".into();
    next.endpoints[0].qminder = None;
    if let Some(tls) = &mut next.server.tls {
        tls.http2 = true;
    }
    assert_eq!(
        restart_needed(&running, &next),
        ["server", "server.tls", "spool"]
    );
}

#[test]
fn sees_a_kafka_password_change_behind_a_redacted_literal_and_applies_it_live() {
    let mut running = every_key();
    running.kafka.security.sasl_password = Some(SecretSpec::parse("old-password"));
    let mut next = running.clone();
    next.kafka.security.sasl_password = Some(SecretSpec::parse("new-password"));
    assert_eq!(restart_needed(&running, &next), Vec::<&str>::new());
    assert_ne!(kafka_credentials(&running), kafka_credentials(&next));
    assert_eq!(
        kafka_credentials(&running),
        kafka_credentials(&running.clone())
    );
    next.kafka.security.sasl_password = Some(SecretSpec::parse("file:/not/there"));
    let error = kafka_credentials(&next).expect_err("an unreadable secret");
    assert!(error.contains("kafka.security.sasl_password"), "{error}");
}

#[test]
fn watches_file_secrets_and_the_certificate() {
    let mut s = every_key();
    s.endpoints[0].secrets = vec![
        SecretSpec::parse("file:/run/secrets/webhook"),
        SecretSpec::parse("env:X"),
    ];
    s.kafka.security.sasl_password = Some(SecretSpec::parse("file:/run/secrets/sasl"));
    s.kafka.security.ca_file = Some("/run/kafka/ca.pem".into());
    let files: Vec<String> = watched_files(&s)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "/run/secrets/webhook",
            "/run/secrets/sasl",
            "c.pem",
            "k.pem",
            "/run/kafka/ca.pem"
        ]
    );
}
