//! Every validation rule, one row each: a valid configuration, one thing made wrong, and
//! the message that must say what is wrong and how to fix it.

use super::*;
use crate::privacy::Action;

pub(super) fn valid() -> Settings {
    let mut s = Settings::default();
    s.endpoints.push(EndpointSettings {
        path: "/webhooks/qminder".into(),
        url: "https://bridge.example/webhooks/qminder".into(),
        secrets: vec![SecretSpec::parse("s3cret-of-16-bytes")],
        source: None,
        qminder: None,
        registrations: Vec::new(),
    });
    s
}

pub(super) fn problems(s: &Settings) -> Vec<String> {
    match s.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(other) => panic!("not a validation error: {other}"),
    }
}

type Rule = (&'static str, fn(&mut Settings), &'static str);

const RULES: &[Rule] = &[
    (
        "listen",
        |s| s.server.listen = "everywhere".into(),
        "server.listen = \"everywhere\" is not an address; use host:port",
    ),
    (
        "max_body_bytes 0",
        |s| s.server.max_body_bytes = 0,
        "server.max_body_bytes must be between 1 and 33554432",
    ),
    (
        "max_body_bytes huge",
        |s| s.server.max_body_bytes = 64 << 20,
        "server.max_body_bytes must be between 1 and 33554432",
    ),
    (
        "max_in_flight 0",
        |s| s.server.max_in_flight = 0,
        "server.max_in_flight must be between 1 and 1000000",
    ),
    (
        "a watch that would spin",
        |s| s.reload.watch_interval_ms = 1,
        "reload.watch_interval_ms = 1 re-reads every watched file 1000 times a second",
    ),
    (
        "client_request_timeout_ms",
        |s| s.server.client_request_timeout_ms = 0,
        "server.client_request_timeout_ms must be above 0",
    ),
    (
        "max_connections",
        |s| s.server.max_connections = 0,
        "server.max_connections must be above 0",
    ),
    (
        "allow_cidrs",
        |s| s.server.allow_cidrs = vec!["10.0.0.0/99".into()],
        "server.allow_cidrs: ",
    ),
    (
        "trusted_proxies",
        |s| s.server.trusted_proxies = vec!["proxy".into()],
        "server.trusted_proxies: ",
    ),
    (
        "tls files",
        |s| {
            s.server.tls = Some(TlsSettings {
                cert_file: "/surely/not/here.pem".into(),
                key_file: "/surely/not/here.key".into(),
                http2: false,
            })
        },
        "server.tls: ",
    ),
    (
        "max_header_bytes",
        |s| s.server.max_header_bytes = 100,
        "server.max_header_bytes must be at least 1024",
    ),
    (
        "request vs delivery timeout",
        |s| s.server.request_timeout_ms = 5_000,
        "server.request_timeout_ms (5000) must exceed kafka.delivery_timeout_ms (5000)",
    ),
    (
        "shutdown vs request timeout",
        |s| s.server.shutdown_timeout_ms = 9_000,
        "server.shutdown_timeout_ms (9000) must be at least server.request_timeout_ms (10000)",
    ),
    (
        "bootstrap_servers",
        |s| s.kafka.bootstrap_servers = " ".into(),
        "kafka.bootstrap_servers is empty",
    ),
    (
        "delivery_timeout_ms",
        |s| s.kafka.delivery_timeout_ms = 0,
        "kafka.delivery_timeout_ms must be above 0",
    ),
    (
        "linger_ms negative",
        |s| s.kafka.linger_ms = -1.0,
        "kafka.linger_ms must be between 0 and 900000",
    ),
    (
        "max_in_flight_requests 0",
        |s| s.kafka.max_in_flight_requests = Some(0),
        "kafka.max_in_flight_requests must be between 1 and 5",
    ),
    (
        "max_in_flight_requests 6",
        |s| s.kafka.max_in_flight_requests = Some(6),
        "kafka.max_in_flight_requests must be between 1 and 5",
    ),
    (
        "passthrough linger",
        |s| {
            s.kafka.librdkafka.insert("linger.ms".into(), "5".into());
        },
        "kafka.librdkafka.\"linger.ms\" is set by kafka.linger_ms",
    ),
    (
        "health_interval_ms",
        |s| s.kafka.health_interval_ms = 0,
        "kafka.health_interval_ms must be above 0",
    ),
    (
        "partitions",
        |s| s.kafka.partitions = 0,
        "kafka.partitions must be at least 1",
    ),
    (
        "replication_factor",
        |s| s.kafka.replication_factor = 0,
        "kafka.replication_factor must be at least 1",
    ),
    (
        "topic_prefix characters",
        |s| s.kafka.topic_prefix = "q minder".into(),
        "kafka.topic_prefix gives topic \"q minder.location_created\", which has characters Kafka refuses",
    ),
    (
        "unknown_topic length",
        |s| s.kafka.unknown_topic = Some("t".repeat(250)),
        "kafka.unknown_topic gives topic",
    ),
    (
        "dead_letter_topic",
        |s| s.kafka.dead_letter_topic = Some("..".into()),
        "kafka.dead_letter_topic gives topic \"..\", which is not a valid Kafka topic name",
    ),
    (
        "topics override",
        |s| {
            s.kafka.topics.insert("ticket_created".into(), "a/b".into());
        },
        "kafka.topics.ticket_created gives topic \"a/b\"",
    ),
    (
        "passthrough owned",
        |s| {
            s.kafka
                .librdkafka
                .insert("message.timeout.ms".into(), "1".into());
        },
        "kafka.librdkafka.\"message.timeout.ms\" is set by kafka.delivery_timeout_ms",
    ),
    (
        "passthrough weakening",
        |s| {
            s.kafka.librdkafka.insert("acks".into(), "1".into());
        },
        "kafka.librdkafka.\"acks\" = \"1\" would weaken delivery",
    ),
    (
        "security sasl incomplete",
        |s| s.kafka.security.protocol = SecurityProtocol::SaslSsl,
        "kafka.security: SASL needs sasl_mechanism",
    ),
    (
        "security files without tls",
        |s| s.kafka.security.ca_file = Some("/etc/hosts".into()),
        "kafka.security: ca_file/cert_file/key_file need protocol",
    ),
    (
        "no endpoints",
        |s| s.endpoints.clear(),
        "no [[endpoints]]: add one with path, url",
    ),
    (
        "endpoint path",
        |s| s.endpoints[0].path = "hook".into(),
        "endpoints[0].path = \"hook\" must be a plain path starting with /",
    ),
    (
        "endpoint path reserved",
        |s| s.endpoints[0].path = "/metrics".into(),
        "endpoints[0].path = \"/metrics\" is reserved",
    ),
    (
        "endpoint path twice",
        |s| {
            let again = s.endpoints[0].clone();
            s.endpoints.push(again);
        },
        "endpoints[1].path = \"/webhooks/qminder\" is used twice",
    ),
    (
        "endpoint url",
        |s| s.endpoints[0].url = "bridge.example/hook".into(),
        "endpoints[0].url must be the URL registered in Qminder",
    ),
    (
        "endpoint secrets empty",
        |s| s.endpoints[0].secrets.clear(),
        "endpoints[0].secrets is empty; copy the webhook's secret from Qminder",
    ),
    (
        "endpoint secret unresolvable",
        |s| {
            s.endpoints[0].secrets = vec![SecretSpec::parse("env:QMINDER_BRIDGE_TEST_SURELY_UNSET")]
        },
        "endpoints[0].secrets[0]: environment variable QMINDER_BRIDGE_TEST_SURELY_UNSET is not set",
    ),
    (
        "spool dir",
        |s| {
            s.spool.enabled = true;
            s.spool.dir = "".into();
        },
        "spool.dir is empty",
    ),
    (
        "spool segment_bytes",
        |s| {
            s.spool.enabled = true;
            s.spool.segment_bytes = 1024;
        },
        "spool.segment_bytes (1024) must be 65536 to 268435456",
    ),
    (
        "spool max_bytes",
        |s| {
            s.spool.enabled = true;
            s.spool.max_bytes = 1 << 20;
        },
        "spool.max_bytes (1048576) must be at least twice spool.segment_bytes",
    ),
    (
        "spool forward_batch",
        |s| {
            s.spool.enabled = true;
            s.spool.forward_batch = 0;
        },
        "spool.forward_batch must be above 0",
    ),
    (
        "spool segment_bytes too large",
        |s| {
            s.spool.enabled = true;
            s.spool.segment_bytes = 1 << 30;
            s.spool.max_bytes = 4 << 30;
        },
        "spool.segment_bytes (1073741824) must be 65536 to 268435456",
    ),
    (
        "spool held_topic_max_percent",
        |s| {
            s.spool.enabled = true;
            s.spool.held_topic_max_percent = 0;
        },
        "spool.held_topic_max_percent (0) must be 1 to 100",
    ),
    (
        "privacy field path",
        |s| {
            s.privacy.fields.insert("a..b".into(), Action::Drop);
        },
        "privacy.fields.\"a..b\" is not a field path",
    ),
    (
        "privacy hash without key",
        |s| {
            s.privacy.fields.insert("email".into(), Action::Hash);
        },
        "privacy.hash_key is required to hash fields",
    ),
    (
        "privacy key unresolvable",
        |s| s.privacy.hash_key = Some(SecretSpec::parse("file:/surely/not/here")),
        "privacy.hash_key: secret file /surely/not/here cannot be read",
    ),
    (
        "dedupe bounds",
        |s| {
            s.dedupe.enabled = true;
            s.dedupe.window_s = 0;
        },
        "dedupe.window_s and dedupe.max_entries must be above 0",
    ),
    (
        "reconcile without an API",
        |s| s.reconcile.enabled = true,
        "reconcile: no endpoint has an [endpoints.qminder] section",
    ),
    (
        "reconcile naming an endpoint without an API",
        |s| {
            with_api(s);
            s.reconcile.enabled = true;
            s.reconcile.endpoint = Some("/elsewhere".into());
        },
        "reconcile: endpoint \"/elsewhere\" has no [endpoints.qminder] section",
    ),
    (
        "reconcile look-back typo",
        |s| {
            with_api(s);
            s.reconcile.enabled = true;
            s.reconcile.lookback_hours = 24_000_000_000_000;
        },
        "reconcile.lookback_hours must be at most 8760",
    ),
    (
        "reconcile lag typo",
        |s| {
            with_api(s);
            s.reconcile.enabled = true;
            s.reconcile.lag_s = u64::MAX;
        },
        "reconcile.lag_s must be at most 604800",
    ),
    (
        "API rate above Qminder's",
        |s| {
            with_api(s);
            if let Some(q) = s.endpoints[0].qminder.as_mut() {
                q.max_requests_per_s = 40.0;
            }
        },
        "endpoints[0].qminder.max_requests_per_s = 40 must be above 0 and at most 5",
    ),
];

