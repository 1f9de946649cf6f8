//! Exactly one gap-filler at a time, decided by Kafka itself: every `backfill` (and, later,
//! the reconciler) joins one consumer group on a one-partition topic,
//! `<topic_prefix>.coordination`; the member that holds its partition runs, the others
//! wait. No lock of our own: a process that dies leaves the group when its session times
//! out (librdkafka's `session.timeout.ms`, 45 s here), and the next member takes over.
//!
//! The group uses librdkafka's `cooperative-sticky` assignor, so a member that joins does
//! not take the partition from the one that holds it. A thread polls the consumer while
//! the lease is held (librdkafka drops a member that does not poll within
//! `max.poll.interval.ms`) and notes when the partition is lost; publishing checks
//! [`Lease::held`] before each record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::Settings;
use crate::delivery::kafka;

/// A held lease; released when dropped (the process leaves the group at once).
#[derive(Debug)]
pub struct Lease {
    held: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    holder: Option<JoinHandle<()>>,
}

impl Lease {
    /// Waits up to `wait` for the partition of `topic`; an error says who to wait for.
    pub fn acquire(settings: &Settings, topic: &str, wait: Duration) -> Result<Self, String> {
        let kafka_settings = &settings.kafka;
        let consumer: BaseConsumer = kafka::reader_config(kafka_settings)
            .set(
                "group.id",
                format!("{}.gap-filler", kafka_settings.topic_prefix),
            )
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Kafka's default since 3.0: a broker busy with the run's own reading and
            // writing (a whole day, on tansu) answered heartbeats too late for 10 s.
            .set("session.timeout.ms", "45000")
            .set("heartbeat.interval.ms", "3000")
            .create()
            .map_err(|e| kafka_settings.librdkafka.redact(&e.to_string()))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_settings.librdkafka.redact(&e.to_string()))?;
        let held = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let holder = {
            let (held, stop, topic) = (held.clone(), stop.clone(), topic.to_owned());
            std::thread::spawn(move || hold(consumer, &topic, &held, &stop, tx))
        };
        let lease = Self {
            held,
            stop,
            holder: Some(holder),
        };
        let deadline = Instant::now() + wait;
        while !lease.held() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "another backfill (or reconciler) of this Kafka held the lease on {topic} \
                     for the {} s waited; let it finish, or wait longer with --lease-wait-s",
                    wait.as_secs()
                ));
            }
            let _ = rx.recv_timeout(Duration::from_millis(200));
        }
        Ok(lease)
    }

    /// True while this process holds the partition.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

/// Polls until told to stop, keeping `held` in step with the assignment.
fn hold(
    consumer: BaseConsumer,
    topic: &str,
    held: &AtomicBool,
    stop: &AtomicBool,
    changed: mpsc::Sender<bool>,
) {
    while !stop.load(Ordering::Acquire) {
        // The topic carries no records; polling serves the group's callbacks.
        let _ = consumer.poll(Duration::from_millis(100));
        let now = consumer
            .assignment()
            .map(|a| {
                a.elements_for_topic(topic)
                    .iter()
                    .any(|p| p.partition() == 0)
            })
            .unwrap_or(false);
        if now != held.swap(now, Ordering::AcqRel) {
            let _ = changed.send(now);
        }
    }
    consumer.unsubscribe();
}
