//! The HTTP server: actix-web's `HttpServer` with the bridge's routes (the webhook
//! endpoints, `/healthz`, `/readyz`, `/metrics`), connection limits and timeouts, optional
//! TLS, and the signals that start a graceful shutdown; and stopping it. actix's own
//! signal handling is off: `startup` decides the order of shutdown (readiness first, then
//! the ingress drains, then [`stop`] here).
//!
//! Relies on actix-web's `ServerHandle::stop(graceful)`: a graceful stop waits for
//! connections up to the server's `shutdown_timeout` (seconds, whole) and cannot be cut
//! short once begun, so that timeout is capped at 2 s: by then the bridge has already
//! drained the requests in flight itself, and actix only finishes writing answers and
//! closes idle keep-alive connections.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::config::Settings;
use crate::health::{self, Health};
use crate::ingress::{self, Endpoint, Ingress};
use crate::metrics::Metrics;

/// Builds the server on `listener`; it runs when the returned future is polled.
pub fn serve(
    listener: TcpListener,
    settings: &Settings,
    ingress: web::Data<Ingress>,
    endpoints: Vec<Arc<Endpoint>>,
    health: Arc<Health>,
    metrics: Metrics,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let health = web::Data::new(health);
    let metrics = web::Data::new(metrics);
    let mut server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(ingress.clone())
            .app_data(health.clone())
            .app_data(metrics.clone())
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(render_metrics));
        for endpoint in &endpoints {
            app = app.service(
                web::resource(endpoint.path.as_str())
                    .app_data(web::Data::from(Arc::clone(endpoint)))
                    .route(web::post().to(ingress::receive))
                    .default_service(web::to(ingress::method_not_allowed)),
            );
        }
        app.default_service(web::to(ingress::not_found))
    })
    .disable_signals()
    // See the module's header: 2 s at most.
    .shutdown_timeout(
        settings
            .server
            .shutdown_timeout_ms
            .div_ceil(1000)
            .clamp(1, 2),
    )
    .client_request_timeout(Duration::from_millis(
        settings.server.client_request_timeout_ms,
    ))
    .client_disconnect_timeout(Duration::from_millis(
        settings.server.client_disconnect_timeout_ms,
    ))
    .keep_alive(Duration::from_secs(settings.server.keep_alive_s))
    .max_connections(settings.server.max_connections_per_worker);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// Stops the server within what is left until `deadline`: gracefully (idle keep-alive
/// connections, answers being written) if `graceful` and there is time, else at once; then
/// waits for its task to end. `graceful` is false when requests were still in flight at
/// the deadline: they are dropped unanswered.
pub async fn stop(
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    graceful: bool,
    deadline: Instant,
) -> std::io::Result<()> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if !graceful
        || remaining.is_zero()
        || tokio::time::timeout(remaining, handle.stop(true))
            .await
            .is_err()
    {
        handle.stop(false).await;
    }
    server.await.map_err(std::io::Error::other)?
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
