//! Is the window closed? In spool mode a replica may still hold events of the window that
//! Kafka has not yet got: they are late, not missing, and rebuilding them would publish
//! them twice (under two ids). Each replica reports how far its spool is drained on the
//! coordination topic (`delivery/spool/report.rs`); this reads the reports of the last
//! [`RECENT`] and waits until every replica that reported within [`FRESH`] is drained past
//! the window's end. A replica that stopped reporting while it held events of the window
//! (stopped, or cut off from Kafka) cannot be waited for: it is named in a warning, and its
//! events, if they arrive later, arrive twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::config::Settings;
use crate::delivery::kafka;
use crate::delivery::spool::frame::now_ms;
use crate::delivery::spool::report::KIND;

/// Reports older than this are not read.
const RECENT: Duration = Duration::from_secs(120);
/// A replica whose last report is older than this has stopped reporting.
const FRESH: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize)]
struct Report {
    kind: String,
    replica: String,
    drained_through_ms: u64,
    at_ms: u64,
}

/// Waits up to `wait` until every reporting replica is drained past `until_ms`.
pub fn wait_until_drained(
    settings: &Settings,
    topic: &str,
    until_ms: i64,
    wait: Duration,
) -> Result<(), String> {
    let until = u64::try_from(until_ms).unwrap_or(0);
    let deadline = Instant::now() + wait;
    loop {
        let latest = read_reports(settings, topic)?;
        let now = now_ms();
        let fresh = |r: &Report| now.saturating_sub(r.at_ms) <= FRESH.as_millis() as u64;
        let behind: Vec<&Report> = latest
            .values()
            .filter(|r| fresh(r) && r.drained_through_ms <= until)
            .collect();
        if behind.is_empty() {
            for r in latest
                .values()
                .filter(|r| !fresh(r) && r.drained_through_ms <= until)
            {
                tracing::warn!(
                    replica = %r.replica,
                    silent_s = now.saturating_sub(r.at_ms) / 1000,
                    drained_through_ms = r.drained_through_ms,
                    "A replica stopped reporting while its spool held events of the window; if it forwards them later, they will be in Kafka twice."
                );
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = behind.iter().map(|r| r.replica.clone()).collect();
            return Err(format!(
                "the spool of {} still holds events of the window (not yet in Kafka) after \
                 {} s; run again once it has forwarded them (spool_events, \
                 spool_oldest_age_seconds), or wait longer with --spool-wait-s",
                names.join(", "),
                wait.as_secs()
            ));
        }
        tracing::info!(
            replicas = behind.len(),
            "Waiting for spools to forward what they hold of the window."
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The latest report of each replica among the recent records of `topic`.
fn read_reports(settings: &Settings, topic: &str) -> Result<BTreeMap<String, Report>, String> {
    let k = &settings.kafka;
    let redact = |e: rdkafka::error::KafkaError| k.librdkafka.redact(&e.to_string());
    let consumer: BaseConsumer = kafka::reader_config(k).create().map_err(redact)?;
    let timeout = Duration::from_secs(10);
    let (low, end) = consumer
        .fetch_watermarks(topic, 0, timeout)
        .map_err(redact)?;
    let mut latest = BTreeMap::new();
    if end <= low {
        return Ok(latest);
    }
    // Five reports a replica in the window read, for up to 200 replicas: the tail suffices,
    // without trusting an offset-for-time answer.
    let start = low.max(end - 1_000);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(start))
        .map_err(redact)?;
    consumer.assign(&tpl).map_err(redact)?;
    let since = now_ms().saturating_sub(RECENT.as_millis() as u64);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(redact)?;
        let report = message
            .payload()
            .and_then(|p| serde_json::from_slice::<Report>(p).ok())
            .filter(|r| r.kind == KIND && r.at_ms >= since);
        if let Some(r) = report {
            let newer = latest
                .get(&r.replica)
                .is_none_or(|old: &Report| old.at_ms <= r.at_ms);
            if newer {
                latest.insert(r.replica.clone(), r);
            }
        }
        if message.offset() + 1 >= end {
            return Ok(latest);
        }
    }
    Err(format!(
        "the coordination topic {topic} could not be read within 10 s"
    ))
}
