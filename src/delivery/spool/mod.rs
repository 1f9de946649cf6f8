//! Spool mode: answer 2xx once an event is durable on local disk, forward it to Kafka in
//! the background — so Qminder's deliveries keep succeeding through a Kafka outage.
//!
//! [`Spool`] is another implementation of the ingress's [`Deliver`] seam: it appends the
//! encoded record to the log ([`log`]: append-only, checksummed [`frame`]s, group commit,
//! fsync before the answer) and reports [`Delivered::Spooled`]. The [`forwarder`] sends
//! spooled records to Kafka through the real publisher, in order, and advances a durable
//! cursor after each ack. Spool full (`spool.max_bytes`) or a disk error is a 503, never a
//! silent drop. At-least-once: after a crash, records past the cursor are sent again.
//! The running spool holds the directory's exclusive [`lock`], which the operator's
//! `spool parked replay` respects; [`inspect`] reads a directory without changing it.

mod breaker;
pub mod cursor;
mod drain;
mod durable;
mod format;
pub mod forwarder;
pub mod frame;
mod held;
mod held_files;
pub mod inspect;
pub mod lock;
pub mod log;
mod park;
mod read;
mod recover;
pub mod report;
pub mod room;
mod scan;
mod steps;
mod watermark;
mod writer;

use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::config::SpoolSettings;
use crate::delivery::{Deliver, Delivered, DeliveryError, Pending};
use crate::metrics::Metrics;
use crate::record::Record;
use cursor::Cursor;
use forwarder::Forwarder;
use log::{Append, Limits, Shared};

/// The ingress's handle on the spool. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::SyncSender<Append>,
    shared: Arc<Shared>,
    /// Topics set aside; one whose share is full has its new webhooks refused.
    held: Arc<held::Held>,
    max_bytes: u64,
    timeout: Duration,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

/// The spool's background work; stop it on shutdown.
#[derive(Debug)]
pub struct SpoolTasks {
    stop: watch::Sender<bool>,
    /// Holds the directory's lock until it ends (also if this is dropped unstopped: the
    /// forwarder then ends after the batch in hand).
    forwarder: tokio::task::JoinHandle<()>,
}

impl Spool {
    /// Opens (recovering) the spool in `settings.dir`, starts its writer thread and its
    /// forwarder, which delivers through `kafka` once `topics_ready` is true.
    /// `spool.write_timeout_ms` bounds an append's wait (the caller passes the effective
    /// one, `Settings::spool_write_timeout_ms`); `queue` how many appends may wait
    /// for the writer (beyond it, appends are refused at once: the disk is behind).
    pub fn start(
        settings: &SpoolSettings,
        kafka: Arc<dyn Deliver>,
        topics_ready: watch::Receiver<bool>,
        metrics: &Metrics,
        queue: usize,
    ) -> std::io::Result<(Self, SpoolTasks)> {
        let lock = lock::DirLock::acquire(&settings.dir)?;
        format::check_and_record(&settings.dir)?;
        let (cursor, next, state) = recover_log(&settings.dir, metrics)?;
        let replay_below = state.next_seq();
        let shared = Arc::new(Shared {
            dir: settings.dir.clone(),
            state: std::sync::Mutex::new(state),
            committed: tokio::sync::Notify::new(),
            forwarded_to: std::sync::atomic::AtomicU64::new(next),
            checkpoints: watermark::Checkpoints::default(),
            metrics: metrics.spool.clone(),
            #[cfg(test)]
            failing_writes: std::sync::atomic::AtomicU32::new(0),
        });
        let held = open_aside(settings, &shared, metrics)?;
        // Bounded: appends that gave up waiting (503) must not pile up behind a stalled disk.
        let (requests, receiver) = mpsc::sync_channel(queue);
        writer::spawn_writer(
            Arc::clone(&shared),
            Limits {
                max_bytes: settings.max_bytes,
                segment_bytes: settings.segment_bytes,
            },
            receiver,
        )?;
        let (stop, stopped) = watch::channel(false);
        let (forwarder, drainer) = forwarding(
            settings,
            Arc::clone(&shared),
            Arc::clone(&held),
            kafka,
            topics_ready,
            metrics,
            (cursor, replay_below),
        );
        // The forwarder and the drainer own the directory's lock: it is released only once
        // both (the writers of the cursor and of the held records) have ended.
        let drainer_ready = forwarder.topics_ready.clone();
        let forwarder = tokio::spawn(async move {
            tokio::join!(
                forwarder.run(next, stopped.clone()),
                drainer.run(drainer_ready, stopped)
            );
            tracing::debug!(lock = %lock.path().display(), "Released the spool directory.");
        });
        let spool = Self {
            inner: Arc::new(Inner {
                requests,
                shared,
                held,
                max_bytes: settings.max_bytes,
                timeout: Duration::from_millis(settings.write_timeout_ms),
            }),
        };
        Ok((spool, SpoolTasks { stop, forwarder }))
    }

    /// Healthy: the last write succeeded and the spool has not run out of room.
    /// Every event this spool accepted before the returned time (ms since the Unix epoch)
    /// is in Kafka (`watermark.rs`); `slack_ms` is the longest a request may take from
    /// acceptance to the spool's commit.
    pub fn drained_through_ms(&self, slack_ms: u64) -> u64 {
        let shared = &self.inner.shared;
        let next = shared.lock().next_seq();
        let cursor = shared
            .forwarded_to
            .load(std::sync::atomic::Ordering::Acquire);
        let oldest = self
            .inner
            .held
            .oldest_seq()
            .map_or(cursor, |h| h.min(cursor));
        watermark::drained_through_ms(&shared.checkpoints, oldest, next, frame::now_ms(), slack_ms)
    }

