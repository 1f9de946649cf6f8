//! What became of each record of a forwarding attempt, and what follows from it: how far
//! the cursor may move, which records Kafka took need not go out again, and which records
//! are to be held aside because Kafka refuses their topic, not the cluster.

use std::collections::HashSet;

use super::frame::Spooled;
use crate::delivery::{Delivered, DeliveryError};
use crate::metrics::Metrics;

/// Refusals of one record in a row (each after a back-off) before it is parked.
pub const PARK_AFTER: u32 = 3;

/// Records refused alike (in one attempt, or parked in a row) that show the cause is not
/// the records: the parking breaker opens (`breaker.rs`), or their topic is held.
pub const BREAKER_AFTER: u32 = 3;

/// What became of one record of an attempt.
#[derive(Debug)]
pub(crate) enum Step {
    /// Kafka took it in an earlier attempt.
    Taken,
    /// Set aside durably (held with its topic, or parked): out of the log's stream.
    SetAside,
    /// Sent in this attempt, with Kafka's answer.
    Sent(Result<Delivered, DeliveryError>),
}

impl Step {
    /// Whether the record needs nothing more from this stream.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Taken | Self::SetAside | Self::Sent(Ok(Delivered::Kafka { .. }))
        )
    }

    pub fn acked(&self) -> bool {
        matches!(self, Self::Sent(Ok(Delivered::Kafka { .. })))
    }

    pub fn error(&self) -> Option<&DeliveryError> {
        match self {
            Self::Sent(Err(error)) => Some(error),
            _ => None,
        }
    }
}

/// How many records, from the first, need nothing more: the cursor moves past them.
pub(crate) fn done_prefix(steps: &[Step]) -> usize {
    steps.iter().take_while(|s| s.is_done()).count()
}

/// Of the records from the first not done on, the ones that need not go out again: set
/// aside, or acknowledged and not behind a failed record of the same topic and key (those
/// go out again after it, so that the last copy of each key's records is in order).
pub(crate) fn taken_behind(records: &[Spooled], steps: &[Step]) -> Vec<u64> {
    let mut stuck: HashSet<(&str, Option<&str>)> = HashSet::new();
    let mut taken = Vec::new();
    for (record, step) in records.iter().zip(steps) {
        let class = (record.topic.as_str(), record.key.as_deref());
        match step {
            Step::Taken => {}
            Step::SetAside => taken.push(record.seq),
            Step::Sent(Ok(_)) if !stuck.contains(&class) => taken.push(record.seq),
            Step::Sent(_) => {
                stuck.insert(class);
            }
        }
    }
    taken
}

/// The records to hold aside with their topic after an attempt. A topic is held when one
/// of its records failed for a reason confined to it — Kafka says so, or took another
/// topic's record in the same attempt (the cluster works) while this one timed out or was
/// refused. Then, from the topic's first record of the attempt that Kafka did not take,
/// every one it did not take is held, and every one it took with the key of a held one
/// (it goes out again after it): none of the topic is left in the log to go out after the
/// held ones (the model test found a stuck earlier record overtaken by later held ones).
/// Indexes into `records`.
pub(crate) fn to_hold(records: &[Spooled], steps: &[Step]) -> Vec<usize> {
    if steps.iter().all(|s| s.error().is_none()) {
        return Vec::new(); // the common case: nothing failed, nothing to look at
    }
    let acked_topics: HashSet<&str> = records
        .iter()
        .zip(steps)
        .filter(|(_, s)| s.acked())
        .map(|(r, _)| r.topic.as_str())
        .collect();
    let confined = |record: &Spooled, error: &DeliveryError| {
        error.is_topic_confined()
            || (matches!(error, DeliveryError::Timeout | DeliveryError::Refused(_))
                && acked_topics.iter().any(|t| *t != record.topic))
    };
    let mut held_topics: HashSet<&str> = records
        .iter()
        .zip(steps)
        .filter(|(r, s)| s.error().is_some_and(|e| !e.is_final() && confined(r, e)))
        .map(|(r, _)| r.topic.as_str())
        .collect();
    held_topics.extend(refused_alike(records, steps, &acked_topics));
    let mut keys: HashSet<(&str, Option<&str>)> = HashSet::new();
    let mut hold = Vec::new();
    for (i, (record, step)) in records.iter().zip(steps).enumerate() {
        if !held_topics.contains(record.topic.as_str()) {
            continue;
        }
        let class = (record.topic.as_str(), record.key.as_deref());
        let held = match step {
            Step::Sent(Err(_)) => true,
            Step::Sent(Ok(_)) => keys.contains(&class),
            Step::Taken | Step::SetAside => false,
        };
        if held {
            keys.insert(class);
            hold.push(i);
        }
    }
    hold
}

/// Topics of which Kafka refused [`BREAKER_AFTER`] records with the same final error in
/// this attempt while taking another topic's record: a limit or rule of the topic (a
/// lowered `max.message.bytes`), not of the records, so the topic is held, not parked.
fn refused_alike<'a>(
    records: &'a [Spooled],
    steps: &[Step],
    acked_topics: &HashSet<&str>,
) -> Vec<&'a str> {
    let mut alike: std::collections::HashMap<(&str, String), u32> = Default::default();
    for (record, step) in records.iter().zip(steps) {
        if let Some(error) = step.error().filter(|e| e.is_final()) {
            *alike
                .entry((record.topic.as_str(), error.to_string()))
                .or_default() += 1;
        }
    }
    alike
        .into_iter()
        .filter(|((topic, _), n)| *n >= BREAKER_AFTER && acked_topics.iter().any(|t| t != topic))
        .map(|((topic, _), _)| topic)
        .collect()
}

/// Counts records Kafka acknowledged (those numbered below `replay_below` were in the
/// spool at start-up: replayed too).
pub(super) fn count_forwarded(metrics: &Metrics, records: &[&Spooled], replay_below: u64) {
    for record in records {
        metrics
            .events_forwarded
            .with_label_values(&[&record.label, &record.topic])
            .inc();
        metrics.spool.forwarded.inc();
        if record.seq < replay_below {
            metrics.spool.replayed.inc();
        }
    }
}

/// Counts what an attempt's answers were: each acknowledged record forwarded, each
/// failure by reason.
pub(super) fn account(metrics: &Metrics, records: &[Spooled], steps: &[Step], replay_below: u64) {
    let mut sent = Vec::new();
    for (record, step) in records.iter().zip(steps) {
        match step {
            Step::Sent(Ok(Delivered::Kafka { .. })) => sent.push(record),
            Step::Sent(Err(error)) => {
                let reason = error.reason();
                metrics
                    .spool
                    .forward_failures
                    .with_label_values(&[reason])
                    .inc();
            }
            _ => {}
        }
    }
    count_forwarded(metrics, &sent, replay_below);
}

/// What one attempt at a batch leaves the forwarder to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forwarded {
    /// Everything was taken, held or parked, or the cursor moved: read on at once.
    Moved,
    /// A record failed and stays first in line: back off, then try it again.
    Retry,
}
