//! The generations of the bridge's Kafka producer: the current one, and how it is replaced.
//!
//! Replaced when it can no longer deliver (`publisher.rs` decides); when a reload renewed
//! its credentials ([`Producers::renew`]: only by one that connects with them, else tried
//! again with back-off; records of one key sent around the swap may be acknowledged out of
//! order, the old producer's flushed last); or once, when the brokers turn out distant and
//! `kafka.max_in_flight_requests` was left to the bridge ([`Producers::go_distant`]: a
//! round trip of [`DISTANT`] or more; the replacement keeps more requests in flight).
//!
//! A replacement is built on a thread of its own, never under a lock the HTTP workers
//! take: they keep using the current producer meanwhile, and the write lock is held only
//! for the swap. It is warmed up first (connected, metadata in hand, within
//! `delivery_timeout_ms`). A producer that breaks again at once is replaced with
//! exponential back-off ([`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`], back to the
//! first after an acknowledged record): a missing ACL must not turn every request into
//! handshakes. The old producer is flushed before it is dropped (dropping purges).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

use super::context::BridgeContext;
use super::stats::StatsSink;
use crate::metrics::Metrics;

/// The wait before the second replacement of a producer that keeps breaking.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two replacements.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A metadata round trip from which the brokers count as distant.
pub const DISTANT: Duration = Duration::from_millis(25);
/// Answers that must all be that slow before the brokers count as distant.
pub const SAMPLES: usize = 3;

/// One producer and its number.
pub(super) struct Generation {
    pub number: u64,
    pub producer: FutureProducer<BridgeContext>,
    /// Made with the distant configuration.
    distant: bool,
}

/// The producer's properties near, and distant if the bridge chooses (else `None`).
#[derive(Debug, Clone)]
pub struct Configs {
    pub near: ClientConfig,
    pub distant: Option<ClientConfig>,
}

/// Why a replacement is built.
enum Why {
    /// Generation `.0` can no longer deliver (`.1` says why).
    Broken(u64, String),
    Distant,
    /// The credentials changed ([`Producers::renew`]).
    Renewed,
}

/// When the next replacement may be built; one at a time.
#[derive(Debug, Default)]
struct Restarts {
    building: bool,
    not_before: Option<Instant>,
}

/// The current producer and everything needed to replace it.
pub(super) struct Producers {
    configs: RwLock<Configs>,
    /// Bumped by each [`Producers::renew`]; a build remembers the one it was made with.
    renewals: AtomicU64,
    /// The renewal the current producer was made with.
    renewed: AtomicU64,
    /// The wait before a renewal whose producer could not connect is tried again, in ms.
    renew_backoff_ms: AtomicU64,
    /// Where every generation's statistics go.
    stats: Option<Arc<StatsSink>>,
    current: RwLock<Arc<Generation>>,
    /// The brokers were found distant: replacements use `configs.distant`.
    distant: AtomicBool,
    restarts: Mutex<Restarts>,
    /// The wait after the next replacement, in ms.
    backoff_ms: AtomicU64,
    flush_timeout: Duration,
    metrics: Metrics,
}

