//! librdkafka properties for the producer, the admin client and the readiness probe.
//!
//! The producer always runs with `acks=all` and `enable.idempotence=true` (no duplicates
//! from librdkafka's own retries, per-partition order kept), and `message.timeout.ms` equal
//! to `kafka.delivery_timeout_ms`, so librdkafka stops trying a record when the bridge stops
//! waiting for it. `[kafka.librdkafka]` passes other properties through; ones that weaken
//! those guarantees, or that have a typed key of their own, are configuration errors.

use rdkafka::ClientConfig;

use secrecy::ExposeSecret;

use crate::config::{KafkaSecurity, KafkaSettings};

/// Properties that a typed key owns: passthrough must not set them.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("metadata.broker.list", "kafka.bootstrap_servers"),
    ("message.timeout.ms", "kafka.delivery_timeout_ms"),
    ("delivery.timeout.ms", "kafka.delivery_timeout_ms"),
    (
        "test.mock.num.brokers",
        "kafka.bootstrap_servers = \"embedded\"",
    ),
    ("security.protocol", "[kafka.security] protocol"),
    ("ssl.ca.location", "[kafka.security] ca_file"),
    ("ssl.certificate.location", "[kafka.security] cert_file"),
    ("ssl.key.location", "[kafka.security] key_file"),
    ("ssl.key.password", "[kafka.security] key_password"),
    ("sasl.mechanism", "[kafka.security] sasl_mechanism"),
    ("sasl.mechanisms", "[kafka.security] sasl_mechanism"),
    ("sasl.username", "[kafka.security] sasl_username"),
    ("sasl.password", "[kafka.security] sasl_password"),
];

/// Checks `[kafka.librdkafka]`, adding one problem per offending property.
pub fn check_passthrough(kafka: &KafkaSettings, problems: &mut Vec<String>) {
    for (key, value) in &kafka.librdkafka {
        let at = format!("kafka.librdkafka.\"{key}\"");
        let v = value.trim().to_ascii_lowercase();
        if let Some((_, typed)) = OWNED.iter().find(|(k, _)| k == key) {
            problems.push(format!(
                "{at} is set by {typed}; set that instead and remove this"
            ));
            continue;
        }
        let weakens = match key.as_str() {
            "acks" | "request.required.acks" => v != "all" && v != "-1",
            "enable.idempotence" => v != "true",
            "max.in.flight.requests.per.connection" | "max.in.flight" => {
                !matches!(v.parse::<u32>(), Ok(1..=5))
            }
            "retries" | "message.send.max.retries" => v == "0",
            "transactional.id" => true,
            _ => false,
        };
        if weakens {
            problems.push(format!(
                "{at} = {value:?} would weaken delivery: the bridge answers 2xx only for \
                 records Kafka acknowledged with acks=all from an idempotent producer \
                 (at most 5 requests in flight, retries on, no transactions); remove it"
            ));
        }
    }
}

/// The producer's properties. librdkafka's own record size limit is raised to fit the
/// largest body the bridge accepts plus its CloudEvents attributes (the broker's limit
/// still applies, and a refusal is an honest 503).
pub fn producer(kafka: &KafkaSettings, bootstrap: &str, max_body_bytes: usize) -> ClientConfig {
    let mut config = base(kafka, bootstrap);
    let max_record = (max_body_bytes + 64 * 1024).max(1_000_000);
    config
        .set("message.max.bytes", max_record.to_string())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", kafka.delivery_timeout_ms.to_string());
    for (key, value) in &kafka.librdkafka {
        config.set(key, value);
    }
    config
}

/// Properties for clients other than the producer (topic creation): connection and
/// security settings only, so librdkafka does not warn about producer-only properties.
pub fn admin(kafka: &KafkaSettings, bootstrap: &str) -> ClientConfig {
    let mut config = base(kafka, bootstrap);
    for (key, value) in &kafka.librdkafka {
        let shared = [
            "security.",
            "ssl.",
            "sasl.",
            "socket.",
            "broker.",
            "client.",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix));
        if shared {
            config.set(key, value);
        }
    }
    config
}

fn base(kafka: &KafkaSettings, bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "qminder-bridge");
    let sec = &kafka.security;
    config.set("security.protocol", sec.protocol.as_librdkafka());
    let paths = [
        ("ssl.ca.location", &sec.ca_file),
        ("ssl.certificate.location", &sec.cert_file),
        ("ssl.key.location", &sec.key_file),
    ];
    for (key, path) in paths {
        if let Some(path) = path {
            config.set(key, path.display().to_string());
        }
    }
    // Secrets were checked by validation; one that vanished since simply stays unset,
    // and librdkafka reports the failed authentication.
    if let Some(password) = sec.key_password.as_ref().and_then(|s| s.resolve().ok()) {
        config.set("ssl.key.password", password.expose_secret());
    }
    if let Some(mechanism) = sec.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_librdkafka());
    }
    if let Some(username) = &sec.sasl_username {
        config.set("sasl.username", username);
    }
    if let Some(password) = sec.sasl_password.as_ref().and_then(|s| s.resolve().ok()) {
        config.set("sasl.password", password.expose_secret());
    }
    config
}

