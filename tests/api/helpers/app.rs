//! `spawn_app()`: the bridge, in-process, on port 0, against a real broker, with topics of
//! its own; plus signing and reading helpers that do not reuse the bridge's code.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use qminder_bridge::config::{EndpointSettings, Settings};
use qminder_bridge::secret::SecretSpec;
use qminder_bridge::startup::Application;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::broker;
use super::kafka::{self, Received};

pub const PATH: &str = "/webhooks/qminder";
pub const SECRET: &str = "test-secret-Kq8zP2";

/// A running bridge.
pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub bootstrap: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The bridge against the shared broker, with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(broker::shared(), |_| {}).await
}

/// Test settings: unique topics, created by the bridge, quick health checks.
pub fn test_settings(bootstrap: &str) -> Settings {
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "t{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.kafka.bootstrap_servers = bootstrap.to_owned();
    settings.kafka.topic_prefix = prefix;
    settings.kafka.create_topics = true;
    settings.kafka.partitions = 2;
    settings.kafka.replication_factor = 1;
    settings.kafka.health_interval_ms = 200;
    settings.endpoints = vec![EndpointSettings {
        path: PATH.into(),
        url: "https://bridge.example.com/webhooks/qminder".into(),
        secrets: vec![SecretSpec::parse(SECRET)],
        source: None,
        qminder: None,
        registrations: Vec::new(),
    }];
    settings
}

/// The bridge against `bootstrap`, with `tweak` applied to the test settings. Waits until
/// it is ready unless the broker is unreachable on purpose (see [`spawn_app_unready`]).
pub async fn spawn_app_with(bootstrap: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_unready(bootstrap, tweak).await;
    app.wait_ready(true, Duration::from_secs(30)).await;
    app
}

/// Like [`spawn_app_with`], without waiting for readiness.
pub async fn spawn_app_unready(bootstrap: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(bootstrap);
    tweak(&mut settings);
    launch(settings, None).await
}

/// The bridge as loaded from `file` (which reloads re-read), ready.
pub async fn spawn_app_from(file: &std::path::Path) -> TestApp {
    let settings = Settings::load(Some(file)).expect("a valid configuration file");
    let app = launch(settings, Some(file.to_owned())).await;
    app.wait_ready(true, Duration::from_secs(30)).await;
    app
}

async fn launch(settings: Settings, file: Option<std::path::PathBuf>) -> TestApp {
    init_logs();
    settings.validate().expect("valid test settings");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let app = Application::build_reloading(settings.clone(), file, listener)
        .await
        .expect("the bridge builds");
    let scheme = if settings.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let address = format!("{scheme}://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        bootstrap: settings.kafka.bootstrap_servers.clone(),
        settings,
        // Tests of TLS bring their own client; this one also probes a TLS listener.
        // Every request has a deadline: a bridge that never answers fails the test, it
        // does not stall the run.
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client"),
        stop: Some(stop),
        task: Some(task),
    }
}

/// A self-signed certificate for `localhost` and its key, in PEM files that live as long
/// as this value.
pub struct SelfSigned {
    pub cert_pem: String,
    pub cert_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// The bridge serving HTTPS (`[server.tls]`, HTTP/2 offered if `http2`) with a fresh
/// self-signed certificate.
pub async fn spawn_tls_app(http2: bool) -> (TestApp, SelfSigned) {
    let dir = tempfile::tempdir().expect("dir");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_pem = generated.cert.pem();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).expect("write");
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).expect("write");
    let tls = qminder_bridge::config::TlsSettings {
        cert_file: cert_file.clone(),
        key_file,
        http2,
    };
    let app = spawn_app_with(broker::shared(), |s| s.server.tls = Some(tls)).await;
    let certificate = SelfSigned {
        cert_pem,
        cert_file,
        _dir: dir,
    };
    (app, certificate)
}

/// Logs of in-process bridges go to the test's captured output; `RUST_LOG` sets the level
/// (default: warnings).
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// `hex(HMAC-SHA256(secret, url ‖ body))`, written here from the spec, not the bridge.
pub fn sign(secret: &str, url: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl TestApp {
    /// The port the bridge listens on.
    pub fn port(&self) -> u16 {
        let port = self.address.rsplit(':').next().expect("a port");
        port.parse().expect("a port number")
    }

    pub fn url(&self) -> &str {
        &self.settings.endpoints[0].url
    }

    pub fn prefix(&self) -> &str {
        &self.settings.kafka.topic_prefix
    }

    pub fn topic(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.prefix())
    }

    /// Every topic this app may write to.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = qminder_bridge::event::KNOWN_EVENT_TYPES
            .iter()
            .map(|t| self.topic(t))
            .collect();
        topics.push(self.settings.kafka.unknown_topic());
        topics.push(self.settings.kafka.dead_letter_topic());
        topics.extend(self.settings.kafka.topics.values().cloned());
        topics
    }

    /// POSTs `body` to the first endpoint, signed as Qminder would.
    pub async fn post_signed(&self, body: &str) -> reqwest::Response {
        let signature = sign(SECRET, self.url(), body.as_bytes());
        self.post(PATH, body, Some(&signature)).await
    }

    /// POSTs `body` to `path` with the given signature header (none if `None`).
    pub async fn post(&self, path: &str, body: &str, signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("X-Qminder-Signature", signature);
        }
        request.send().await.expect("the bridge answers")
    }

    /// Reads the record an ack (`{"topic","partition","offset"}`) points at.
    pub async fn record_for(&self, ack: &Value) -> Received {
        let bootstrap = self.bootstrap.clone();
        let topic = ack["topic"].as_str().expect("topic").to_owned();
        let partition = i32::try_from(ack["partition"].as_i64().expect("partition")).expect("i32");
        let offset = ack["offset"].as_i64().expect("offset");
        tokio::task::spawn_blocking(move || kafka::read_at(&bootstrap, &topic, partition, offset))
            .await
            .expect("reader")
    }

    /// How much this app's topics hold: 0 means nothing was published; otherwise the number
    /// of produce batches, which is the number of records when each was sent alone (after
    /// the previous one's ack), as tests here do. See [`kafka::count`].
    pub async fn published(&self) -> i64 {
        let bootstrap = self.bootstrap.clone();
        let topics = self.topics();
        tokio::task::spawn_blocking(move || kafka::count(&bootstrap, &topics))
            .await
            .expect("counter")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample, e.g. `metric("qminder_bridge_ready")` or
    /// `metric(r#"qminder_bridge_events_rejected_total{endpoint="/x",reason="y"}"#)`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
            .parse()
            .expect("a number")
    }

    /// Polls `series` until it reads `want` (a series not exported yet reads NaN),
    /// failing after `within`.
    pub async fn wait_for_metric(&self, series: &str, want: f64, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let text = self.metrics().await;
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                .map_or(f64::NAN, |v| v.parse().expect("a number"));
            if value == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{series} is {value}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn readyz(&self) -> u16 {
        match self
            .http
            .get(format!("{}/readyz", self.address))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(error) => {
                // 0 is "no answer"; say why, for the unexplained connection errors seen
                // under CI load (see the closing note of 2026-12-05).
                eprintln!("/readyz: no answer: {error:?}");
                0
            }
        }
    }

    /// Polls `/readyz` until it says `ready` (or not), failing after `within`.
    pub async fn wait_ready(&self, ready: bool, within: Duration) {
        let deadline = Instant::now() + within;
        let wanted = if ready { 200 } else { 503 };
        loop {
            if self.readyz().await == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz did not turn {wanted} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts the bridge down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the app task").expect("a clean stop");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
