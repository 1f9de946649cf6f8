//! Replay and duplicate suppression (optional, `[dedupe]`).
//!
//! Qminder's signature has no timestamp, so a captured request verifies forever, and a
//! sender's retry is indistinguishable from a replay. With `[dedupe] enabled = true`, an
//! event whose deterministic id (SHA-256 of URL and body) was already *acknowledged* within
//! `window_s` is answered with the original acknowledgement and not published again. Only
//! acknowledged events are remembered, so a failed delivery can always be retried. Memory is
//! bounded by `max_entries` (oldest forgotten first). Two identical requests arriving at the
//! same moment may both be published: consumers still de-duplicate on the id.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::delivery::Delivered;

/// What was answered for an acknowledged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub topic: String,
    pub delivered: Delivered,
    /// Set when the body went to the dead-letter topic: a replay gets the same answer.
    pub dead_letter_reason: Option<&'static str>,
}

/// Recently acknowledged event ids.
#[derive(Debug)]
pub struct Dedupe {
    window: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<[u8; 32], (Instant, Remembered)>,
    /// Insertion order, for eviction by age and by count.
    order: VecDeque<(Instant, [u8; 32])>,
}

impl Dedupe {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window,
            max_entries,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The acknowledgement given to `id` within the window, if any.
    pub fn seen(&self, id: &str, now: Instant) -> Option<Remembered> {
        let key = key(id)?;
        let mut inner = self.lock();
        self.evict(&mut inner, now);
        inner.by_id.get(&key).map(|(_, r)| r.clone())
    }

    /// Remembers that `id` was acknowledged.
    pub fn remember(&self, id: &str, remembered: Remembered, now: Instant) {
        let Some(key) = key(id) else { return };
        let mut inner = self.lock();
        if inner.by_id.insert(key, (now, remembered)).is_none() {
            inner.order.push_back((now, key));
        }
        self.evict(&mut inner, now);
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(at, key)) = inner.order.front() {
            let expired = now.saturating_duration_since(at) > self.window;
            if !expired && inner.order.len() <= self.max_entries {
                break;
            }
            inner.order.pop_front();
            inner.by_id.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The 32 bytes behind a 64-digit hex id (half the memory of the string).
fn key(id: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        hex::encode([n; 32])
    }

    fn acked(offset: i64) -> Remembered {
        Remembered {
            topic: "t".into(),
            dead_letter_reason: None,
            delivered: Delivered::Kafka {
                partition: 0,
                offset,
            },
        }
    }

    #[test]
    fn remembers_an_acknowledged_id_for_the_window_only() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert_eq!(d.seen(&id(1), t0), None);
        d.remember(&id(1), acked(7), t0);
        assert_eq!(d.seen(&id(1), t0 + Duration::from_secs(59)), Some(acked(7)));
        assert_eq!(d.seen(&id(2), t0), None);
        assert_eq!(d.seen(&id(1), t0 + Duration::from_secs(61)), None);
        assert!(d.is_empty());
    }

    #[test]
    fn forgets_the_oldest_beyond_max_entries() {
        let d = Dedupe::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for n in 0..5 {
            d.remember(&id(n), acked(i64::from(n)), t0);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.seen(&id(0), t0), None);
        assert_eq!(d.seen(&id(4), t0), Some(acked(4)));
    }
}
