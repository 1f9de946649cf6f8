//! Keeping under Qminder's rate limit by design, and backing off when told to anyway.
//!
//! Qminder allows 5 requests a second per API key (bursts of 40) and answers 429 beyond;
//! no `Retry-After` is promised. [`Pacer`] spaces requests evenly at the configured rate
//! (no bursts: a backfill is not in a hurry), and [`Backoff`] says how long to wait before
//! trying again after a 429, a 5xx or a broken connection.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces requests at least `1 / rate` apart, across every task that shares it.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `per_second` requests a second (above 0).
    pub fn new(per_second: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(None),
        }
    }

    /// Waits for this request's turn.
    pub async fn turn(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |at| at.max(now));
        *next = Some(at + self.interval);
        tokio::time::sleep_until(at).await;
    }
}

/// Waits between attempts of one request: what the server asked for if it said, else
/// doubling from `first` up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    attempt: u32,
}

/// The longest `Retry-After` honoured as given; longer ones are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            attempt: 0,
        }
    }

    /// The wait before the next attempt; `retry_after` is the server's, if it gave one.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .first
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        retry_after.map_or(doubled, |asked| asked.min(MAX_RETRY_AFTER))
    }
}

/// A `Retry-After` header's value in seconds (the HTTP-date form is not used by APIs like
/// this one and is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_at_the_configured_rate() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.turn().await;
        }
        // The first goes at once, the next four 250 ms apart.
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pacer_lets_the_next_request_go_at_once() {
        let pacer = Pacer::new(1.0);
        pacer.turn().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = Instant::now();
        pacer.turn().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_defers_to_the_server_within_reason() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..5).map(|_| b.next_wait(None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(
            b.next_wait(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            b.next_wait(Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_anything_else_is_ignored() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
