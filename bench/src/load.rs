//! The two load shapes, over `connections` keep-alive connections.
//!
//! **Closed loop** (maximum throughput): each connection sends its next webhook as soon as
//! the previous answer arrives. Throughput is the 2xx answers completed inside the measured
//! window divided by its length; latency is from send to answer.
//!
//! **Open loop** (latency at a fixed rate, without coordinated omission): request `i` of the
//! whole run is *scheduled* at `start + i / rate`. Whichever connection is free takes the
//! next scheduled request, sleeps until its time (or sends at once if it is already late),
//! and its latency counts from the scheduled time, so a stall delays — and is charged to —
//! every request scheduled during it, as in wrk2. The time from the actual send (`service`)
//! and the lateness of sends (`send_lag`, which includes tokio's 1 ms timer granularity) are
//! kept apart so that the generator's own share is visible.
//!
//! Each body is generated and signed before its send time; warm-up answers are not counted
//! but their ids are kept for the delivery check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::events::{self, Signer, SizeRange};
use crate::http::Conn;
use crate::stats::{Tally, micros};

/// After the window ends, how long late open-loop requests may still be sent.
const OPEN_LOOP_GRACE: Duration = Duration::from_secs(10);

/// Where webhooks go and how they are signed.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The path requests are sent to, e.g. `/webhooks/qminder`.
    pub path: String,
    pub signer: Signer,
    pub sizes: SizeRange,
}

/// Closed loop or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// As fast as answers come back.
    Closed,
    /// `rate` requests per second in all, scheduled evenly.
    Open { rate: f64 },
}

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub shape: Shape,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Tokio worker threads of the generator (1: a current-thread runtime).
    pub threads: usize,
}

/// The run's instants, known once every connection is open.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Warm-up begins.
    pub start: Instant,
    /// Measurement begins.
    pub measure: Instant,
    /// Measurement (and sending) ends.
    pub end: Instant,
}

impl Window {
    /// Warm-up from 20 ms from now (time to set up), then `duration` measured.
    pub fn starting_soon(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + Duration::from_millis(20);
        Self {
            start,
            measure: start + warmup,
            end: start + warmup + duration,
        }
    }

    fn contains(&self, t: Instant) -> bool {
        t >= self.measure && t <= self.end
    }
}

struct Shared {
    target: Target,
    plan: Plan,
    window: Window,
    /// Sequence number of the next body (unique across connections).
    seq: AtomicU64,
    /// Open loop: index of the next scheduled request.
    next: AtomicU64,
    /// Open loop: scheduled requests actually sent.
    sent: AtomicU64,
}

/// Runs `plan` against `target` on a runtime of its own. `on_window` is called once every
/// connection is open, just before warm-up starts (to sample CPU at the window's edges).
///
/// # Errors
/// When the runtime cannot start or no connection can be opened.
pub fn run(
    target: &Target,
    plan: Plan,
    on_window: impl FnOnce(Window),
) -> Result<Tally, crate::http::Error> {
    let runtime = if plan.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let mut conns = Vec::with_capacity(plan.connections);
        for _ in 0..plan.connections {
            conns.push(Conn::open(target.addr).await?);
        }
        let window = Window::starting_soon(plan.warmup, plan.duration);
        on_window(window);
        let shared = Arc::new(Shared {
            target: target.clone(),
            plan,
            window,
            seq: AtomicU64::new(0),
            next: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    match shared.plan.shape {
                        Shape::Closed => closed(&shared, conn).await,
                        Shape::Open { rate } => open(&shared, conn, rate).await,
                    }
                })
            })
            .collect();
        let mut tally = Tally::default();
        for task in tasks {
            tally.merge(task.await?);
        }
        if let Shape::Open { rate } = plan.shape {
            let scheduled = ((plan.warmup + plan.duration).as_secs_f64() * rate).ceil() as u64;
            tally.unsent = scheduled.saturating_sub(shared.sent.load(Ordering::Relaxed));
        }
        Ok(tally)
    })
}

/// The next body and its signature.
fn next_webhook(shared: &Shared) -> (Bytes, String) {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let body = events::body(seq, shared.target.sizes);
    let signature = shared.target.signer.sign(body.as_bytes());
    (Bytes::from(body), signature)
}

/// Sends one webhook on `conn` (reopening it first if it broke); the answer's status, or
/// `None` when the exchange failed.
async fn exchange(
    shared: &Shared,
    conn: &mut Option<Conn>,
    tally: &mut Tally,
    webhook: (Bytes, String),
) -> Option<u16> {
    if conn.is_none() {
        *conn = Conn::open(shared.target.addr).await.ok();
    }
    let c = conn.as_mut()?;
    if let Ok(answer) = c.post(&shared.target.path, webhook.0, &webhook.1).await {
        if (200..300).contains(&answer.status) {
            tally.acknowledged += 1;
            tally.ids.extend(answer.id);
        }
        Some(answer.status)
    } else {
        *conn = None;
        None
    }
}

async fn closed(shared: &Shared, conn: Conn) -> Tally {
    let mut tally = Tally::default();
    let mut conn = Some(conn);
    let window = shared.window;
    tokio::time::sleep_until(window.start.into()).await;
    while Instant::now() < window.end {
        let webhook = next_webhook(shared);
        let sent = Instant::now();
        let status = exchange(shared, &mut conn, &mut tally, webhook).await;
        let done = Instant::now();
        let in_window = window.contains(done);
        if let Some(status) = status {
            tally.answer(status, in_window);
            if in_window {
                tally.latency.saturating_record(micros(done - sent));
            }
        } else {
            tally.errors += u64::from(in_window);
            // Do not spin on a refused connection.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tally
}

async fn open(shared: &Shared, conn: Conn, rate: f64) -> Tally {
    let mut tally = Tally::default();
    let mut conn = Some(conn);
    let window = shared.window;
    let give_up = window.end + OPEN_LOOP_GRACE;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let scheduled = window.start + Duration::from_secs_f64(i as f64 / rate);
        if scheduled >= window.end || Instant::now() >= give_up {
            break;
        }
        let webhook = next_webhook(shared);
        tokio::time::sleep_until(scheduled.into()).await;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let status = exchange(shared, &mut conn, &mut tally, webhook).await;
        let done = Instant::now();
        let in_window = scheduled >= window.measure;
        if let Some(status) = status {
            tally.answer(status, in_window);
            if in_window {
                tally.latency.saturating_record(micros(done - scheduled));
                tally.service.saturating_record(micros(done - sent));
                let lag = sent.saturating_duration_since(scheduled);
                tally.send_lag.saturating_record(micros(lag));
            }
        } else {
            tally.errors += u64::from(in_window);
        }
    }
    tally
}
