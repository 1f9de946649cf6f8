//! The handler's decisions, with a fake delivery instead of Kafka: every answer of the
//! README's table that needs no broker, shedding, shutdown, dedupe and dead letters. Runs
//! in `cargo test --lib`, without any broker. This file is the harness; `answers.rs` the
//! 2xx and delivery failures, `refusals.rs` what is refused before delivery, `replays.rs`
//! dedupe and per-route counting.

mod answers;
mod refusals;
mod replays;
mod traces;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::http::header::HeaderMap;
use actix_web::test::{call_service, init_service, read_body};
use actix_web::{App, web};
use secrecy::SecretString;

use super::{Ingress, Live, Parts};
use crate::config::{EndpointSettings, Settings};
use crate::delivery::{Deliver, Pending};
pub(super) use crate::delivery::{Delivered, DeliveryError};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::secret::SecretSpec;
pub(super) use crate::shutdown::Stopping;
use crate::signature::Signer;
pub(super) use actix_web::test::TestRequest;

pub(super) const PATH: &str = "/hook";
pub(super) const URL: &str = "https://bridge.example/hook";
pub(super) const SECRET: &str = "s3cret-of-16-bytes";
pub(super) const EVENT: &str = r#"{"type":"ticket_created","data":{"id":"7024061","line":1}}"#;

/// Answers each delivery with the next queued outcome (Kafka's ack when none is queued)
/// and keeps the topic and value of every record it was given.
#[derive(Default)]
pub(super) struct FakeDelivery {
    outcomes: Mutex<VecDeque<Result<Delivered, DeliveryError>>>,
    pub(super) records: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Deliver for FakeDelivery {
    fn deliver(&self, record: &Record<'_>) -> Pending {
        let mut records = self.records.lock().unwrap();
        records.push((record.topic.to_owned(), record.value.to_vec()));
        let offset = i64::try_from(records.len()).unwrap() - 1;
        let outcome = self
            .outcomes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(Delivered::Kafka {
                partition: 0,
                offset,
            }));
        Box::pin(std::future::ready(outcome))
    }
}

impl FakeDelivery {
    pub(super) fn answering(outcomes: Vec<Result<Delivered, DeliveryError>>) -> Arc<Self> {
        Arc::new(Self {
            outcomes: Mutex::new(outcomes.into()),
            records: Mutex::default(),
        })
    }

    pub(super) fn topics(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect()
    }
}

pub(super) fn settings() -> Settings {
    let mut s = Settings::default();
    s.endpoints.push(EndpointSettings {
        path: PATH.into(),
        url: URL.into(),
        secrets: vec![SecretSpec::parse(SECRET)],
        source: None,
        qminder: None,
        registrations: Vec::new(),
    });
    s
}

pub(super) fn sign(body: &str) -> String {
    Signer::new(URL, &SecretString::from(SECRET)).sign(body.as_bytes())
}

pub(super) fn signed(body: &str) -> TestRequest {
    TestRequest::post()
        .uri(PATH)
        .insert_header(("X-Qminder-Signature", sign(body)))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

/// One answer: status, headers, body as JSON.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: serde_json::Value,
}

/// Builds the ingress for `settings` over `fake`, sends `requests` in order, and returns
/// the answers and the metrics.
pub(super) async fn exchange(
    settings: &Settings,
    fake: &Arc<FakeDelivery>,
    stopping: Arc<Stopping>,
    requests: Vec<TestRequest>,
) -> (Vec<Answer>, Metrics) {
    let k = &settings.kafka;
    let router = k.router();
    let metrics = crate::startup::metrics(settings, &router);
    let live = Live::build(settings, &metrics, &router).expect("the live configuration");
    let deliver: Arc<dyn Deliver> = Arc::clone(fake) as Arc<dyn Deliver>;
    let parts = Parts {
        deliver,
        router,
        metrics: metrics.clone(),
        live,
        stopping,
        record_limit: Arc::default(),
        traces: crate::traces::Traces::start(&settings.telemetry, &metrics).expect("traces"),
    };
    let ingress = web::Data::new(Ingress::new(settings, parts));
    let app = init_service(
        App::new()
            .app_data(ingress)
            .default_service(web::to(super::dispatch)),
    )
    .await;
    let mut answers = Vec::new();
    for request in requests {
        let response = call_service(
            &app,
            request
                .peer_addr("127.0.0.1:4000".parse().unwrap())
                .to_request(),
        )
        .await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = read_body(response).await;
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        answers.push(Answer {
            status,
            headers,
            body,
        });
    }
    (answers, metrics)
}

pub(super) async fn one(
    settings: &Settings,
    fake: &Arc<FakeDelivery>,
    request: TestRequest,
) -> (Answer, Metrics) {
    let (mut answers, metrics) = exchange(settings, fake, Arc::default(), vec![request]).await;
    (answers.remove(0), metrics)
}

pub(super) fn count(metrics: &Metrics, line: &str) -> bool {
    metrics.render().lines().any(|l| l == line)
}
