//! librdkafka properties for the producer, the admin client and the readiness probe.
//!
//! The producer always runs with `acks=all` and `enable.idempotence=true` (no duplicates
//! from librdkafka's own retries, per-partition order kept), and `message.timeout.ms` equal
//! to `kafka.delivery_timeout_ms`, so librdkafka stops trying a record when the bridge stops
//! waiting for it. `[kafka.librdkafka]` passes other properties through; ones that weaken
//! those guarantees, or that have a typed key of their own, are configuration errors.

use rdkafka::ClientConfig;

use secrecy::ExposeSecret;

use crate::config::KafkaSettings;

/// Requests in flight per broker connection when the bridge chooses: near, and distant.
pub const IN_FLIGHT_NEAR: u32 = 1;
pub const IN_FLIGHT_DISTANT: u32 = 5;

/// The producer's properties, for a near cluster or (`distant`) a distant one, which
/// differ only where `kafka.max_in_flight_requests` is left to the bridge.
/// librdkafka's own record size limit is raised to fit the largest body the bridge accepts
/// plus its CloudEvents attributes (the broker's limit still applies: 413 and a stub).
pub fn producer(
    kafka: &KafkaSettings,
    bootstrap: &str,
    max_body_bytes: usize,
    distant: bool,
) -> ClientConfig {
    let chosen = if distant {
        IN_FLIGHT_DISTANT
    } else {
        IN_FLIGHT_NEAR
    };
    let in_flight = kafka.max_in_flight_requests.unwrap_or(chosen);
    let mut config = base(kafka, bootstrap);
    let max_record = (max_body_bytes + 64 * 1024).max(1_000_000);
    config
        .set("message.max.bytes", max_record.to_string())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", kafka.delivery_timeout_ms.to_string())
        .set("linger.ms", kafka.linger_ms.to_string())
        .set(
            "max.in.flight.requests.per.connection",
            in_flight.to_string(),
        )
        .set(
            "statistics.interval.ms",
            kafka.statistics_interval_ms.to_string(),
        );
    // librdkafka's default lets the reconnect back-off grow to 10 s, so after a
    // cluster-wide outage the bridge stayed unable to deliver for up to 10 s more
    // (tests/api/cluster.rs); at most 1 s between attempts is still no storm. Left to
    // librdkafka when [kafka.librdkafka] sets either back-off (it refuses a maximum below
    // the minimum).
    let own_backoff = ["reconnect.backoff.ms", "reconnect.backoff.max.ms"]
        .iter()
        .any(|k| kafka.librdkafka.iter().any(|(key, _)| key == k));
    if !own_backoff {
        config.set("reconnect.backoff.max.ms", "1000");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_forces_acks_all_and_idempotence_and_ties_the_timeout() {
        let kafka = KafkaSettings {
            delivery_timeout_ms: 1234,
            ..KafkaSettings::default()
        };
        let c = producer(&kafka, "b:1", 2_000_000, false);
        assert_eq!(c.get("message.max.bytes"), Some("2065536"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("message.timeout.ms"), Some("1234"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
        assert_eq!(c.get("statistics.interval.ms"), Some("5000"));
        assert_eq!(c.get("reconnect.backoff.max.ms"), Some("1000"));
    }

    #[test]
    fn requests_in_flight_follow_the_distance_unless_the_operator_chose() {
        let mut kafka = KafkaSettings::default();
        let in_flight = |k: &KafkaSettings, distant| {
            producer(k, "b:1", 1000, distant)
                .get("max.in.flight.requests.per.connection")
                .map(str::to_owned)
        };
        assert_eq!(in_flight(&kafka, false).as_deref(), Some("1"));
        assert_eq!(in_flight(&kafka, true).as_deref(), Some("5"));
        kafka.max_in_flight_requests = Some(2);
        assert_eq!(in_flight(&kafka, false).as_deref(), Some("2"));
        assert_eq!(in_flight(&kafka, true).as_deref(), Some("2"));
    }

    #[test]
    fn a_back_off_of_the_passthrough_leaves_the_maximum_to_librdkafka() {
        let kafka = KafkaSettings {
            librdkafka: toml::from_str(r#""reconnect.backoff.ms" = "2000""#).unwrap(),
            ..KafkaSettings::default()
        };
        let c = producer(&kafka, "b:1", 1000, false);
        assert_eq!(c.get("reconnect.backoff.ms"), Some("2000"));
        assert_eq!(c.get("reconnect.backoff.max.ms"), None);
        c.create::<rdkafka::producer::BaseProducer>()
            .expect("librdkafka accepts it");
    }
}

#[cfg(test)]
mod security_tests {
    use super::*;
    use crate::config::{KafkaSecurity, SaslMechanism, SecurityProtocol};
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
        for c in [producer(&kafka, "b:1", 1000, false), admin(&kafka, "b:1")] {
            assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!(c.get("sasl.username"), Some("bridge"));
            assert_eq!(c.get("sasl.password"), Some("s3cret"));
        }
    }
}
