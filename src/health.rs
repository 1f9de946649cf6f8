//! Liveness and readiness.
//!
//! `GET /healthz` answers 200 while the process serves HTTP. `GET /readyz` answers 200 only
//! when the broker answered the latest metadata request (asked every
//! `kafka.health_interval_ms`, bounded by the same), the topics exist if the bridge was asked
//! to create them, and the bridge is not shutting down; 503 otherwise. Readiness never
//! gates webhook requests themselves: those get an honest answer from the delivery.
//! In spool mode, readiness follows the spool instead (writable and not full): webhooks are
//! answered from the spool whatever Kafka does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use rdkafka::ClientConfig;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::spool::Spool;

/// The bridge's view of its own readiness.
#[derive(Debug)]
pub struct Health {
    broker_reachable: AtomicBool,
    /// True once the topics exist (at once when the bridge need not create them).
    topics_ready: watch::Sender<bool>,
    stopping: AtomicBool,
    /// Wakes the probe loop at shutdown, so that it ends after its current probe.
    stop_probing: tokio::sync::Notify,
    /// In spool mode readiness follows the spool's health, not the broker's.
    spool: Option<Spool>,
    metrics: Metrics,
}

/// Topics to create before the bridge calls itself ready.
#[derive(Debug, Clone)]
pub struct TopicSetup {
    pub admin: ClientConfig,
    /// To redact credentials from librdkafka's errors before they are logged.
    pub passthrough: crate::config::Passthrough,
    pub topics: Vec<String>,
    pub partitions: i32,
    pub replication_factor: i32,
}

impl Health {
    /// `topics_ready` starts false when the bridge must create topics first.
    pub fn new(
        metrics: Metrics,
        topics_ready: watch::Sender<bool>,
        spool: Option<Spool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            broker_reachable: AtomicBool::new(false),
            topics_ready,
            stopping: AtomicBool::new(false),
            stop_probing: tokio::sync::Notify::new(),
            spool,
            metrics,
        })
    }

    pub fn is_ready(&self) -> bool {
        if let Some(spool) = &self.spool {
            return spool.is_healthy() && !self.stopping.load(Ordering::Acquire);
        }
        self.broker_reachable.load(Ordering::Acquire)
            && *self.topics_ready.borrow()
            && !self.stopping.load(Ordering::Acquire)
    }

    /// From now on, not ready (for good).
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop_probing.notify_one();
        self.publish();
    }

    fn set_broker_reachable(&self, reachable: bool) {
        let was = self.broker_reachable.swap(reachable, Ordering::AcqRel);
        if was != reachable {
            if reachable {
                tracing::info!(ready = self.is_ready(), "The Kafka broker answers.");
            } else {
                tracing::warn!(
                    ready = self.is_ready(),
                    "The Kafka broker does not answer metadata requests."
                );
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.metrics.ready.set(i64::from(self.is_ready()));
    }
}

/// Probes the broker until shutdown begins, creating topics first if asked. It ends after
/// the probe in progress, so that no Kafka client it made outlives the shutdown.
pub async fn watch(
    health: Arc<Health>,
    publisher: Publisher,
    interval: Duration,
    mut topics: Option<TopicSetup>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = health.stop_probing.notified() => return,
        }
        if health.stopping.load(Ordering::Acquire) {
            return;
        }
        if let Some(setup) = &topics {
            let outcome = crate::topics::ensure(
                &setup.admin,
                &setup.topics,
                setup.partitions,
                setup.replication_factor,
                interval.max(Duration::from_secs(5)),
            )
            .await;
            match outcome {
                Ok(outcomes) => {
                    let created = outcomes
                        .iter()
                        .filter(|(_, o)| *o == crate::topics::TopicOutcome::Created)
                        .count();
                    tracing::info!(created, total = outcomes.len(), "Topics are in place.");
                    health.topics_ready.send_replace(true);
                    topics = None;
                }
                Err(error) => {
                    let error = setup.passthrough.redact(&error.to_string());
                    tracing::warn!(%error, "Could not create topics yet; will retry.");
                }
            }
        }
        let probe = publisher.clone();
        let reachable = tokio::task::spawn_blocking(move || probe.probe(interval))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        health.set_broker_reachable(reachable);
    }
}

/// `GET /healthz`
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

/// `GET /readyz`
pub async fn readyz(health: web::Data<Arc<Health>>) -> HttpResponse {
    if health.is_ready() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "not_ready"}))
    }
}
