//! What is already in Kafka: every (ticket id, event type) of the rebuildable types found
//! in the bridge's own topics from a time on. Kafka is the source of truth, so this works
//! however many replicas delivered the live events, and needs no state of its own.
//!
//! Each partition is read from the offset Kafka gives for the start time up to the high
//! watermark taken before reading. The offset-for-time answer is not taken on trust
//! (tansu answers 0 for any time on its memory storage, and 0 past the last record on
//! SQLite): reading starts one record before it, and if that record is not older than the
//! start time, the partition is read from its beginning instead. An answer too low costs
//! only reading time. What the high watermark cannot be checked for: a broker that
//! reports it short (tansu's memory storage) makes records look missing; docs/testing.md.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::config::Settings;
use crate::delivery::kafka;
use crate::operator::qminder_api::Kind;
use crate::record::TYPE_PREFIX;

/// What was found.
#[derive(Debug, Default)]
pub struct Present {
    seen: HashSet<(String, Kind)>,
    /// Records read, of any type.
    pub records: u64,
    /// Partitions whose offset-for-time answer was not trusted.
    pub reread_partitions: usize,
}

impl Present {
    pub fn contains(&self, ticket_id: &str, kind: Kind) -> bool {
        self.seen.contains(&(ticket_id.to_owned(), kind))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Reading the record before the offset Kafka gave for the start time.
    Checking {
        start: i64,
    },
    Reading,
}

struct Partition {
    low: i64,
    end: i64,
    progress: Progress,
}

/// Reads `topics` (duplicates allowed) from `since_ms` on, within `timeout`; with a
/// progress bar on a terminal if `progress`.
pub fn read(
    settings: &Settings,
    topics: &[String],
    since_ms: i64,
    timeout: Duration,
    progress: bool,
) -> Result<Present, String> {
    let kafka_settings = &settings.kafka;
    let redact = |e: rdkafka::error::KafkaError| kafka_settings.librdkafka.redact(&e.to_string());
    let consumer: BaseConsumer = kafka::reader_config(kafka_settings)
        .create()
        .map_err(redact)?;
    let deadline = Instant::now() + timeout;
    let mut partitions = plan(&consumer, topics, since_ms, timeout).map_err(redact)?;
    let total = assign(&consumer, &partitions).map_err(redact)?;
    let bar = super::progress::bar(total, "reading Kafka back", progress);
    let mut present = Present::default();
    while !partitions.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "reading the topics back took longer than {} s; {} partitions unfinished",
                timeout.as_secs(),
                partitions.len()
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(redact)?;
        let id = (message.topic().to_owned(), message.partition());
        let Some(part) = partitions.get_mut(&id) else {
            continue;
        };
        let timestamp = message.timestamp().to_millis();
        if part.accept(message.offset(), timestamp, since_ms) == Accepted::Reread {
            present.reread_partitions += 1;
            let from = Offset::Offset(part.low);
            consumer.seek(&id.0, id.1, from, timeout).map_err(redact)?;
            continue;
        }
        bar.inc(1);
        present.records += 1;
        if let Some(found) = ticket_event(&message) {
            present.seen.insert(found);
        }
        if message.offset() + 1 >= part.end {
            partitions.remove(&id);
        }
    }
    bar.finish_and_clear();
    Ok(present)
}

/// What to do with a record just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    /// It counts.
    Record,
    /// The offset-for-time answer was wrong: read the partition from its beginning.
    Reread,
}

impl Partition {
    /// Takes the next record read (its offset and timestamp): while checking the
    /// offset-for-time answer, the record before it must be older than `since_ms`.
    fn accept(&mut self, offset: i64, timestamp_ms: Option<i64>, since_ms: i64) -> Accepted {
        if let Progress::Checking { start } = self.progress {
            self.progress = Progress::Reading;
            let older = timestamp_ms.is_some_and(|t| t < since_ms);
            if offset != start - 1 || !older {
                return Accepted::Reread;
            }
        }
        Accepted::Record
    }
}