impl Producers {
    /// The first producer, for a near cluster.
    pub fn new(
        configs: Configs,
        stats: Option<Arc<StatsSink>>,
        flush_timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, KafkaError> {
        let producer = configs
            .near
            .create_with_context(BridgeContext::with_stats(stats.clone()))?;
        Ok(Self {
            configs: RwLock::new(configs),
            renewals: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            renew_backoff_ms: AtomicU64::new(millis(FIRST_BACKOFF)),
            stats,
            current: RwLock::new(Arc::new(Generation {
                number: 0,
                producer,
                distant: false,
            })),
            distant: AtomicBool::new(false),
            restarts: Mutex::default(),
            backoff_ms: AtomicU64::new(millis(FIRST_BACKOFF)),
            flush_timeout,
            metrics,
        })
    }

    pub fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A record was acknowledged: the producer works, so the back-off starts over.
    pub fn delivered(&self) {
        if self.backoff_ms.load(Ordering::Relaxed) != millis(FIRST_BACKOFF) {
            self.backoff_ms
                .store(millis(FIRST_BACKOFF), Ordering::Relaxed);
        }
    }

    /// Has `broken` replaced, unless that is done or under way, or the back-off says not yet.
    pub fn replace_broken(self: &Arc<Self>, broken: &Generation, why: &KafkaError) {
        if self.current().number != broken.number {
            return;
        }
        let now = Instant::now();
        if self.start_building(|r| r.not_before.is_some_and(|t| now < t)) {
            self.spawn_build(Why::Broken(broken.number, why.to_string()));
        }
    }

    /// Decides, once, from the round trips the probe measured before the bridge was first
    /// ready, whether the brokers are distant; `true` once the producer suits them. Near
    /// at the first answer under [`DISTANT`]; distant only if [`SAMPLES`] answers were all
    /// slower (a first answer pays for the connection's handshakes, TLS and SASL). Never
    /// decided again: a swap under traffic could reorder one key's records across two
    /// producers.
    pub fn settle(self: &Arc<Self>, round_trips: &[Duration]) -> bool {
        if self.configs().distant.is_none() {
            return true;
        }
        if !self.distant.load(Ordering::Acquire) {
            let Some(fastest) = round_trips.iter().min() else {
                return false;
            };
            if *fastest < DISTANT {
                return true;
            }
            if round_trips.len() < SAMPLES {
                return false;
            }
            self.distant.store(true, Ordering::Release);
            tracing::info!(
                round_trip_ms = fastest.as_millis(),
                "The brokers are distant: replacing the producer with one that keeps more requests in flight."
            );
        }
        self.go_distant();
        self.current().distant
    }

    /// Replaces the producer with one made of `configs` (new credentials), gracefully:
    /// records keep going to the current one until the new one is connected, then the old
    /// one is flushed. A build under way is followed by this one when it ends.
    pub fn renew(self: &Arc<Self>, configs: Configs) {
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        self.renewals.fetch_add(1, Ordering::AcqRel);
        if self.start_building(|_| false) {
            self.spawn_build(Why::Renewed);
        }
    }

    fn configs(&self) -> Configs {
        self.configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Builds a distant producer unless one is current, or being built, or the last try
    /// failed too recently.
    fn go_distant(self: &Arc<Self>) {
        let now = Instant::now();
        if !self.current().distant && self.start_building(|r| r.not_before.is_some_and(|t| now < t))
        {
            self.spawn_build(Why::Distant);
        }
    }

    /// Claims the one build slot, unless taken or `not_yet` says so.
    fn start_building(&self, not_yet: impl Fn(&Restarts) -> bool) -> bool {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        if restarts.building || not_yet(&restarts) {
            return false;
        }
        restarts.building = true;
        true
    }

    fn spawn_build(self: &Arc<Self>, why: Why) {
        let producers = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("producer-build".into())
            .spawn(move || producers.build(&why));
        if let Err(error) = spawned {
            tracing::error!(%error, "Cannot start a thread to build a Kafka producer; will try again.");
            self.finished(&Why::Distant, false);
        }
    }

    /// Builds the replacement, swaps it in (the lock held only for the swap), releases
    /// the build slot, then flushes the old producer.
    fn build(self: &Arc<Self>, why: &Why) {
        let renewal = self.renewals.load(Ordering::Acquire);
        let configs = self.configs();
        let distant = self.distant.load(Ordering::Acquire) && configs.distant.is_some();
        let config = match (&configs.distant, distant) {
            (Some(config), true) => config,
            _ => &configs.near,
        };
        let created = config.create_with_context::<_, FutureProducer<BridgeContext>>(
            BridgeContext::with_stats(self.stats.clone()),
        );
        let renewing = matches!(why, Why::Renewed);
        let old = match created {
            Ok(producer) => {
                // Warm it up before it takes records: connected, with metadata. On a
                // distant cluster the handshakes alone take several round trips, which
                // the first records would otherwise spend out of their delivery timeout.
                let connected = producer.client().fetch_metadata(None, self.flush_timeout);
                if let (true, Err(error)) = (renewing, connected) {
                    // New credentials that do not work must not replace old ones that do.
                    tracing::warn!(%error, "The renewed Kafka credentials do not connect (yet); keeping the producer made with the previous ones, and trying again.");
                    None
                } else {
                    self.swap_in(producer, why, distant)
                }
            }
            Err(error) => {
                tracing::error!(%error, "Could not create a new Kafka producer; keeping the current one.");
                None
            }
        };
        if renewing && old.is_some() {
            self.renewed.store(renewal, Ordering::Release);
        }
        self.finished(why, old.is_some());
        if let Some(old) = old {
            let _ = old.producer.flush(self.flush_timeout);
        }
        if renewing && self.renewed.load(Ordering::Acquire) != renewal {
            self.retry_renewal();
        } else if self.renewals.load(Ordering::Acquire) != renewal && self.start_building(|_| false)
        {
            // Renewed while this one was built from the configuration before.
            self.spawn_build(Why::Renewed);
        }
        // The brokers were found distant while a near producer was being built.
        if self.distant.load(Ordering::Acquire) {
            self.go_distant();
        }
    }

    /// Swaps `producer` in, unless the reason is stale; the old generation, if swapped.
    fn swap_in(
        &self,
        producer: FutureProducer<BridgeContext>,
        why: &Why,
        distant: bool,
    ) -> Option<Arc<Generation>> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let stale = match why {
            Why::Broken(number, _) => current.number != *number,
            Why::Distant => current.distant,
            Why::Renewed => false,
        };
        // Stale: replaced meanwhile, the current producer is not the one that broke.
        (!stale).then(|| {
            let generation = Generation {
                number: current.number + 1,
                producer,
                distant,
            };
            std::mem::replace(&mut *current, Arc::new(generation))
        })
    }

    /// A renewal whose producer could not connect: tried again after a back-off (doubling
    /// up to [`MAX_BACKOFF`]) with the latest credentials, until one connects, while the
    /// bridge runs (this thread is then the only holder).
    fn retry_renewal(self: &Arc<Self>) {
        let wait = self.renew_backoff_ms.load(Ordering::Relaxed);
        self.renew_backoff_ms
            .store((wait * 2).min(millis(MAX_BACKOFF)), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(wait));
        let wanted = self.renewed.load(Ordering::Acquire) != self.renewals.load(Ordering::Acquire);
        if Arc::strong_count(self) > 1 && wanted && self.start_building(|_| false) {
            self.spawn_build(Why::Renewed);
        }
    }

    /// Ends a build: counts and logs it, and sets when the next may begin (a distant
    /// producer that could not be made is tried again after the back-off too).
    fn finished(&self, why: &Why, replaced: bool) {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        restarts.building = false;
        if let (Why::Renewed, true) = (why, replaced) {
            self.renew_backoff_ms
                .store(millis(FIRST_BACKOFF), Ordering::Relaxed);
            self.metrics.reload.producer_renewals.inc();
            tracing::info!(
                "Replaced the Kafka producer with one using the renewed credentials; the old one is flushed."
            );
        }
        let Why::Broken(_, error) = why else {
            if !replaced {
                restarts.not_before = Some(Instant::now() + FIRST_BACKOFF);
            }
            return;
        };
        let backoff = self.backoff_ms.load(Ordering::Relaxed);
        self.backoff_ms
            .store((backoff * 2).min(millis(MAX_BACKOFF)), Ordering::Relaxed);
        restarts.not_before = Some(Instant::now() + Duration::from_millis(backoff));
        if replaced {
            self.metrics.producer_restarts.inc();
            tracing::warn!(
                %error,
                next_not_before_ms = backoff,
                "Replaced the Kafka producer, which could no longer deliver."
            );
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
