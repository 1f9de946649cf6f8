//! What a load run counts: answers by status, connection errors, latency histograms (HDR,
//! microseconds) and the id of every 2xx answer, per connection and then merged.
//!
//! Statuses, errors and latencies count only the measured window; acknowledged ids are kept
//! from warm-up too, since every one of them must be found in Kafka.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds, in microseconds (longer ones are clamped).
const MAX_MICROS: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Counts of one connection, or of all of them merged.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Answers in the measured window, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed exchanges (connection refused, reset, closed mid-answer) in the window.
    pub errors: u64,
    /// Latency in the window: closed loop from the send; open loop from the scheduled send.
    pub latency: Histogram<u64>,
    /// Open loop only: from the actual send to the answer (what a closed loop sees).
    pub service: Histogram<u64>,
    /// Open loop only: how late each request was sent after its scheduled time.
    pub send_lag: Histogram<u64>,
    /// Id of every 2xx answer, warm-up included.
    pub ids: Vec<[u8; 32]>,
    /// 2xx answers, warm-up included (more than `ids` when the server sends no ids).
    pub acknowledged: u64,
    /// Open loop: requests scheduled in the run but never sent (the generator gave up).
    pub unsent: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            statuses: BTreeMap::new(),
            errors: 0,
            latency: histogram(),
            service: histogram(),
            send_lag: histogram(),
            ids: Vec::new(),
            acknowledged: 0,
            unsent: 0,
        }
    }
}

impl Tally {
    /// Adds another connection's counts.
    pub fn merge(&mut self, other: Self) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        let _ = self.send_lag.add(&other.send_lag);
        self.ids.extend(other.ids);
        self.acknowledged += other.acknowledged;
        self.unsent += other.unsent;
    }

    /// 2xx answers in the measured window.
    pub fn ok_in_window(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers that were not 2xx, in the window.
    pub fn not_ok_in_window(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Records one exchange that completed, if it belongs to the window.
    pub fn answer(&mut self, status: u16, in_window: bool) {
        if in_window {
            *self.statuses.entry(status).or_default() += 1;
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Reads a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Saturating microseconds of a duration, for recording.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_counts_and_histograms() {
        let mut a = Tally::default();
        a.answer(200, true);
        a.answer(503, true);
        a.answer(200, false);
        a.latency.record(1000).expect("in range");
        let mut b = Tally::default();
        b.answer(202, true);
        b.latency.record(3000).expect("in range");
        b.ids.push([1; 32]);
        a.merge(b);
        assert_eq!(a.ok_in_window(), 2);
        assert_eq!(a.not_ok_in_window(), 1);
        assert_eq!(a.ids.len(), 1);
        let p = Percentiles::of(&a.latency);
        assert_eq!(p.count, 2);
        assert!((p.max - 3.0).abs() < 0.01, "{p}");
    }
}
