//! The spool on its own: durability, torn tails, order, cursor, reclaim, capacity.
//! A fake publisher stands in for Kafka (the integration tests use a real broker).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::metrics::{Labels, Metrics};

/// Records what it is given; refuses everything while `down`, the ids in `fail_once` the
/// first time it sees them, and the ids in `unacceptable` always, as a broker refuses a
/// record that is too large.
#[derive(Default)]
struct FakeKafka {
    got: Mutex<Vec<String>>,
    down: AtomicBool,
    fail_once: Mutex<HashSet<String>>,
    unacceptable: Mutex<HashSet<String>>,
    /// Ids that fail (retriably) this many more times.
    failing: Mutex<std::collections::HashMap<String, u32>>,
    /// Topics whose every record fails with this error (a missing topic: a timeout on a
    /// broker that says nothing more, or `TopicRefused` on one that does).
    refusing_topics: Mutex<std::collections::HashMap<String, DeliveryError>>,
    /// Every record is refused with this final error (a cluster-wide refusal: clock skew).
    refusing_all: Mutex<Option<DeliveryError>>,
}

impl Deliver for FakeKafka {
    fn deliver(&self, record: &Record<'_>) -> Pending {
        let everything = self.refusing_all.lock().unwrap().clone();
        let topic = self
            .refusing_topics
            .lock()
            .unwrap()
            .get(record.topic)
            .cloned();
        let refusal = everything.or(topic);
        let result = if let Some(error) = refusal {
            Err(error)
        } else if self.unacceptable.lock().unwrap().contains(record.id) {
            Err(DeliveryError::TooLarge("MessageSizeTooLarge".into()))
        } else if self.down.load(Ordering::SeqCst)
            || self.fail_once.lock().unwrap().remove(record.id)
            || self.fails_again(record.id)
        {
            Err(DeliveryError::Timeout)
        } else {
            let mut got = self.got.lock().unwrap();
            got.push(record.id.to_owned());
            Ok(Delivered::Kafka {
                partition: 0,
                offset: got.len() as i64 - 1,
            })
        };
        Box::pin(std::future::ready(result))
    }
}

impl FakeKafka {
    /// Whether `id` is to fail once more (counting that failure down).
    fn fails_again(&self, id: &str) -> bool {
        match self.failing.lock().unwrap().get_mut(id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.got.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "forwarded {:?}, wanted {n}",
                self.got()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.got()
    }
}

/// Appends that may wait for the writer (the bridge passes `server.max_in_flight`).
const QUEUE: usize = 64;

fn settings(dir: &std::path::Path) -> SpoolSettings {
    SpoolSettings {
        enabled: true,
        dir: dir.to_owned(),
        max_bytes: 10 * 1024 * 1024,
        segment_bytes: 64 * 1024 * 1024,
        forward_batch: 16,
        write_timeout_ms: 5_000,
        held_topic_max_percent: 25,
    }
}

fn record(id: &str) -> Record<'_> {
    Record {
        topic: "qminder.ticket_created",
        key: Some("7"),
        value: Cow::Owned(format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(100)).into_bytes()),
        headers: vec![("content-type", Cow::Borrowed("application/json"))],
        id,
        label: "ticket_created",
        accepted_ms: 0,
    }
}

/// The spool in `dir` with the test settings, forwarding to `kafka`.
fn start(dir: &std::path::Path, kafka: &Arc<FakeKafka>, m: &Metrics) -> (Spool, SpoolTasks) {
    let kafka: Arc<dyn Deliver> = kafka.clone();
    Spool::start(&settings(dir), kafka, ready(), m, QUEUE).unwrap()
}

fn ready() -> tokio::sync::watch::Receiver<bool> {
    tokio::sync::watch::channel(true).1
}

fn metrics() -> Metrics {
    Metrics::new(&Labels::default())
}

async fn append(spool: &Spool, ids: impl IntoIterator<Item = String>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for id in ids {
        match spool.deliver(&record(&id)).await {
            Ok(Delivered::Spooled { sequence }) => seqs.push(sequence),
            other => panic!("{id}: {other:?}"),
        }
    }
    seqs
}

fn ids(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

mod basics;
mod breaker;
mod disk;
mod held;
mod model;
