//! What a webhook request may hold, before and after it is authenticated.
//!
//! Anyone who can reach the port can send a body; only Qminder can sign one. So the work
//! done for a body nobody has authenticated yet has a budget of its own, apart from what
//! verified requests use, and an attacker can exhaust only that:
//! - **A request's own allowance** ([`ALLOWANCE_BYTES`], 16 KiB): the first 16 KiB of
//!   every body are the request's own, taken from no shared budget. Qminder's events are
//!   1–2 KiB, so a genuine delivery never waits for, or competes for, room that
//!   unauthenticated clients hold. The allowance is bounded all the same: an HTTP/1.1
//!   connection reads one request at a time, so it is a term of the per-connection cost
//!   of `server.max_connections` in the memory bound. (An HTTP/2 connection, off by
//!   default, carries many streams, each with its allowance: `check-config` says the
//!   bound does not hold with `server.tls.http2` on.)
//! - **Unverified bytes beyond it** ([`ByteBudget`], `server.max_unverified_body_bytes`):
//!   the rest of a larger body is reserved here, chunk by chunk as it arrives, so a client
//!   that drips holds only what it sent. Without room it is refused at once (503
//!   `body_budget_exhausted`, connection closed): only bodies Qminder does not send can be
//!   kept out by holding this budget, and nothing ever waits for it.
//! - **The body deadline** (`server.body_timeout_ms`, at most `request_timeout_ms −
//!   kafka.delivery_timeout_ms`): Qminder sends its 1–2 KiB at once, so a body still
//!   arriving then is answered 408 and its budget freed.
//! - **Verified work** ([`Admission::verified`]): once the signature matched, the request
//!   takes one of `server.max_in_flight` slots and its body's length from
//!   `server.max_in_flight_body_bytes`, and gives back its unverified reservation; without
//!   room it is shed (503 `overloaded`). Only genuine deliveries get here.
//! - **Activity** ([`Active`]): every request past the allowlist counts until it ends,
//!   whatever stage it is in, so shutdown can wait for all of them ([`Admission::drain`]).
//!
//! Memory: docs/reliability.md ("How much memory") turns these budgets into a bound, and
//! `config/memory.rs` checks it against `server.memory_limit_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::errors::IngressError;

/// The bytes of its body every request may hold before its signature is checked without
/// taking any from `server.max_unverified_body_bytes`. Qminder's events are 1–2 KiB. A
/// term of the per-connection cost in the memory bound (docs/reliability.md).
pub const ALLOWANCE_BYTES: usize = 16 * 1024;

/// A number of bytes that may be held at once, reserved and released by [`Reservation`]s;
/// a reservation that finds no room is refused, never queued.
#[derive(Debug)]
pub struct ByteBudget {
    available: AtomicUsize,
    /// Bytes reserved now (a metric).
    in_use: IntGauge,
}

impl ByteBudget {
    pub fn new(capacity: usize, in_use: IntGauge) -> Arc<Self> {
        Arc::new(Self {
            available: AtomicUsize::new(capacity),
            in_use,
        })
    }

    /// An empty reservation, to grow.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    fn try_take(&self, n: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(n))
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.available.fetch_add(n, Ordering::AcqRel);
            self.in_use.sub(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `n` more bytes if there is room now.
    pub fn try_grow(&mut self, n: usize) -> bool {
        if self.budget.try_take(n) {
            self.bytes += n;
            self.budget.in_use.add(i64::try_from(n).unwrap_or(i64::MAX));
            true
        } else {
            false
        }
    }

    /// Holds enough for an unverified body of which `total` bytes have arrived: all but
    /// the request's [`ALLOWANCE_BYTES`]; false if the budget has no room for the rest now.
    pub fn cover(&mut self, total: usize) -> bool {
        let needed = total.saturating_sub(ALLOWANCE_BYTES);
        needed <= self.bytes || self.try_grow(needed - self.bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Counts requests being handled, at any stage, so shutdown can wait for none.
#[derive(Debug, Default)]
struct Activity {
    count: AtomicUsize,
    idle: Notify,
}

/// One request being handled; ends when dropped.
#[derive(Debug)]
pub struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A verified request's hold on the ingress: its slot and its bytes, and the
/// `requests_in_flight` gauge, all given back when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    _bytes: Reservation,
    gauge: &'a IntGauge,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The ingress's budgets. Built once by `Ingress::new`.
#[derive(Debug)]
pub struct Admission {
    unverified: Arc<ByteBudget>,
    in_flight: Semaphore,
    in_flight_bytes: Arc<ByteBudget>,
    in_flight_gauge: IntGauge,
    activity: Arc<Activity>,
    body_timeout: Duration,
}

/// The limits [`Admission`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_unverified_body_bytes: usize,
    pub max_in_flight: usize,
    pub max_in_flight_body_bytes: usize,
    pub body_timeout: Duration,
}

/// The gauges [`Admission`] keeps.
#[derive(Debug, Clone)]
pub struct Gauges {
    pub unverified_bytes: IntGauge,
    pub in_flight_bytes: IntGauge,
    pub in_flight: IntGauge,
}

impl Admission {
    pub fn new(limits: Limits, gauges: Gauges) -> Self {
        Self {
            unverified: ByteBudget::new(limits.max_unverified_body_bytes, gauges.unverified_bytes),
            in_flight: Semaphore::new(limits.max_in_flight),
            in_flight_bytes: ByteBudget::new(
                limits.max_in_flight_body_bytes,
                gauges.in_flight_bytes,
            ),
            in_flight_gauge: gauges.in_flight,
            activity: Arc::default(),
            body_timeout: limits.body_timeout,
        }
    }

    /// Counts a request as being handled until the returned value is dropped.
    pub fn enter(&self) -> Active {
        self.activity.count.fetch_add(1, Ordering::AcqRel);
        Active(Arc::clone(&self.activity))
    }

    /// How long an unverified body may take to arrive.
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    /// An empty reservation of unverified body bytes.
    pub fn unverified(&self) -> Reservation {
        self.unverified.empty()
    }

    /// A verified request's slot and `body_len` bytes of in-flight budget, or 503
    /// `overloaded` if either is taken; the unverified reservation is given back either way.
    pub fn verified(
        &self,
        body_len: usize,
        unverified: Reservation,
    ) -> Result<Slot<'_>, IngressError> {
        drop(unverified);
        let permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| IngressError::Overloaded)?;
        let mut bytes = self.in_flight_bytes.empty();
        if !bytes.try_grow(body_len) {
            return Err(IngressError::Overloaded);
        }
        self.in_flight_gauge.inc();
        Ok(Slot {
            _permit: permit,
            _bytes: bytes,
            gauge: &self.in_flight_gauge,
        })
    }

    /// Waits until no request is being handled, or `deadline`; false if some still were.
    pub async fn drain(&self, deadline: Instant) -> bool {
        loop {
            let idle = self.activity.idle.notified();
            if self.activity.count.load(Ordering::Acquire) == 0 {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || tokio::time::timeout(remaining, idle).await.is_err() {
                return self.activity.count.load(Ordering::Acquire) == 0;
            }
        }
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
