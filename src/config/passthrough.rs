//! `[kafka.librdkafka]`: librdkafka properties passed through as they are. Values of
//! properties that hold credentials (`*password*`, `*passphrase*`, `*secret*`, `*key.pem`,
//! `sasl.oauthbearer.config`) print as `[redacted]` in `check-config` and `Debug`; the
//! producer gets them unchanged. (`sasl.password` and `ssl.key.password` are refused
//! outright: `[kafka.security]` owns them.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

/// The properties, by name.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Passthrough(BTreeMap<String, String>);

const REDACTED: &str = "[redacted]";

/// Whether `key`'s value is a credential and must not be shown.
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("passphrase")
        || key.contains("secret")
        || key.ends_with("key.pem")
        || key == "sasl.oauthbearer.config"
}

impl Passthrough {
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, String> {
        self.0.iter()
    }

    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.0.insert(key, value)
    }

    /// `text` (e.g. librdkafka's error about a property) with every credential value of
    /// these properties replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (key, value) in &self.0 {
            if is_sensitive(key) && !value.is_empty() {
                text = text.replace(value.as_str(), REDACTED);
            }
        }
        text
    }

    fn shown(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(k, v)| {
            let v = if is_sensitive(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k, v)
        })
    }
}

impl<'a> IntoIterator for &'a Passthrough {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for Passthrough {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.shown())
    }
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

/// Properties that a typed key owns: passthrough must not set them.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("metadata.broker.list", "kafka.bootstrap_servers"),
    ("message.timeout.ms", "kafka.delivery_timeout_ms"),
    ("delivery.timeout.ms", "kafka.delivery_timeout_ms"),
    ("linger.ms", "kafka.linger_ms"),
    ("queue.buffering.max.ms", "kafka.linger_ms"),
    (
        "max.in.flight.requests.per.connection",
        "kafka.max_in_flight_requests",
    ),
    ("max.in.flight", "kafka.max_in_flight_requests"),
    ("statistics.interval.ms", "kafka.statistics_interval_ms"),
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
pub fn check_passthrough(passthrough: &Passthrough, problems: &mut Vec<String>) {
    for (key, value) in passthrough {
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
            "retries" | "message.send.max.retries" => v == "0",
            "transactional.id" => true,
            _ => false,
        };
        if weakens {
            problems.push(format!(
                "{at} = {value:?} would weaken delivery: the bridge answers 2xx only for \
                 records Kafka acknowledged with acks=all from an idempotent producer \
                 (retries on, no transactions); remove it"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_every_property_but_the_values_of_credentials() {
        let mut p = Passthrough::default();
        p.insert("compression.type".into(), "zstd".into());
        p.insert("sasl.oauthbearer.client.secret".into(), "s3cr3t-1".into());
        p.insert("ssl.keystore.password".into(), "s3cr3t-2".into());
        p.insert("ssl.key.pem".into(), "s3cr3t-3".into());
        p.insert(
            "sasl.oauthbearer.assertion.private.key.passphrase".into(),
            "s3cr3t-4".into(),
        );
        p.insert(
            "sasl.oauthbearer.assertion.private.key.pem".into(),
            "s3cr3t-5".into(),
        );
        let shown = format!("{p:?} {}", toml::to_string(&p).unwrap());
        assert!(shown.contains("zstd"), "{shown}");
        assert!(shown.contains("sasl.oauthbearer.client.secret"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let error = "property sasl.oauthbearer.client.secret s3cr3t-1 not supported";
        assert_eq!(
            p.redact(error),
            "property sasl.oauthbearer.client.secret [redacted] not supported"
        );
        // The producer still gets them.
        let given: Vec<_> = p.iter().map(|(_, v)| v.as_str()).collect();
        assert!(given.contains(&"s3cr3t-1"));
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut passthrough = Passthrough::default();
        for (k, v) in pairs {
            passthrough.insert((*k).into(), (*v).into());
        }
        let mut problems = Vec::new();
        check_passthrough(&passthrough, &mut problems);
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
            ("batch.num.messages", "1000"),
        ];
        assert!(problems(&ok).is_empty());
    }
}
