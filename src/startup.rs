//! The composition root: builds the whole bridge from `Settings` on a given listener, and
//! owns its shutdown.
//!
//! Tests bind port 0 and call [`Application::build_on`]; `main` binds `server.listen`.
//! Building is a sequence of named steps, the fallible configuration first (endpoints'
//! secrets, privacy key, allowlist, TLS), then Kafka (or the embedded broker), the delivery
//! path (Kafka, or the spool in front of it), readiness and its broker probe, the ingress,
//! and the HTTP server.
//!
//! Shutdown (SIGTERM/SIGINT, or the future given to [`Application::run_until`]) happens
//! here only, in this order, all within one `shutdown_timeout_ms` counted from the signal:
//! 1. the one [`Stopping`] flag is set: `/readyz` answers 503, new webhooks get 503
//!    `shutting_down` (with `Connection: close`), the broker probe ends after its probe;
//! 2. the ingress drains: every request in flight finishes (each is bounded by
//!    `request_timeout_ms`);
//! 3. actix stops (`http_server::stop`): gracefully if all requests finished, else at once;
//! 4. the spool's forwarder stops after the batch in hand (what is left stays spooled);
//! 5. Kafka stops: the probe is awaited, the producer flushed, the embedded broker dropped;
//! 6. `[telemetry]`: the spans still queued are exported, within what is left.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::web;