/// Checks `[kafka.security]` for settings that cannot work together.
pub fn check_security(sec: &KafkaSecurity, problems: &mut Vec<String>) {
    let p = sec.protocol;
    let tls_files = sec.ca_file.is_some() || sec.cert_file.is_some() || sec.key_file.is_some();
    if tls_files && !p.uses_tls() {
        problems.push(
            "kafka.security: ca_file/cert_file/key_file need protocol = \"ssl\" or \"sasl_ssl\""
                .into(),
        );
    }
    if sec.cert_file.is_some() != sec.key_file.is_some() {
        problems.push("kafka.security: give cert_file and key_file together".into());
    }
    for (key, path) in [
        ("ca_file", &sec.ca_file),
        ("cert_file", &sec.cert_file),
        ("key_file", &sec.key_file),
    ] {
        if let Some(path) = path {
            if std::fs::metadata(path).is_err() {
                problems.push(format!(
                    "kafka.security.{key} = {} cannot be read; mount it or fix the path",
                    path.display()
                ));
            }
        }
    }
    let sasl_given =
        sec.sasl_mechanism.is_some() || sec.sasl_username.is_some() || sec.sasl_password.is_some();
    if p.uses_sasl() {
        if sec.sasl_mechanism.is_none()
            || sec.sasl_username.is_none()
            || sec.sasl_password.is_none()
        {
            problems.push(
                "kafka.security: SASL needs sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), \
                 sasl_username and sasl_password"
                    .into(),
            );
        }
    } else if sasl_given {
        problems.push(
            "kafka.security: sasl_* settings need protocol = \"sasl_plaintext\" or \"sasl_ssl\""
                .into(),
        );
    }
    for (key, secret) in [
        ("sasl_password", &sec.sasl_password),
        ("key_password", &sec.key_password),
    ] {
        if let Some(Err(e)) = secret.as_ref().map(|s| s.resolve()) {
            problems.push(format!("kafka.security.{key}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut kafka = KafkaSettings::default();
        for (k, v) in pairs {
            kafka.librdkafka.insert((*k).into(), (*v).into());
        }
        let mut problems = Vec::new();
        check_passthrough(&kafka, &mut problems);
        problems
    }

    #[test]
    fn refuses_settings_that_weaken_delivery() {
        for (k, v) in [
            ("acks", "1"),
            ("acks", "0"),
            ("request.required.acks", "1"),
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "6"),
            ("max.in.flight", "0"),
            ("retries", "0"),
            ("transactional.id", "x"),
            ("bootstrap.servers", "elsewhere:9092"),
            ("message.timeout.ms", "300000"),
            ("security.protocol", "ssl"),
            ("sasl.password", "x"),
        ] {
            assert_eq!(problems(&[(k, v)]).len(), 1, "{k}={v}");
        }
    }

    #[test]
    fn passes_harmless_and_strengthening_settings() {
        let ok = [
            ("acks", "all"),
            ("acks", "-1"),
            ("enable.idempotence", "true"),
            ("compression.type", "zstd"),
            ("linger.ms", "2"),
            ("max.in.flight.requests.per.connection", "5"),
        ];
        assert!(problems(&ok).is_empty());
    }

    #[test]
    fn producer_forces_acks_all_and_idempotence_and_ties_the_timeout() {
        let kafka = KafkaSettings {
            delivery_timeout_ms: 1234,
            ..KafkaSettings::default()
        };
        let c = producer(&kafka, "b:1", 2_000_000);
        assert_eq!(c.get("message.max.bytes"), Some("2065536"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("message.timeout.ms"), Some("1234"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
    }
}

#[cfg(test)]
mod security_tests {
    use super::*;
    use crate::config::{SaslMechanism, SecurityProtocol};
    use crate::secret::SecretSpec;

    #[test]
    fn maps_sasl_over_tls_to_librdkafka_properties_for_every_client() {
        let kafka = KafkaSettings {
            security: KafkaSecurity {
                protocol: SecurityProtocol::SaslSsl,
                sasl_mechanism: Some(SaslMechanism::ScramSha512),
                sasl_username: Some("bridge".into()),
                sasl_password: Some(SecretSpec::parse("s3cret")),
                ..KafkaSecurity::default()
            },
            ..KafkaSettings::default()
        };
        let mut problems = Vec::new();
        check_security(&kafka.security, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        for c in [producer(&kafka, "b:1", 1000), admin(&kafka, "b:1")] {
            assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!(c.get("sasl.username"), Some("bridge"));
            assert_eq!(c.get("sasl.password"), Some("s3cret"));
        }
    }

    #[test]
    fn refuses_security_settings_that_cannot_work() {
        let cases = [
            KafkaSecurity {
                protocol: SecurityProtocol::SaslSsl,
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                sasl_username: Some("u".into()),
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                ca_file: Some("/etc/hosts".into()),
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                protocol: SecurityProtocol::Ssl,
                cert_file: Some("/etc/hosts".into()),
                ..KafkaSecurity::default()
            },
            KafkaSecurity {
                protocol: SecurityProtocol::Ssl,
                ca_file: Some("/surely/not/here.pem".into()),
                ..KafkaSecurity::default()
            },
        ];
        for sec in cases {
            let mut problems = Vec::new();
            check_security(&sec, &mut problems);
            assert!(!problems.is_empty(), "{sec:?}");
        }
    }
}
