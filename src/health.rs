//! Liveness and readiness.
//!
//! `GET /healthz` answers 200 while the process serves HTTP. `GET /readyz` answers 200 only
//! when the brokers count as reachable (the probe in `delivery/kafka/probe.rs` asks for
//! metadata every `kafka.health_interval_ms`, bounded by the same, and says "unreachable"
//! only after 3 failed probes in a row with no record acknowledged meanwhile), the topics
//! exist if the bridge was asked to create them, and the bridge is not shutting down; 503
//! otherwise. Readiness never
//! gates webhook requests themselves: those get an honest answer from the delivery.
//! In spool mode, readiness follows the spool instead (writable and not full): webhooks are
//! answered from the spool whatever Kafka does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};
use tokio::sync::watch;

use crate::delivery::spool::Spool;
use crate::metrics::Metrics;
use crate::shutdown::Stopping;

/// The bridge's view of its own readiness.
#[derive(Debug)]
pub struct Health {
    broker_reachable: AtomicBool,
    /// True once the topics exist (at once when the bridge need not create them).
    topics_ready: watch::Receiver<bool>,
    /// The bridge's one shutdown flag: once set, not ready for good.
    stopping: Arc<Stopping>,
    /// In spool mode readiness follows the spool's health, not the broker's.
    spool: Option<Spool>,
    metrics: Metrics,
}

impl Health {
    /// `topics_ready` starts false when the bridge must create topics first; the broker
    /// counts as unreachable until the first probe says otherwise.
    pub fn new(
        metrics: Metrics,
        stopping: Arc<Stopping>,
        topics_ready: watch::Receiver<bool>,
        spool: Option<Spool>,
    ) -> Arc<Self> {
        let health = Arc::new(Self {
            broker_reachable: AtomicBool::new(false),
            topics_ready,
            stopping,
            spool,
            metrics,
        });
        health.publish();
        health
    }

    pub fn is_ready(&self) -> bool {
        if let Some(spool) = &self.spool {
            return spool.is_healthy() && !self.stopping.is_set();
        }
        self.broker_reachable.load(Ordering::Acquire)
            && *self.topics_ready.borrow()
            && !self.stopping.is_set()
    }

    /// Shutdown has begun ([`Stopping::begin`]): publish the not-ready gauge at once.
    pub fn stop(&self) {
        self.publish();
    }

    /// What the latest broker probe found (`delivery/kafka/probe.rs`).
    pub fn set_broker_reachable(&self, reachable: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn health(topics_ready: bool) -> (Arc<Health>, Arc<Stopping>, watch::Sender<bool>) {
        let stopping = Arc::new(Stopping::default());
        let (topics, ready_rx) = watch::channel(topics_ready);
        let metrics = Metrics::new(&crate::metrics::Labels::default());
        let health = Health::new(metrics, Arc::clone(&stopping), ready_rx, None);
        (health, stopping, topics)
    }

    fn gauge(health: &Health) -> i64 {
        health.metrics.ready.get()
    }

    #[test]
    fn is_not_ready_until_the_broker_answers_and_follows_it() {
        let (health, _stopping, _topics) = health(true);
        assert!(!health.is_ready());
        assert_eq!(gauge(&health), 0);
        health.set_broker_reachable(true);
        assert!(health.is_ready());
        assert_eq!(gauge(&health), 1);
        health.set_broker_reachable(false);
        assert!(!health.is_ready());
        assert_eq!(gauge(&health), 0);
    }

    #[test]
    fn waits_for_the_topics_it_must_create() {
        let (health, _stopping, topics) = health(false);
        health.set_broker_reachable(true);
        assert!(!health.is_ready());
        topics.send_replace(true);
        assert!(health.is_ready());
    }

    #[test]
    fn is_not_ready_for_good_once_shutdown_begins() {
        let (health, stopping, _topics) = health(true);
        health.set_broker_reachable(true);
        stopping.begin();
        health.stop();
        assert!(!health.is_ready());
        assert_eq!(gauge(&health), 0);
        health.set_broker_reachable(true);
        assert!(!health.is_ready());
    }

    #[actix_web::test]
    async fn answers_readyz_with_200_or_503_and_healthz_always_200() {
        let (health, _stopping, _topics) = health(true);
        let data = web::Data::new(Arc::clone(&health));
        assert_eq!(readyz(data.clone()).await.status().as_u16(), 503);
        health.set_broker_reachable(true);
        assert_eq!(readyz(data).await.status().as_u16(), 200);
        assert_eq!(healthz().await.status().as_u16(), 200);
    }
}
