//! The delivery check: was every acknowledged webhook really published?
//!
//! Reads every topic named `<prefix>.*` — all partitions, from the beginning — with a plain
//! `rdkafka` `BaseConsumer` (not the bridge's code), takes the `CloudEvents` `id` out of each
//! structured-mode record value, and ticks off the ids the bridge acknowledged with a 2xx.
//! Stops when all are found, or when nothing new has arrived for a while (everything there
//! was has been read), or at a hard cap. Records are counted by reading them, never
//! from watermarks (tansu advances its high watermark per produce batch, not per record).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// What the check found.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Delivery {
    /// Distinct ids acknowledged with a 2xx.
    pub acknowledged: usize,
    /// Of those, found in Kafka.
    pub found: usize,
    /// Of those, not found: not in Kafka once nothing more arrived (or at the hard cap).
    pub lost: usize,
    /// True if the hard cap, not the end of the records, ended the check: then `lost` is
    /// an upper bound.
    pub capped: bool,
    /// Records read in all.
    pub records: u64,
    /// Records whose id had already been read (at-least-once redeliveries).
    pub duplicates: u64,
    /// How long the check took.
    pub seconds: f64,
}

#[derive(Deserialize)]
struct CloudEvent<'a> {
    #[serde(borrow)]
    id: &'a str,
}

/// Looks for every id of `acknowledged` in the topics `<prefix>.*` until all are found (or,
/// with `read_all`, until every record there is has been read and counted), or no record
/// has arrived for `idle` (everything there was has been read), or `cap` passes.
/// (A fixed deadline is not enough: reading is only ~12k records/s from tansu here, and a
/// spool may still be forwarding.)
///
/// # Errors
/// When the consumer cannot be created, or no metadata arrives.
pub fn check(
    bootstrap: &str,
    prefix: &str,
    acknowledged: &[[u8; 32]],
    read_all: bool,
    idle: Duration,
    cap: Duration,
) -> Result<Delivery, KafkaError> {
    let started = Instant::now();
    let mut missing: HashSet<[u8; 32]> = acknowledged.iter().copied().collect();
    let mut report = Delivery {
        acknowledged: missing.len(),
        ..Delivery::default()
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "qminder-bridge-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("log_level", "3")
        .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let dotted = format!("{prefix}.");
    for topic in metadata.topics() {
        if topic.name().starts_with(&dotted) {
            for partition in topic.partitions() {
                assignment.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    let mut seen: HashSet<[u8; 32]> = HashSet::with_capacity(missing.len());
    let deadline = started + cap;
    let mut last_record = Instant::now();
    while (read_all || !missing.is_empty()) && last_record.elapsed() < idle {
        if Instant::now() >= deadline {
            report.capped = true;
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_record = Instant::now();
        let Some(id) = message
            .ok()
            .as_ref()
            .and_then(|m| m.payload())
            .and_then(event_id)
        else {
            continue;
        };
        report.records += 1;
        if !seen.insert(id) {
            report.duplicates += 1;
        }
        missing.remove(&id);
    }
    report.lost = missing.len();
    report.found = report.acknowledged - report.lost;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The decoded `CloudEvents` `id` of a structured-mode record value.
fn event_id(value: &[u8]) -> Option<[u8; 32]> {
    let event: CloudEvent<'_> = serde_json::from_slice(value).ok()?;
    let mut id = [0u8; 32];
    hex::decode_to_slice(event.id, &mut id).ok()?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_id_out_of_a_structured_cloudevent() {
        let value = format!(
            r#"{{"specversion":"1.0","id":"{}","source":"s","type":"com.qminder.ticket_created","data":{{"id":"7"}}}}"#,
            "0f".repeat(32)
        );
        assert_eq!(event_id(value.as_bytes()), Some([0x0f; 32]));
        assert_eq!(event_id(b"not json"), None);
    }
}
