//! The composition root: builds the whole bridge from `Settings` on a given listener, and
//! owns its shutdown.
//!
//! Tests bind port 0 and call [`Application::build_on`]; `main` binds `server.listen`.
//! Shutdown (SIGTERM/SIGINT, or the future given to [`Application::run_until`]): readiness
//! turns 503, new webhooks get 503 `shutting_down`, requests in flight finish (each is
//! bounded by `request_timeout_ms`), actix closes the listener, then the producer is
//! flushed, all within `shutdown_timeout_ms`.
//! The HTTP server itself is built in `http_server`.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::web;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::access::AccessPolicy;
use crate::config::Settings;
use crate::dedupe::Dedupe;
use crate::embedded::EmbeddedBroker;
use crate::health::{self, Health, TopicSetup};
use crate::http_server;
use crate::ingress::{Endpoint, Ingress};
use crate::metrics::{Labels, Metrics};
use crate::privacy::Privacy;
use crate::producer_config;
use crate::publisher::{Deliver, Publisher};
use crate::routing::Router;
use crate::signature::Verifier;
use crate::spool::{Spool, SpoolTasks};

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the embedded broker did not start: {0}")]
    Embedded(String),
    /// librdkafka's message, credentials of `[kafka.librdkafka]` redacted.
    #[error("librdkafka refused the producer configuration: {0}")]
    Producer(String),
    #[error("{0}")]
    Secret(#[from] crate::secret::SecretError),
    #[error("cannot start the HTTP server: {0}")]
    Server(#[from] std::io::Error),
    #[error("cannot open the spool: {0}")]
    Spool(#[source] std::io::Error),
    #[error("server.allow_cidrs / trusted_proxies: {0}")]
    Access(String),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A built bridge, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    health: Arc<Health>,
    publisher: Publisher,
    metrics: Metrics,
    watcher: JoinHandle<()>,
    spool: Option<SpoolTasks>,
    shutdown_timeout: Duration,
    embedded: Option<EmbeddedBroker>,
    /// Shared with the HTTP workers; its `in_flight` semaphore says when none is busy.
    ingress: web::Data<Ingress>,
    max_in_flight: u32,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds `server.listen` and builds the bridge.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener =
            TcpListener::bind(&settings.server.listen).map_err(|source| StartupError::Listen {
                address: settings.server.listen.clone(),
                source,
            })?;
        Self::build_on(settings, listener).await
    }

    /// Builds the bridge on `listener`. Must run inside a Tokio runtime.
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<Self, StartupError> {
        let kafka = &settings.kafka;
        let router = Router::new(
            &kafka.topic_prefix,
            &kafka.topics,
            &kafka.unknown_topic(),
            &kafka.dead_letter_topic(),
        );
        let metrics = Metrics::new(&Labels {
            endpoints: settings.endpoints.iter().map(|e| e.path.as_str()).collect(),
            event_types: router.labels(),
            routes: route_labels(&router),
        });
        let endpoints = build_endpoints(&settings, &metrics, &router)?;

        let embedded = if kafka.is_embedded() {
            let broker = EmbeddedBroker::start(router.topics(), kafka.partitions)
                .map_err(StartupError::Embedded)?;
            tracing::warn!(
                bootstrap_servers = broker.bootstrap_servers(),
                "Started the embedded Kafka broker, for trying the bridge out: nothing persists. \
                 Read with: kcat -b {} -C -t {}.ticket_created",
                broker.bootstrap_servers(),
                kafka.topic_prefix,
            );
            Some(broker)
        } else {
            None
        };
        let bootstrap = embedded
            .as_ref()
            .map_or(kafka.bootstrap_servers.as_str(), |b| b.bootstrap_servers());

        let publisher = Publisher::new(
            producer_config::producer(kafka, bootstrap, settings.server.max_body_bytes),
            Duration::from_millis(kafka.delivery_timeout_ms),
            metrics.clone(),
        )
        .map_err(|e| StartupError::Producer(kafka.librdkafka.redact(&e.to_string())))?;
        let topics = (kafka.create_topics && embedded.is_none()).then(|| TopicSetup {
            admin: producer_config::admin(kafka, bootstrap),
            passthrough: kafka.librdkafka.clone(),
            topics: router.topics(),
            partitions: kafka.partitions,
            replication_factor: kafka.replication_factor,
        });
        let (topics_ready, topics_ready_rx) = tokio::sync::watch::channel(topics.is_none());
        let kafka_deliver: Arc<dyn Deliver> = Arc::new(publisher.clone());
        let (deliver, spool, spool_tasks) = if settings.spool.enabled {
            let (spool, tasks) = Spool::start(
                &settings.spool,
                kafka_deliver,
                topics_ready_rx,
                &metrics,
                Duration::from_millis(kafka.delivery_timeout_ms),
                settings.server.max_in_flight,
            )
            .map_err(StartupError::Spool)?;
            let deliver: Arc<dyn Deliver> = Arc::new(spool.clone());
            (deliver, Some(spool), Some(tasks))
        } else {
            (kafka_deliver, None, None)
        };
        let health = Health::new(metrics.clone(), topics_ready, spool);
        let watcher = tokio::spawn(health::watch(
            Arc::clone(&health),
            publisher.clone(),
            Duration::from_millis(kafka.health_interval_ms),
            topics,
        ));

        let forwarded = route_labels(&router)
            .into_iter()
            .map(|(label, topic)| {
                let counter = metrics.events_forwarded.with_label_values(&[label, topic]);
                (label.to_owned(), counter)
            })
            .collect();
        let ingress = web::Data::new(Ingress {
            deliver,
            router,
            metrics: metrics.clone(),
            format: kafka.record_format,
            max_body_bytes: settings.server.max_body_bytes,
            max_header_bytes: settings.server.max_header_bytes,
            // Validated: request_timeout_ms > delivery_timeout_ms.
            body_timeout: Duration::from_millis(
                settings
                    .server
                    .request_timeout_ms
                    .saturating_sub(kafka.delivery_timeout_ms)
                    .max(1),
            ),
            retry_after_s: settings.server.retry_after_s,
            in_flight: Semaphore::new(settings.server.max_in_flight),
            privacy: build_privacy(&settings)?,
            forwarded,
            stopping: std::sync::atomic::AtomicBool::new(false),
            access: AccessPolicy::new(
                cidrs(&settings.server.allow_cidrs)?,
                cidrs(&settings.server.trusted_proxies)?,
            ),
            dedupe: settings.dedupe.enabled.then(|| {
                Dedupe::new(
                    Duration::from_secs(settings.dedupe.window_s),
                    settings.dedupe.max_entries,
                )
            }),
        });
        let port = listener.local_addr()?.port();
        let tls = match &settings.server.tls {
            Some(t) => Some(crate::tls::server_config(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let server = http_server::serve(
            listener,
            &settings,
            ingress.clone(),
            endpoints,
            Arc::clone(&health),
            metrics.clone(),
            tls,
        )?;
        Ok(Self {
            port,
            server,
            health,
            publisher,
            metrics,
            watcher,
            spool: spool_tasks,
            shutdown_timeout: Duration::from_millis(settings.server.shutdown_timeout_ms),
            embedded,
            ingress,
            max_in_flight: u32::try_from(settings.server.max_in_flight).unwrap_or(u32::MAX),
        })
    }

    /// The port the bridge listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bootstrap address of the embedded broker, if one runs.
    pub fn embedded_bootstrap(&self) -> Option<&str> {
        self.embedded
            .as_ref()
            .map(EmbeddedBroker::bootstrap_servers)
    }

    /// The bridge's metrics (for tests and embedding).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(http_server::shutdown_signal()).await
    }

    /// Runs until `stop` completes, then shuts down gracefully.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let Self {
            server,
            health,
            publisher,
            watcher,
            spool,
            shutdown_timeout,
            embedded,
            ingress,
            max_in_flight,
            ..
        } = self;
        let deadline = Instant::now() + shutdown_timeout;
        let handle = server.handle();
        // The server future runs the command loop that `handle.stop` talks to: it must keep
        // being polled while we wait for the stop, so it runs as a task of its own.
        let mut server = tokio::spawn(server);
        tokio::select! {
            result = &mut server => return result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            () = stop => {}
        }
        tracing::info!(
            shutdown_timeout_ms = shutdown_timeout.as_millis(),
            "Shutting down: not ready, finishing requests in flight, then flushing Kafka."
        );
        health.begin_shutdown();
        // Refuse new webhooks (503 shutting_down, Connection: close), let every request in
        // flight finish, then stop actix. (actix's graceful stop alone was seen to drop a
        // request in flight shortly after start-up: its busy worker reported itself idle.)
        // Every webhook request holds an `in_flight` permit for its whole life, so having
        // them all back means none is left.
        ingress.begin_shutdown();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let drained =
            tokio::time::timeout(remaining, ingress.in_flight.acquire_many(max_in_flight))
                .await
                .is_ok();
        if !drained {
            tracing::warn!(
                "Requests were still in flight at the shutdown timeout; dropping them unanswered."
            );
        }
        // Stop actix within what is left of the one deadline: gracefully (idle keep-alive
        // connections, answers being written) if there is time, else at once. Its own
        // graceful timeout is the whole shutdown_timeout, so it must not be waited out twice.
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !drained
            || remaining.is_zero()
            || tokio::time::timeout(remaining, handle.stop(true))
                .await
                .is_err()
        {
            handle.stop(false).await;
        }
        server.await.map_err(std::io::Error::other)??;
        drop(ingress);
        // The probe loop ends after the probe in progress (bounded by health_interval_ms);
        // abort it only if that would overrun the deadline.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut watcher = watcher;
        if tokio::time::timeout(remaining, &mut watcher).await.is_err() {
            watcher.abort();
        }
        if let Some(spool) = spool {
            spool
                .stop(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let flushed = tokio::task::spawn_blocking(move || publisher.flush(remaining)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("Flushed the Kafka producer; stopped."),
            Ok(Err(error)) => tracing::warn!(
                %error,
                "Kafka did not take every queued record before the shutdown timeout; \
                 their requests were not answered 2xx."
            ),
            Err(error) => tracing::warn!(%error, "The final flush did not run."),
        }
        drop(embedded);
        Ok(())
    }
}

fn build_endpoints(
    settings: &Settings,
    metrics: &Metrics,
    router: &Router,
) -> Result<Vec<Arc<Endpoint>>, StartupError> {
    settings
        .endpoints
        .iter()
        .map(|e| {
            let secrets = e
                .secrets
                .iter()
                .map(|s| s.resolve())
                .collect::<Result<Vec<SecretString>, _>>()?;
            let accepted = router
                .labels()
                .into_iter()
                .map(|label| {
                    let counter = metrics.events_accepted.with_label_values(&[&e.path, label]);
                    (label.to_owned(), counter)
                })
                .collect();
            Ok(Arc::new(Endpoint {
                path: e.path.clone(),
                verifier: Verifier::new(&e.url, &secrets),
                source: e.source().to_owned(),
                accepted,
                duration: metrics.request_duration.with_label_values(&[&e.path]),
            }))
        })
        .collect()
}

fn cidrs(list: &[String]) -> Result<Vec<ipnet::IpNet>, StartupError> {
    list.iter()
        .map(|c| crate::access::parse_cidr(c).map_err(StartupError::Access))
        .collect()
}

fn build_privacy(settings: &Settings) -> Result<Option<Privacy>, StartupError> {
    let p = &settings.privacy;
    if p.fields.is_empty() {
        return Ok(None);
    }
    let key = p.hash_key.as_ref().map(|k| k.resolve()).transpose()?;
    Ok(Some(Privacy::new(&p.fields, key.as_ref())))
}

fn route_labels(router: &Router) -> Vec<(&str, &str)> {
    let mut routes: Vec<(&str, &str)> = crate::event::KNOWN_EVENT_TYPES
        .iter()
        .map(|t| router.route(t))
        .chain([router.route(""), router.dead_letter()])
        .map(|r| (r.label.as_str(), r.topic.as_str()))
        .collect();
    routes.sort_unstable();
    routes.dedup();
    routes
}