/// Gives the first endpoint an `[endpoints.qminder]` section.
fn with_api(s: &mut Settings) {
    s.endpoints[0].qminder = Some(QminderSettings {
        api_url: DEFAULT_API_URL.into(),
        api_key: SecretSpec::parse("an-api-key"),
        locations: vec![],
        request_timeout_ms: 1000,
        max_requests_per_s: 2.0,
    });
}

#[test]
fn the_valid_base_configuration_has_no_problems() {
    assert_eq!(problems(&valid()), Vec::<String>::new());
}

#[test]
fn every_rule_refuses_its_mistake_with_a_message_that_says_how_to_fix_it() {
    for (rule, break_it, message) in RULES {
        let mut s = valid();
        break_it(&mut s);
        let found = problems(&s);
        assert!(
            found.iter().any(|p| p.starts_with(message)),
            "{rule}: expected a message starting {message:?}, got {found:?}"
        );
        // One mistake, one problem; a prefix names every topic it makes, each once.
        let expected = if *rule == "topic_prefix characters" {
            11
        } else {
            1
        };
        assert_eq!(found.len(), expected, "{rule}: {found:?}");
    }
}

#[test]
fn lists_every_problem_at_once() {
    let mut s = valid();
    for i in [0, 1, 3, 4, 5] {
        (RULES[i].1)(&mut s);
    }
    assert_eq!(problems(&s).len(), 5);
}

#[test]
fn a_disabled_spool_is_not_checked() {
    let mut s = valid();
    s.spool.forward_batch = 0;
    assert!(problems(&s).is_empty());
}
