//! The HTTP server: actix-web's `App` with the bridge's routes (the webhook endpoints,
//! `/healthz`, `/readyz`, `/metrics`), served by actix-server and actix-http's services
//! with the connection limits and timeouts of `[server]`, plain or TLS; and stopping it.
//! actix's own signal handling is off: `startup` decides the order of shutdown (readiness
//! first, then the ingress drains, then [`stop`] here).
//!
//! Built on actix-server directly rather than actix-web's `HttpServer`, because that one
//! always offers HTTP/2 over TLS (it puts `h2` first in ALPN), with the h2 crate's default
//! limits, which nothing lowers (`tls.rs`). Here TLS is HTTP/1.1 only (`H1Service`)
//! unless `[server.tls] http2` asks for both (`HttpService`); plain is HTTP/1.1 only, so
//! cleartext h2c is never spoken. The services are composed here rather than with
//! actix-http's `tcp()`/`rustls_0_23()` helpers (the same steps: the TLS acceptor with its
//! default 3 s handshake timeout, the peer's address, the protocol from ALPN) so that each
//! connection's plaintext stream is watched for the refusals actix-http answers itself
//! (`connection_end`).
//!
//! Relies on actix-server's `ServerHandle::stop(graceful)`: a graceful stop waits for open
//! connections (idle keep-alive ones too) up to the server's `shutdown_timeout` (whole
//! seconds) and cannot be cut short once begun. So that timeout is [`GRACE`], and [`stop`]
//! begins a graceful stop only when at least that much is left before the deadline, else
//! stops at once: the bridge never outlasts `shutdown_timeout_ms`. By then the bridge has
//! drained the requests in flight itself; actix only finishes writing answers and closes
//! idle keep-alive connections.

use std::future::ready;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Protocol, Request};
use actix_service::{
    Service, ServiceFactory, ServiceFactoryExt, apply_fn_factory, fn_service, map_config,
};
use actix_tls::accept::TlsError;
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::dev::{AppConfig, Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpResponse, web};
use prometheus::IntCounter;

use crate::config::Settings;
use crate::connection_end::{self, ConnectionEnd, Refusal, Watch, Watched};
use crate::connection_limit::{Admission, ConnectionLimit};
use crate::health::{self, Health};
use crate::ingress::{self, Ingress};
use crate::metrics::{CONNECTION_PER_ADDRESS_LIMIT, Metrics};

/// How long actix's own graceful stop may take (its `shutdown_timeout`).
const GRACE: Duration = Duration::from_secs(1);

/// Everything the routes need, cloned into each worker.
#[derive(Clone)]
struct Shared {
    ingress: web::Data<Ingress>,
    health: web::Data<Arc<Health>>,
    metrics: web::Data<Metrics>,
}

/// The bridge's routes on `app`.
fn routes<T>(app: App<T>, shared: &Shared) -> App<T>
where
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        >,
{
    app.app_data(shared.ingress.clone())
        .app_data(shared.health.clone())
        .app_data(shared.metrics.clone())
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(render_metrics))
        // The endpoints are looked up per request: a reload may change them.
        .default_service(web::to(ingress::dispatch))
}

/// What every connection passes: the per-address limit as it is accepted
/// (`connection_limit.rs`), and at its end the count of the refusals actix-http makes
/// itself (`connection_end`), one counter each.
struct Gate {
    limit: Arc<ConnectionLimit>,
    refused: [IntCounter; Refusal::ALL.len()],
    /// How long a connection may go without a request (`connection_end::stall_after`).
    stall_after: Duration,
}

impl Gate {
    fn new(settings: &Settings, shared: &Shared) -> Self {
        let metrics = &shared.metrics.connections_refused;
        let trusted = shared.ingress.clone();
        Self {
            limit: ConnectionLimit::new(
                settings.server.max_connections_per_address,
                Box::new(move |ip| trusted.is_trusted_proxy(ip)),
                metrics.with_label_values(&[CONNECTION_PER_ADDRESS_LIMIT]),
            ),
            refused: Refusal::ALL.map(|r| metrics.with_label_values(&[r.reason()])),
            stall_after: connection_end::stall_after(
                Duration::from_millis(settings.server.request_timeout_ms),
                Duration::from_secs(settings.server.keep_alive_s),
                Duration::from_millis(settings.server.client_request_timeout_ms),
            ),
        }
    }

    /// Counts the refusal, if any, that ended `watch`'s connection with `result`.
    fn record<E: ConnectionEnd>(&self, watch: &Watch, result: &Result<(), E>) {
        match (watch.refusal(result), result) {
            (Some(refusal), _) => {
                self.refused[refusal.index()].inc();
                let error = result.as_ref().err().map(tracing::field::display);
                tracing::debug!(reason = refusal.reason(), error, "Refused a connection.");
            }
            (None, Err(e)) => tracing::debug!(error = %e, "A connection ended with an error."),
            (None, Ok(())) => {}
        }
    }
}

/// TLS connections accepted with `config`, each plaintext stream watched
/// (`connection_end`), with the peer's address.
fn accept_tls(
    config: rustls::ServerConfig,
) -> impl ServiceFactory<
    TcpStream,
    Config = (),
    Response = (Watched<TlsStream<TcpStream>>, Option<SocketAddr>),
    Error = TlsError<std::io::Error, DispatchError>,
    InitError = (),
