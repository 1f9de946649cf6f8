//! Steady signed traffic for the fault tests, and a `/readyz` sampler: what a webhook
//! sender and a Kubernetes probe see while the cluster misbehaves. Every answer is kept
//! with its times, measured from one origin shared with the test's fault script.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::app::{PATH, SECRET, TestApp, sign};

/// One webhook and what the bridge answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The ticket id in the body (also the record's key).
    pub id: u64,
    pub sent: Duration,
    pub done: Duration,
    /// 0 when no HTTP answer came at all.
    pub status: u16,
    pub retry_after: bool,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What the sender side needs of a running bridge.
#[derive(Debug, Clone)]
struct Target {
    endpoint: String,
    readyz: String,
    /// The registered URL and the secret Qminder signs with now ([`Traffic::sign_with`]).
    signer: Arc<std::sync::RwLock<(String, String)>>,
}

/// `connections` keep-alive connections, each sending a new `ticket_created` webhook every
/// `period` (or as soon as the previous answer came, when that took longer).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<Vec<Answer>>>,
    sampler: JoinHandle<Vec<(Duration, u16)>>,
    signer: Arc<std::sync::RwLock<(String, String)>>,
}

impl Traffic {
    pub fn start(app: &TestApp, origin: Instant, connections: usize, period: Duration) -> Self {
        Self::start_on(&app.address, app.url(), origin, connections, period)
    }

    /// [`start`](Self::start) against the bridge at `address` (plain or TLS, any
    /// certificate) whose first endpoint is registered as `url`.
    pub fn start_on(
        address: &str,
        url: &str,
        origin: Instant,
        connections: usize,
        period: Duration,
    ) -> Self {
        let target = Target {
            endpoint: format!("{address}{PATH}"),
            readyz: format!("{address}/readyz"),
            signer: Arc::new(std::sync::RwLock::new((url.to_owned(), SECRET.to_owned()))),
        };
        let signer = Arc::clone(&target.signer);
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(1));
        let senders = (0..connections)
            .map(|_| {
                let (target, stop, next_id) = (target.clone(), stop.clone(), next_id.clone());
                tokio::spawn(send_loop(target, origin, period, stop, next_id))
            })
            .collect();
        let sampler = tokio::spawn(sample_readyz(target, origin, stop.clone()));
        Self {
            stop,
            senders,
            sampler,
            signer,
        }
    }

    /// From the next webhook on, signs for `url` with `secret` (as Qminder does once a
    /// new registration replaced the old).
    pub fn sign_with(&self, url: &str, secret: &str) {
        *self.signer.write().expect("signer") = (url.to_owned(), secret.to_owned());
    }

    /// Stops sending, waits for the answers in flight; returns every answer (by send time)
    /// and every `/readyz` sample.
    pub async fn finish(self) -> (Vec<Answer>, Vec<(Duration, u16)>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        for sender in self.senders {
            answers.extend(sender.await.expect("a sender"));
        }
        answers.sort_by_key(|a| a.sent);
        (answers, self.sampler.await.expect("the sampler"))
    }
}

/// A body with ticket id `id`.
pub fn ticket_created(id: u64) -> String {
    format!(
        r#"{{"type":"ticket_created","data":{{"id":"{id}","line":7,"created":{{"date":"2026-12-02T10:00:00Z"}}}}}}"#
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

async fn send_loop(
    target: Target,
    origin: Instant,
    period: Duration,
    stop: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
) -> Vec<Answer> {
    let http = client();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let body = ticket_created(id);
        let signature = {
            let signer = target.signer.read().expect("signer");
            sign(&signer.1, &signer.0, body.as_bytes())
        };
        let sent = origin.elapsed();
        let response = http
            .post(&target.endpoint)
            .header("content-type", "application/json")
            .header("X-Qminder-Signature", signature)
            .body(body)
            .send()
            .await;
        let (status, retry_after) = match &response {
            Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
            Err(_) => (0, false),
        };
        if let Ok(r) = response {
            let _ = r.bytes().await;
        }
        answers.push(Answer {
            id,
            sent,
            done: origin.elapsed(),
            status,
            retry_after,
        });
    }
    answers
}

async fn sample_readyz(
    target: Target,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<(Duration, u16)> {
    let http = client();
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let status = match http.get(&target.readyz).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        samples.push((origin.elapsed(), status));
    }
    samples
}

/// The ticket ids of `answers` that `topic` does not hold (read with the client
/// properties `extra`, e.g. SASL), after waiting up to 60 s for as many records.
pub async fn lost(
    answers: &[Answer],
    bootstrap: &str,
    extra: &'static [(&'static str, &'static str)],
    topic: &str,
) -> Vec<String> {
    let sent: std::collections::HashSet<String> =
        answers.iter().map(|a| a.id.to_string()).collect();
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let within = Duration::from_secs(60);
        let records = super::kafka::read_until_with(&bootstrap, extra, &topic, within, |r| {
            r.len() >= sent.len()
        });
        let ids: std::collections::HashSet<String> = records
            .iter()
            .map(|r| r.json()["data"]["id"].as_str().expect("id").to_owned())
            .collect();
        sent.difference(&ids).cloned().collect()
    })
    .await
    .expect("reader")
}