    pub fn is_healthy(&self) -> bool {
        self.inner.shared.lock().accepts(self.inner.max_bytes)
    }
}

/// The forwarder of the log and the drainer of held topics, with what they share.
fn forwarding(
    settings: &SpoolSettings,
    shared: Arc<Shared>,
    held: Arc<held::Held>,
    kafka: Arc<dyn Deliver>,
    topics_ready: watch::Receiver<bool>,
    metrics: &Metrics,
    (cursor, replay_below): (Cursor, u64),
) -> (Forwarder, drain::Drainer) {
    let parking = park::Parking {
        dir: log::parked_dir(&settings.dir),
        metrics: metrics.clone(),
        shared: Arc::clone(&shared),
    };
    let drainer = drain::Drainer::new(
        Arc::clone(&held),
        Arc::clone(&kafka),
        parking.clone(),
        settings.forward_batch,
    );
    let forwarder = Forwarder {
        shared,
        cursor,
        deliver: kafka,
        metrics: metrics.clone(),
        batch: settings.forward_batch,
        replay_below,
        topics_ready,
        parking,
        held,
    };
    (forwarder, drainer)
}

/// Finds what the spool keeps outside its log (held and parked records, counted towards
/// `max_bytes`), and checks the filesystem has room for the spool.
fn open_aside(
    settings: &SpoolSettings,
    shared: &Arc<Shared>,
    metrics: &Metrics,
) -> std::io::Result<Arc<held::Held>> {
    let max_held = settings.max_bytes / 100 * u64::from(settings.held_topic_max_percent);
    let held = held::Held::open(
        &settings.dir,
        Arc::clone(shared),
        max_held,
        metrics.spool.clone(),
    )?;
    let used = {
        let mut state = shared.lock();
        state.parked_total(park::size_of(&log::parked_dir(&settings.dir))?);
        state.used()
    };
    shared.update_gauges();
    room::require(
        &settings.dir,
        settings.max_bytes,
        settings.segment_bytes,
        used,
    )?;
    Ok(Arc::new(held))
}

/// Recovers the log in `dir` from the durable cursor on, counting and logging what
/// recovery found; returns the cursor, its value and the log's state.
fn recover_log(
    dir: &std::path::Path,
    metrics: &Metrics,
) -> std::io::Result<(Cursor, u64, log::LogState)> {
    let cursor = Cursor::new(dir);
    let next = cursor.load()?;
    let (state, recovered) = recover::recover(dir, next)?;
    metrics.spool.torn_records.inc_by(recovered.torn);
    metrics.spool.parked.inc_by(recovered.damaged);
    tracing::info!(
        dir = %dir.display(),
        records_on_disk = recovered.records,
        to_forward = state.next_seq().saturating_sub(next),
        torn_discarded = recovered.torn,
        damaged_parked = recovered.damaged,
        "Opened the spool."
    );
    Ok((cursor, next, state))
}

impl Deliver for Spool {
    fn deliver(&self, record: &Record<'_>) -> Pending {
        if self.inner.held.refuses(record.topic) {
            // Its held records fill the topic's share: the other topics keep the rest.
            return Box::pin(std::future::ready(Err(DeliveryError::SpoolFull)));
        }
        // One time for the webhook: when it was accepted (the Kafka timestamp it is
        // forwarded with, the spool's age metrics); records made without one get now.
        let accepted_ms = match record.accepted_ms {
            0 => frame::now_ms(),
            ms => ms,
        };
        let payload = frame::encode_payload(record, accepted_ms);
        let (reply, answer) = oneshot::channel();
        let why = match self.inner.requests.try_send(Append { payload, reply }) {
            Ok(()) => None,
            Err(mpsc::TrySendError::Full(_)) => {
                Some("the spool writer is behind: the disk is slower than the requests")
            }
            Err(mpsc::TrySendError::Disconnected(_)) => Some("the spool writer has stopped"),
        };
        if let Some(why) = why {
            return Box::pin(std::future::ready(Err(DeliveryError::SpoolUnavailable(
                why.into(),
            ))));
        }
        let timeout = self.inner.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(Ok(sequence))) => Ok(Delivered::Spooled { sequence }),
                Ok(Ok(Err(error))) => Err(error),
                Ok(Err(_)) => Err(DeliveryError::SpoolUnavailable(
                    "the spool writer has stopped".into(),
                )),
                Err(_) => Err(DeliveryError::SpoolTimeout),
            }
        })
    }
}

impl SpoolTasks {
    /// Stops the forwarder after the batch in hand, waiting at most `within`. What is not
    /// forwarded stays in the spool for the next start.
    pub async fn stop(self, within: Duration) {
        let _ = self.stop.send(true);
        let mut forwarder = self.forwarder;
        if tokio::time::timeout(within, &mut forwarder).await.is_err() {
            tracing::warn!("The spool forwarder did not stop in time; the next start resumes it.");
            // Ended here, so that the directory's lock is not released under a live forwarder.
            forwarder.abort();
            let _ = forwarder.await;
        }
    }
}

#[cfg(test)]
mod tests;