/// Assigns every partition from where it is to be read; the records to read.
fn assign(
    consumer: &BaseConsumer,
    partitions: &HashMap<(String, i32), Partition>,
) -> Result<u64, rdkafka::error::KafkaError> {
    let mut assignment = TopicPartitionList::new();
    let mut total = 0;
    for ((topic, p), part) in partitions {
        let start = match part.progress {
            Progress::Checking { start } => start - 1,
            Progress::Reading => part.low,
        };
        total += u64::try_from(part.end - start).unwrap_or(0);
        assignment.add_partition_offset(topic, *p, Offset::Offset(start))?;
    }
    consumer.assign(&assignment)?;
    Ok(total)
}

/// Each non-empty partition of `topics`: its offsets and where to start.
fn plan(
    consumer: &BaseConsumer,
    topics: &[String],
    since_ms: i64,
    timeout: Duration,
) -> Result<HashMap<(String, i32), Partition>, rdkafka::error::KafkaError> {
    let unique: HashSet<&String> = topics.iter().collect();
    let mut partitions = HashMap::new();
    let mut times = TopicPartitionList::new();
    for topic in unique {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, end) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                if end > low {
                    let progress = Progress::Reading;
                    partitions.insert((topic.clone(), p.id()), Partition { low, end, progress });
                    times.add_partition_offset(topic, p.id(), Offset::Offset(since_ms))?;
                }
            }
        }
    }
    if partitions.is_empty() {
        return Ok(partitions);
    }
    for found in consumer.offsets_for_times(times, timeout)?.elements() {
        let key = (found.topic().to_owned(), found.partition());
        if let (Some(part), Offset::Offset(at)) = (partitions.get_mut(&key), found.offset())
            && at > part.low
            && at < part.end
        {
            part.progress = Progress::Checking { start: at };
        }
    }
    Ok(partitions)
}

#[derive(Deserialize)]
struct Attributes {
    #[serde(rename = "type")]
    event_type: Option<String>,
    subject: Option<String>,
}

/// The (ticket id, type) a record carries, if it is one of the rebuildable events.
fn ticket_event<M: Message>(message: &M) -> Option<(String, Kind)> {
    let header = |name: &str| {
        message.headers().and_then(|hs| {
            hs.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok().map(str::to_owned))
        })
    };
    let (event_type, subject) = match header("ce_type") {
        Some(t) => (t, header("ce_subject")),
        None => {
            let a: Attributes = serde_json::from_slice(message.payload()?).ok()?;
            (a.event_type?, a.subject)
        }
    };
    let kind = Kind::from_event_type(event_type.strip_prefix(TYPE_PREFIX)?)?;
    let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
    let ticket = subject.or_else(|| key.map(str::to_owned))?;
    Some((ticket, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checking(start: i64) -> Partition {
        Partition {
            low: 0,
            end: 100,
            progress: Progress::Checking { start },
        }
    }

    #[test]
    fn an_offset_for_time_answer_is_trusted_only_if_the_record_before_it_is_older() {
        let since = 1_000;
        let cases = [
            // (answer, offset read first, its timestamp, what follows)
            (50, 49, Some(999), Accepted::Record),
            (50, 49, Some(1_000), Accepted::Reread), // not older: records before may count
            (50, 49, None, Accepted::Reread),        // no timestamp: cannot tell
            (50, 52, Some(10), Accepted::Reread),    // not the record asked for (compacted)
        ];
        for (answer, offset, timestamp, want) in cases {
            let mut part = checking(answer);
            assert_eq!(
                part.accept(offset, timestamp, since),
                want,
                "{offset} {timestamp:?}"
            );
            // Once decided, every later record counts.
            assert_eq!(part.accept(offset + 1, Some(0), since), Accepted::Record);
        }
    }
}