> {
    Acceptor::new(config)
        .map_err(TlsError::into_service_error)
        .map(|io: TlsStream<TcpStream>| {
            let peer = io.get_ref().0.peer_addr().ok();
            (connection_end::watched(io), peer)
        })
}

/// The protocol ALPN chose for `io` (`tls.rs` offers h2 only when configured to).
fn protocol(io: &Watched<TlsStream<TcpStream>>) -> Protocol {
    match io.get_ref().get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    }
}

/// `app`, marking each request's connection as having served one (`connection_end`).
fn marking<S>(
    app: S,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = S::Response,
    Error = S::Error,
    InitError = S::InitError,
>
where
    S: ServiceFactory<Request, Config = ()>,
{
    apply_fn_factory(app, |request: Request, app: &S::Service| {
        connection_end::request_arrived();
        app.call(request)
    })
}

/// `factory`'s connections, each admitted by `gate`'s limit first: one refused is
/// dropped, which closes it, before anything is read from it. How each admitted one ended
/// is counted by `gate`.
fn limited<F>(
    factory: F,
    gate: Arc<Gate>,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = F::Error, InitError = F::InitError>
where
    F: ServiceFactory<TcpStream, Config = (), Response = ()>,
    F::Error: ConnectionEnd,
{
    apply_fn_factory(factory, move |io: TcpStream, service: &F::Service| {
        let admission = gate.limit.admit(io.peer_addr().ok().map(|a| a.ip()));
        let watch = Watch::new();
        let served = match admission {
            Admission::Admitted(_) => Some(watch.during(|| service.call(io))),
            Admission::Refused => None,
        };
        let gate = Arc::clone(&gate);
        async move {
            let _held = admission;
            let Some(served) = served else { return Ok(()) };
            // Closed for a stall (`None`): dropped, which is a clean end the watch explains.
            let result = watch
                .serve(served, gate.stall_after)
                .await
                .unwrap_or(Ok(()));
            gate.record(&watch, &result);
            result
        }
    })
}

/// Builds the server on `listener`; it runs when the returned future is polled.
pub fn serve(
    listener: TcpListener,
    settings: &Settings,
    ingress: web::Data<Ingress>,
    health: Arc<Health>,
    metrics: Metrics,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let shared = Shared {
        ingress,
        health: web::Data::new(health),
        metrics: web::Data::new(metrics),
    };
    let server = &settings.server;
    let keep_alive = KeepAlive::Timeout(Duration::from_secs(server.keep_alive_s));
    let head_timeout = Duration::from_millis(server.client_request_timeout_ms);
    let disconnect_timeout = Duration::from_millis(server.client_disconnect_timeout_ms);
    let http2 = settings.server.tls.as_ref().is_some_and(|t| t.http2);
    let builder = actix_server::Server::build()
        .workers(settings.workers())
        .max_concurrent_connections(settings.connections_per_worker())
        .shutdown_timeout(GRACE.as_secs())
        .disable_signals();
    // One service per kind of listener; the service types differ, so each has its arm.
    macro_rules! service {
        () => {
            HttpService::build()
                .keep_alive(keep_alive)
                .client_request_timeout(head_timeout)
                .client_disconnect_timeout(disconnect_timeout)
        };
    }
    let gate = Arc::new(Gate::new(settings, &shared));
    let app = move || {
        marking(map_config(routes(App::new(), &shared), |()| {
            AppConfig::default()
        }))
    };
    let builder = match tls {
        None => builder.listen("qminder-bridge", listener, move || {
            let plain = fn_service(|io: TcpStream| {
                let peer = io.peer_addr().ok();
                ready(Ok::<_, DispatchError>((connection_end::watched(io), peer)))
            });
            limited(plain.and_then(service!().h1(app())), Arc::clone(&gate))
        })?,
        Some(tls) if http2 => builder.listen("qminder-bridge-tls", listener, move || {
            let both = service!().finish(app()).map_err(TlsError::Service);
            let accepted = accept_tls(tls.clone()).map(|(io, peer)| {
                let proto = protocol(&io);
                (io, proto, peer)
            });
            limited(accepted.and_then(both), Arc::clone(&gate))
        })?,
        Some(tls) => builder.listen("qminder-bridge-tls", listener, move || {
            let h1 = service!().h1(app()).map_err(TlsError::Service);
            limited(accept_tls(tls.clone()).and_then(h1), Arc::clone(&gate))
        })?,
    };
    Ok(builder.run())
}

/// Stops the server within what is left until `deadline`: gracefully (idle keep-alive
/// connections, answers being written) if `graceful` and at least [`GRACE`] is left, else
/// at once; then waits for its task to end. `graceful` is false when requests were still
/// in flight at the deadline: they are dropped unanswered.
pub async fn stop(
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    graceful: bool,
    deadline: Instant,
) -> std::io::Result<()> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    // Bounded: whatever actix does, shutdown goes on to flush Kafka by the deadline.
    let stopped = tokio::time::timeout(remaining, async {
        handle.stop(graceful && remaining >= GRACE).await;
        server.await.map_err(std::io::Error::other)?
    })
    .await;
    stopped.unwrap_or_else(|_| {
        tracing::warn!(
            "The HTTP server did not stop by the shutdown deadline; flushing Kafka anyway."
        );
        Ok(())
    })
}

async fn render_metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Received SIGINT."),
        () = terminate => tracing::info!("Received SIGTERM."),
    }
}
