//! A simulator of Qminder's REST API, written from its OpenAPI document
//! (tests/fixtures/qminder-openapi.json), serving a scripted account.
//!
//! What it does that the document says: ticket search with `location`, `line`, `status`,
//! `caller`, `minCreated`/`maxCreated`, `minCalled`/`maxCalled` (ISO 8601 or Unix seconds),
//! `limit` (1–20000) and `order`; ticket count; locations; webhook create and delete; the
//! key in `X-Qminder-REST-API-Key`. What it does that the document leaves open, chosen as
//! the strictest reading: time bounds are exclusive ("after", "before"); a search answers at
//! most 10,000 tickets whatever the limit (Qminder's SDK says so); 401 for a wrong key and
//! 429 beyond 5 requests a second (bursts of 40) with `X-Ratelimit-Remaining` and no
//! `Retry-After`; errors in the shapes the document's examples show. Tests can script
//! faults for the next requests and read the log of every request it answered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};

mod account;
mod routes;

pub use account::{SimTicket, account};
use routes::route;

/// What the simulator answers before its own work, once each, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429, with `Retry-After: N` if given.
    RateLimited(Option<u64>),
    /// 500 with an error body.
    ServerError,
    /// The request is carried out, then answered 500: an answer lost on the way.
    LostAnswer,
}

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub status: u16,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) key: String,
    pub(super) tickets: Vec<SimTicket>,
    pub(super) faults: VecDeque<Fault>,
    pub(super) log: Vec<Logged>,
    pub(super) bucket: (f64, Instant),
    pub(super) webhooks: Vec<(String, String)>,
    /// Webhook ids as numbers (as Qminder's JavaScript SDK types them), not the document's
    /// UUID strings ([`QminderSim::numeric_webhook_ids`]).
    pub(super) numeric_ids: bool,
}

/// The simulator, serving on 127.0.0.1 until dropped.
pub struct QminderSim {
    pub url: String,
    pub key: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

/// The most tickets one search answers.
pub const SEARCH_CAP: usize = 10_000;

impl QminderSim {
    /// Starts a simulator holding `tickets`, answering the key `key`.
    pub async fn start(key: &str, tickets: Vec<SimTicket>) -> Self {
        Self::start_with(key, tickets, None).await
    }

    /// The same over HTTPS with `cert_file`/`key_file` (PEM), as Qminder's SDK requires.
    pub async fn start_tls(
        key: &str,
        tickets: Vec<SimTicket>,
        cert: &std::path::Path,
        pem_key: &std::path::Path,
    ) -> Self {
        let certificates = qminder_bridge::tls::Certificates::load(cert, pem_key).expect("a pair");
        let tls = qminder_bridge::tls::server_config(std::sync::Arc::new(certificates), false)
            .expect("a TLS config");
        Self::start_with(key, tickets, Some(tls)).await
    }

    async fn start_with(
        key: &str,
        tickets: Vec<SimTicket>,
        tls: Option<rustls::ServerConfig>,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            key: key.to_owned(),
            tickets,
            faults: VecDeque::new(),
            log: Vec::new(),
            bucket: (40.0, Instant::now()),
            webhooks: Vec::new(),
            numeric_ids: false,
        }));
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("address").port();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls),
            None => server.listen(listener),
        }
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            key: key.to_owned(),
            state,
            handle,
        }
    }

    /// Answers the next requests with `faults`, one each, before serving normally again.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.lock().faults.extend(faults);
    }

    /// From now on, new webhooks get numeric ids (the SDK's type) instead of UUIDs (the
    /// document's example); both are accepted by DELETE.
    pub fn numeric_webhook_ids(&self) {
        self.lock().numeric_ids = true;
    }

    /// `[endpoints.qminder]` for this simulator, the key given as `api_key`.
    pub fn settings(
        &self,
        api_key: qminder_bridge::secret::SecretSpec,
    ) -> qminder_bridge::config::QminderSettings {
        qminder_bridge::config::QminderSettings {
            api_url: self.url.clone(),
            api_key,
            locations: vec![],
            request_timeout_ms: 10_000,
            max_requests_per_s: 5.0,
        }
    }

    /// The webhooks registered now, `(id, url)`.
    pub fn webhooks(&self) -> Vec<(String, String)> {
        self.lock().webhooks.clone()
    }

    /// Every request answered so far.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the simulator's lock")
    }
}

impl Drop for QminderSim {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let query: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let mut state = state.lock().expect("the simulator's lock");
    let response = route(&mut state, &req, &query, &body);
    state.log.push(Logged {
        at: Instant::now(),
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query,
        status: response.status().as_u16(),
    });
    response
}
