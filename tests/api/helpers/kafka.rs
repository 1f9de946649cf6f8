//! Reading what the bridge published, with a Kafka consumer of our own (not the bridge's
//! code), always with a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// The record's timestamp (ms since the Unix epoch), if it has one.
    pub timestamp_ms: Option<i64>,
}

impl Received {
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .map(|k| std::str::from_utf8(k).expect("UTF-8 key"))
    }

    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).expect("UTF-8 value")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("a JSON value")
    }
}

fn consumer_with(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "qminder-bridge-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("a test consumer")
}

/// Reads the record at `topic`/`partition`/`offset`, within 15 s.
pub fn read_at(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Received {
    read_at_with(bootstrap, &[], topic, partition, offset)
}

/// [`read_at`] with extra client properties (e.g. TLS).
pub fn read_at_with(
    bootstrap: &str,
    extra: &[(&str, &str)],
    topic: &str,
    partition: i32,
    offset: i64,
) -> Received {
    let consumer = consumer_with(bootstrap, extra);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("a valid partition");
    consumer.assign(&tpl).expect("assignment");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() == offset => return received(&m),
            Some(Ok(_)) | None => {}
            Some(Err(e)) => panic!("reading {topic}/{partition}@{offset}: {e}"),
        }
    }
    panic!("no record at {topic}/{partition}@{offset} within 15 s");
}

/// Reads `topic` (all partitions, from the beginning) until `done(records so far)` holds,
/// failing after `within`. (Not "until the high watermark": tansu 0.6 reports a high
/// watermark one past the *batch*, not the record, when a produce request carries several.)
pub fn read_until(
    bootstrap: &str,
    topic: &str,
    within: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    read_until_with(bootstrap, &[], topic, within, done)
}

/// [`read_until`] with extra client properties (e.g. SASL).
pub fn read_until_with(
    bootstrap: &str,
    extra: &[(&str, &str)],
    topic: &str,
    within: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let mut out = Vec::new();
    if done(&out) {
        return out;
    }
    scan_with(bootstrap, extra, topic, within, |record| {
        out.push(record.clone());
        done(&out)
    });
    out
}

/// Reads `topic` (all partitions, from the beginning) and hands each record to `take`
/// until it returns true, failing after `within`. Errors the consumer reports meanwhile (a
/// broker of a cluster that is down) are not failures by themselves: librdkafka reads from
/// the others; the last one is shown if the deadline passes.
pub fn scan(bootstrap: &str, topic: &str, within: Duration, take: impl FnMut(&Received) -> bool) {
    scan_with(bootstrap, &[], topic, within, take);
}

/// [`scan`] with extra client properties.
fn scan_with(
    bootstrap: &str,
    extra: &[(&str, &str)],
    topic: &str,
    within: Duration,
    mut take: impl FnMut(&Received) -> bool,
) {
    let consumer = consumer_with(bootstrap, extra);
    let deadline = Instant::now() + within;
    // The topic may not exist yet (a bridge in spool mode is ready before it has made its
    // topics): an empty assignment would read nothing, for good.
    let partitions = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let ids: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        if !ids.is_empty() {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: no such topic within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("a valid partition");
    }
    consumer.assign(&tpl).expect("assignment");
    let mut read = 0_usize;
    let mut last_error = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{topic}: condition not met after reading {read} records (last error: {last_error:?})"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                read += 1;
                if take(&received(&m)) {
                    return;
                }
            }
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
    }
}

/// The sum of the high watermarks of `topics` (a missing topic counts 0). Zero means
/// nothing was published. Otherwise it is a record count only when every produce request
/// carried one record: tansu 0.6 advances the watermark per batch.
pub fn count(bootstrap: &str, topics: &[String]) -> i64 {
    count_with(bootstrap, &[], topics)
}

/// [`count`] with extra client properties (e.g. TLS).
pub fn count_with(bootstrap: &str, extra: &[(&str, &str)], topics: &[String]) -> i64 {
    let consumer = consumer_with(bootstrap, extra);
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let mut total = 0;
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()))
    {
        for p in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10))
                .expect("watermarks");
            total += high - low;
        }
    }
    total
}

fn received(m: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    let mut headers = BTreeMap::new();
    if let Some(h) = m.headers() {
        for header in h.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned());
            headers.insert(header.key.to_owned(), value.unwrap_or_default());
        }
    }
    Received {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

/// Reads `topic` until it holds a CloudEvent with every id of `ids` (structured records),
/// failing after `within`.
pub async fn wait_for_ids(
    bootstrap: &str,
    topic: &str,
    ids: &std::collections::HashSet<String>,
    within: Duration,
) {
    let (b, t, wanted) = (bootstrap.to_owned(), topic.to_owned(), ids.clone());
    tokio::task::spawn_blocking(move || {
        read_until(&b, &t, within, |records| {
            let found: std::collections::HashSet<String> = records
                .iter()
                .map(|r| r.json()["id"].as_str().expect("id").to_owned())
                .collect();
            wanted.is_subset(&found)
        })
    })
    .await
    .expect("reader");
}

/// Creates `topics` (1 partition, replication 1, with topic configs `extra`) with an admin
/// client of our own, waiting for the broker's answer; callable from inside a runtime.
pub fn create_topics(bootstrap: &str, topics: &[String], extra: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            extra.iter().fold(
                NewTopic::new(t, 1, TopicReplication::Fixed(1)),
                |n, (k, v)| n.set(k, v),
            )
        })
        .collect();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let created = tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(admin.create_topics(&new, &AdminOptions::new()))
                .expect("CreateTopics");
            for result in created {
                if let Err((topic, code)) = result {
                    panic!("cannot create {topic}: {code}");
                }
            }
        });
    });
}
