//! librdkafka properties for the producer, the admin client and the readiness probe.
//!
//! The producer always runs with `acks=all` and `enable.idempotence=true` (no duplicates
//! from librdkafka's own retries, per-partition order kept), and `message.timeout.ms` equal
//! to `kafka.delivery_timeout_ms`, so librdkafka stops trying a record when the bridge stops
//! waiting for it. `[kafka.librdkafka]` passes other properties through; ones that weaken
//! those guarantees, or that have a typed key of their own, are configuration errors.

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

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

fn base(_kafka: &KafkaSettings, bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "qminder-bridge");
    config
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