use crate::config::Settings;
use crate::delivery::kafka::{self, Kafka};
use crate::delivery::spool::{Spool, SpoolTasks};
use crate::delivery::{Deliver, DeliveryError};
use crate::errors::IngressError;
use crate::health::Health;
use crate::http_server;
use crate::ingress::{Ingress, Live, Parts};
use crate::metrics::{Labels, Metrics};
use crate::operator::reconcile;
use crate::routing::Router;
use crate::shutdown::Stopping;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] kafka::StartError),
    #[error("{0}")]
    Secret(#[from] crate::secret::SecretError),
    #[error("cannot start the HTTP server: {0}")]
    Server(#[from] std::io::Error),
    #[error("cannot open the spool: {0}")]
    Spool(#[source] std::io::Error),
    #[error(transparent)]
    Live(#[from] crate::ingress::LiveError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Traces(#[from] crate::traces::TracesError),
}

/// A built bridge, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    stopping: Arc<Stopping>,
    health: Arc<Health>,
    /// Shared with the HTTP workers.
    ingress: web::Data<Ingress>,
    spool: Option<SpoolTasks>,
    /// `[reconcile]`: ends by itself once stopping (after the run in hand, if any).
    _reconciler: Option<std::thread::JoinHandle<()>>,
    kafka: Kafka,
    /// `[telemetry]`: its queued spans are exported at shutdown, last.
    traces: crate::traces::Traces,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The configuration turned into the parts the HTTP side needs, before anything starts.
struct Prepared {
    router: Router,
    metrics: Metrics,
    live: Live,
    traces: crate::traces::Traces,
    tls: Option<rustls::ServerConfig>,
    /// The listener's certificate, which a reload may replace.
    certificates: Option<Arc<crate::tls::Certificates>>,
}

impl Application {
    /// Binds `server.listen` and builds the bridge, which reloads from `file` (and the
    /// environment, as `settings` were loaded) on SIGHUP or when a file it reads changes.
    pub async fn build(settings: Settings, file: Option<PathBuf>) -> Result<Self, StartupError> {
        let listener =
            TcpListener::bind(&settings.server.listen).map_err(|source| StartupError::Listen {
                address: settings.server.listen.clone(),
                source,
            })?;
        Self::build_reloading(settings, file, listener).await
    }

    /// Builds the bridge on `listener`; it reloads from the environment (no file). Must run
    /// inside a Tokio runtime.
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<Self, StartupError> {
        Self::build_reloading(settings, None, listener).await
    }

    /// Builds the bridge on `listener`, reloading from `file` (and the environment).
    pub async fn build_reloading(
        settings: Settings,
        file: Option<PathBuf>,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        // Before the producer reads them: a change after this renews it at the next reload.
        let credentials = crate::config::reload::kafka_credentials(&settings).ok();
        let prepared = prepare(&settings)?;
        let stopping = Arc::new(Stopping::default());
        let mut kafka = Kafka::start(&settings, prepared.router.topics(), &prepared.metrics)?;
        let Delivery { deliver, spool } = delivery(&settings, &kafka, &prepared.metrics)?;
        let (spool, spool_tasks) = spool.unzip();
        let health = Health::new(
            prepared.metrics.clone(),
            Arc::clone(&stopping),
            kafka.topics_ready(),
            spool.clone(),
        );
        let metrics = prepared.metrics;
        let ingress = web::Data::new(Ingress::new(
            &settings,
            Parts {
                deliver,
                router: prepared.router,
                metrics: metrics.clone(),
                live: prepared.live,
                stopping: Arc::clone(&stopping),
                record_limit: kafka.record_limit(),
                traces: prepared.traces.clone(),
            },
        ));
        let port = listener.local_addr()?.port();
        let server = http_server::serve(
            listener,
            &settings,
            ingress.clone(),
            Arc::clone(&health),
            metrics.clone(),
            prepared.tls,
        )?;
        // Last, once nothing can fail: a failed build leaves no task behind.
        spawn_probes(&settings, &mut kafka, &health, spool, &stopping);
        let (latest, reconciler) =
            reconcile::spawn(&settings, metrics.reconcile, &stopping, &prepared.traces);
        crate::reload::Reloader {
            file,
            running: settings.clone(),
            ingress: ingress.clone(),
            certificates: prepared.certificates,
            kafka: kafka.renewal(),
            latest,
            credentials,
            metrics: metrics.reload,
            pending: None,
        }
        .spawn(Arc::clone(&stopping));
        Ok(Self {
            port,
            server,
            stopping,
            health,
            ingress,
            spool: spool_tasks,
            _reconciler: reconciler,
            kafka,
            traces: prepared.traces,
            shutdown_timeout: Duration::from_millis(settings.server.shutdown_timeout_ms),
        })
    }

    /// The port the bridge listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(http_server::shutdown_signal()).await
    }

    /// Runs until `stop` completes, then shuts down gracefully, in the order of this
    /// module's header, within `shutdown_timeout_ms` from then.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        // The server future runs the command loop that `handle.stop` talks to: it must keep
        // being polled while we wait for the stop, so it runs as a task of its own.
        let mut server = tokio::spawn(self.server);
        tokio::select! {
            result = &mut server => return result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            () = stop => {}
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        tracing::info!(
            shutdown_timeout_ms = self.shutdown_timeout.as_millis(),
            "Shutting down: not ready, finishing requests in flight, then flushing Kafka."
        );
        self.stopping.begin();
        self.health.stop();
        // (actix's graceful stop alone was seen to drop a request in flight shortly after
        // start-up: its busy worker reported itself idle. So the ingress drains first.)
        let drained = self.ingress.drain(deadline).await;
        http_server::stop(handle, server, drained, deadline).await?;
        drop(self.ingress);
        if let Some(spool) = self.spool {
            spool
                .stop(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
        self.kafka.stop(deadline).await;
        // Last: the spans still queued, with what is left of the deadline.
        self.traces.shutdown_by(deadline).await;
        Ok(())
    }
}

/// The broker probe (readiness) and, in spool mode, the report of how far the spool is
/// drained.
fn spawn_probes(
    settings: &Settings,
    kafka: &mut Kafka,
    health: &Arc<Health>,
    spool: Option<Spool>,
    stopping: &Arc<Stopping>,
) {
    let reporter = Arc::clone(health);
    kafka.spawn_probe(
        Duration::from_millis(settings.kafka.health_interval_ms),
        Arc::clone(stopping),
        move |reachable| reporter.set_broker_reachable(reachable),
    );
    if let Some(spool) = spool {
        let publisher = Arc::new(kafka.publisher().clone());
        crate::delivery::spool::report::spawn(settings, spool, publisher, stopping);
    }
}

/// Everything that only reads the configuration and can fail: done before anything starts.
fn prepare(settings: &Settings) -> Result<Prepared, StartupError> {
    let router = settings.kafka.router();
    let metrics = metrics(settings, &router);
    let live = Live::build(settings, &metrics, &router)?;
    let traces = crate::traces::Traces::start(&settings.telemetry, &metrics)?;
    let (tls, certificates) = match &settings.server.tls {
        Some(t) => {
            let certificates = Arc::new(crate::tls::Certificates::load(&t.cert_file, &t.key_file)?);
            let config = crate::tls::server_config(Arc::clone(&certificates), t.http2)?;
            (Some(config), Some(certificates))
        }
        None => (None, None),
    };
    Ok(Prepared {
        router,
        metrics,
        live,
        traces,
        tls,
        certificates,
    })
}

/// The delivery path the ingress uses.
struct Delivery {
    deliver: Arc<dyn Deliver>,
    /// In spool mode: the spool (readiness follows it) and its background tasks.
    spool: Option<(Spool, SpoolTasks)>,
}

/// The bridge's metrics, with a series at zero for every label the configuration allows.
pub(crate) fn metrics(settings: &Settings, router: &Router) -> Metrics {
    Metrics::new(&Labels {
        endpoints: settings.endpoints.iter().map(|e| e.path.as_str()).collect(),
        event_types: router.labels(),
        routes: router.routes(),
        reject_reasons: IngressError::reject_codes(),
        failure_reasons: DeliveryError::reasons(),
        rebuildable_types: crate::operator::qminder_api::Kind::ALL
            .iter()
            .map(|k| k.event_type())
            .collect(),
        registrations: settings
            .endpoints
            .iter()
            .flat_map(|e| {
                e.all_registrations()
                    .into_iter()
                    .map(|(url, _)| (e.path.as_str(), url))
            })
            .collect(),
    })
}

/// What the ingress delivers through: the Kafka producer, or the spool in front of it.
fn delivery(
    settings: &Settings,
    kafka: &Kafka,
    metrics: &Metrics,
) -> Result<Delivery, StartupError> {
    let publisher: Arc<dyn Deliver> = Arc::new(kafka.publisher().clone());
    if !settings.spool.enabled {
        return Ok(Delivery {
            deliver: publisher,
            spool: None,
        });
    }
    let spool_settings = crate::config::SpoolSettings {
        write_timeout_ms: settings.spool_write_timeout_ms(),
        ..settings.spool.clone()
    };
    let (spool, tasks) = Spool::start(
        &spool_settings,
        publisher,
        kafka.topics_ready(),
        metrics,
        settings.server.max_in_flight,
    )
    .map_err(StartupError::Spool)?;
    Ok(Delivery {
        deliver: Arc::new(spool.clone()),
        spool: Some((spool, tasks)),
    })
}
