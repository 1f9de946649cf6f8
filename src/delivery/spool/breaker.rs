//! The parking breaker. Parking is for the one record Kafka refuses itself; when Kafka
//! refuses many distinct records with the same final error — clock skew and
//! `INVALID_TIMESTAMP`, a lowered `max.message.bytes` — the cause is the cluster, and
//! parking would empty the stream into `parked/` one record a second, each waiting for a
//! manual replay. So the breaker opens when, deciding whether to park a record, it sees
//! [`BREAKER_AFTER`] records refused alike in that attempt, or after `BREAKER_AFTER`
//! records in a row were parked for the same reason: nothing more is parked, the forwarder
//! backs off and retries in order, `spool_park_breaker_open` is 1 and an alert fires. Any
//! acknowledgement closes it: a record behind the refused one that Kafka takes (every
//! attempt sends the records behind) shows the refusal is that record's, and it is parked
//! — also when Kafka took them in an earlier attempt, after this record's first refusal
//! (the model test found the stream waiting for new traffic otherwise).

use prometheus::IntGauge;

use super::steps::Step;
use crate::delivery::DeliveryError;

pub use super::steps::{BREAKER_AFTER, PARK_AFTER};

pub(crate) struct Breaker {
    /// The reason the last records were parked for, and how many in a row.
    streak: Option<(String, u32)>,
    open: bool,
    gauge: IntGauge,
    /// Attempts seen so far, and the last one in which Kafka acknowledged a record.
    attempts: u64,
    last_ack: Option<u64>,
    /// The record Kafka refuses itself at the head: (sequence number, refusals in a row,
    /// the attempt of the first).
    head: Option<(u64, u32, u64)>,
}

impl Breaker {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            streak: None,
            open: false,
            gauge,
            attempts: 0,
            last_ack: None,
            head: None,
        }
    }

    /// After an attempt: an acknowledgement closes the breaker (the cluster takes records).
    pub fn saw(&mut self, steps: &[Step]) {
        self.attempts += 1;
        if !steps.iter().any(Step::acked) {
            return;
        }
        self.last_ack = Some(self.attempts);
        self.streak = None;
        if self.open {
            self.open = false;
            self.gauge.set(0);
            tracing::info!(
                "Kafka takes spooled events again; parking resumes for records it refuses itself."
            );
        }
    }

    /// Whether the head record `seq`, just refused with `error`, is to be parked: only a
    /// final refusal, the [`PARK_AFTER`]th in a row; then yes if Kafka took any record
    /// since this one was first refused (the refusal is this record's), and otherwise not
    /// while the breaker is open, nor if this attempt or the last parked records show the
    /// cluster refusing every record alike (then it opens).
    pub fn may_park(&mut self, seq: u64, steps: &[Step], error: &DeliveryError) -> bool {
        if !error.is_final() {
            return false;
        }
        let (times, since) = match self.head {
            Some((s, n, since)) if s == seq => (n + 1, since),
            _ => (1, self.attempts),
        };
        self.head = Some((seq, times, since));
        if times < PARK_AFTER {
            return false;
        }
        if self.last_ack.is_some_and(|at| at >= since) {
            return true;
        }
        if self.open {
            return false;
        }
        let why = error.to_string();
        let alike = steps
            .iter()
            .filter_map(Step::error)
            .filter(|e| e.to_string() == why)
            .count();
        let in_a_row = match &self.streak {
            Some((reason, n)) if *reason == why => *n,
            _ => 0,
        };
        if alike < BREAKER_AFTER as usize && in_a_row < BREAKER_AFTER {
            return true;
        }
        self.open = true;
        self.gauge.set(1);
        tracing::warn!(%error, refused_alike = alike, parked_in_a_row = in_a_row, "Kafka refuses every spooled event alike: the cause is the cluster, not the events. Parking stopped; retrying in order until Kafka takes one.");
        false
    }

    /// The head record was parked for `error`.
    pub fn parked(&mut self, error: &DeliveryError) {
        self.head = None;
        let why = error.to_string();
        self.streak = Some(match self.streak.take() {
            Some((reason, n)) if reason == why => (reason, n + 1),
            _ => (why, 1),
        });
    }
}
