//! The handler's decisions, with a fake delivery instead of Kafka: every answer of the
//! README's table that needs no broker, shedding, shutdown, dedupe and dead letters. Runs
//! in `cargo test --lib`, without any broker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::http::header::HeaderMap;
use actix_web::test::{TestRequest, call_service, init_service, read_body};
use actix_web::{App, web};
use secrecy::SecretString;

use super::{Endpoint, Ingress, Parts};
use crate::access::AccessPolicy;
use crate::config::{EndpointSettings, Settings};
use crate::delivery::{Deliver, Delivered, DeliveryError, Pending};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::secret::SecretSpec;
use crate::shutdown::Stopping;
use crate::signature::Signer;

const PATH: &str = "/hook";
const URL: &str = "https://bridge.example/hook";
const SECRET: &str = "s3cret-of-16-bytes";
const EVENT: &str = r#"{"type":"ticket_created","data":{"id":"7024061","line":1}}"#;

/// Answers each delivery with the next queued outcome (Kafka's ack when none is queued)
/// and keeps the topic and value of every record it was given.
#[derive(Default)]
struct FakeDelivery {
    outcomes: Mutex<VecDeque<Result<Delivered, DeliveryError>>>,
    records: Mutex<Vec<(String, Vec<u8>)>>,
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
    fn answering(outcomes: Vec<Result<Delivered, DeliveryError>>) -> Arc<Self> {
        Arc::new(Self {
            outcomes: Mutex::new(outcomes.into()),
            records: Mutex::default(),
        })
    }

    fn topics(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect()
    }
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.endpoints.push(EndpointSettings {
        path: PATH.into(),
        url: URL.into(),
        secrets: vec![SecretSpec::parse(SECRET)],
        source: None,
    });
    s
}

fn sign(body: &str) -> String {
    Signer::new(URL, &SecretString::from(SECRET)).sign(body.as_bytes())
}

fn signed(body: &str) -> TestRequest {
    TestRequest::post()
        .uri(PATH)
        .insert_header(("X-Qminder-Signature", sign(body)))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

/// One answer: status, headers, body as JSON.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: serde_json::Value,
}

/// Builds the ingress for `settings` over `fake`, sends `requests` in order, and returns
/// the answers and the metrics.
async fn exchange(
    settings: &Settings,
    fake: &Arc<FakeDelivery>,
    stopping: Arc<Stopping>,
    requests: Vec<TestRequest>,
) -> (Vec<Answer>, Metrics) {
    let k = &settings.kafka;
    let router = k.router();
    let metrics = crate::startup::metrics(settings, &router);
    let endpoint =
        web::Data::new(Endpoint::new(&settings.endpoints[0], &metrics, &router).unwrap());
    let allow = settings.server.allow_cidrs.iter();
    let allow = allow
        .map(|c| crate::access::parse_cidr(c).unwrap())
        .collect();
    let deliver: Arc<dyn Deliver> = Arc::clone(fake) as Arc<dyn Deliver>;
    let parts = Parts {
        deliver,
        router,
        metrics: metrics.clone(),
        privacy: None,
        access: AccessPolicy::new(allow, Vec::new()),
        stopping,
        record_limit: Arc::default(),
    };
    let ingress = web::Data::new(Ingress::new(settings, parts));
    let app = init_service(
        App::new()
            .app_data(ingress)
            .service(
                web::resource(PATH)
                    .app_data(endpoint)
                    .route(web::post().to(super::receive))
                    .default_service(web::to(super::method_not_allowed)),
            )
            .default_service(web::to(super::not_found)),
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

async fn one(
    settings: &Settings,
    fake: &Arc<FakeDelivery>,
    request: TestRequest,
) -> (Answer, Metrics) {
    let (mut answers, metrics) = exchange(settings, fake, Arc::default(), vec![request]).await;
    (answers.remove(0), metrics)
}

fn count(metrics: &Metrics, line: &str) -> bool {
    metrics.render().lines().any(|l| l == line)
}

#[actix_web::test]
async fn answers_an_acknowledged_event_200_with_where_kafka_put_it() {
    let fake = FakeDelivery::answering(vec![Ok(Delivered::Kafka {
        partition: 2,
        offset: 41,
    })]);
    let (answer, metrics) = one(&settings(), &fake, signed(EVENT)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["topic"], "qminder.ticket_created");
    assert_eq!(
        (
            answer.body["partition"].as_i64(),
            answer.body["offset"].as_i64()
        ),
        (Some(2), Some(41))
    );
    assert_eq!(answer.body["id"].as_str().map(str::len), Some(64));
    assert_eq!(fake.topics(), ["qminder.ticket_created"]);
    let value = fake.records.lock().unwrap()[0].1.clone();
    let value = String::from_utf8(value).unwrap();
    assert!(
        value.ends_with(r#","data":{"id":"7024061","line":1}}"#),
        "the request's data bytes, unchanged, at the end of the CloudEvent: {value}"
    );
    assert!(count(
        &metrics,
        r#"qminder_bridge_events_forwarded_total{event_type="ticket_created",topic="qminder.ticket_created"} 1"#
    ));
}

#[actix_web::test]
async fn answers_a_spooled_event_202_with_its_sequence_number() {
    let fake = FakeDelivery::answering(vec![Ok(Delivered::Spooled { sequence: 9 })]);
    let (answer, _) = one(&settings(), &fake, signed(EVENT)).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body["spooled"], true);
    assert_eq!(answer.body["sequence"], 9);
    assert!(answer.body.get("partition").is_none());
}

#[actix_web::test]
async fn sends_an_authenticated_body_that_is_not_an_event_to_the_dead_letter_topic_202() {
    let fake = FakeDelivery::answering(Vec::new());
    let (answer, _) = one(&settings(), &fake, signed(r#"{"no":"type"}"#)).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body["topic"], "qminder.deadletter");
    assert!(answer.body["dead_letter_reason"].is_string());
    assert_eq!(fake.topics(), ["qminder.deadletter"]);
}

#[actix_web::test]
async fn sends_an_unknown_event_type_to_the_unknown_topic() {
    let fake = FakeDelivery::answering(Vec::new());
    let body = r#"{"type":"ticket_teleported","data":{"id":1}}"#;
    let (answer, _) = one(&settings(), &fake, signed(body)).await;
    assert_eq!(
        (answer.status, answer.body["topic"].as_str()),
        (200, Some("qminder.unknown"))
    );
}

#[actix_web::test]
async fn answers_every_delivery_failure_with_its_row_and_counts_its_reason() {
    // (failure, status, code, reason): 503 + Retry-After where sending again can help, a
    // final 413 / 422 where Kafka will never take the record.
    let cases = [
        (DeliveryError::Timeout, 503, "kafka_timeout", "timeout"),
        (
            DeliveryError::QueueFull,
            503,
            "kafka_unavailable",
            "queue_full",
        ),
        (
            DeliveryError::Refused("x".into()),
            503,
            "kafka_unavailable",
            "refused",
        ),
        (
            DeliveryError::TooLarge("x".into()),
            413,
            "record_too_large",
            "too_large",
        ),
        (
            DeliveryError::Unacceptable("x".into()),
            422,
            "record_unacceptable",
            "unacceptable",
        ),
        (
            DeliveryError::Unavailable,
            503,
            "kafka_unavailable",
            "unavailable",
        ),
        (DeliveryError::SpoolFull, 503, "spool_full", "spool_full"),
        (
            DeliveryError::SpoolUnavailable("disk".into()),
            503,
            "spool_unavailable",
            "spool_error",
        ),
        (
            DeliveryError::SpoolTimeout,
            503,
            "spool_unavailable",
            "spool_timeout",
        ),
    ];
    for (error, status, code, reason) in cases {
        let fake = FakeDelivery::answering(vec![Err(error.clone())]);
        let (answer, metrics) = one(&settings(), &fake, signed(EVENT)).await;
        assert_eq!(answer.status, status, "{error:?}");
        assert_eq!(
            answer.body,
            serde_json::json!({ "error": code }),
            "{error:?}"
        );
        let retry = answer.headers.get("retry-after");
        assert_eq!(retry.is_some(), status == 503, "{error:?}");
        let line = format!(
            r#"qminder_bridge_events_failed_total{{event_type="ticket_created",reason="{reason}"}} 1"#
        );
        assert!(count(&metrics, &line), "{error:?}: no {line}");
    }
}

#[actix_web::test]
async fn a_record_kafka_will_never_accept_leaves_a_stub_in_the_dead_letter_topic() {
    let fake = FakeDelivery::answering(vec![Err(DeliveryError::TooLarge("x".into()))]);
    let (answer, _) = one(&settings(), &fake, signed(EVENT)).await;
    assert_eq!(answer.status, 413);
    let records = fake.records.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "the refused record, then its stub");
    assert_eq!(records[1].0, "qminder.deadletter");
    let stub: serde_json::Value = serde_json::from_slice(&records[1].1).unwrap();
    assert_eq!(stub["reason"], "record_too_large");
    assert_eq!(stub["event_type"], "ticket_created");
    assert_eq!(stub["topic"], "qminder.ticket_created");
    assert_eq!(stub["bytes"], records[0].1.len());
    assert_eq!(stub["id"].as_str().map(str::len), Some(64));
}

#[actix_web::test]
async fn rejects_every_bad_request_before_delivery_with_its_status_and_reason() {
    let big = "x".repeat(2048);
    let mut small = settings();
    small.server.max_body_bytes = 1024;
    let mut allowlisted = settings();
    allowlisted.server.allow_cidrs = vec!["10.0.0.0/8".into()];
    let mut no_slots = settings();
    no_slots.server.max_in_flight = 0;
    let mut no_body_room = settings();
    no_body_room.server.max_in_flight_body_bytes = EVENT.len() - 1;
    let mut unverified_short = settings();
    unverified_short.server.max_unverified_body_bytes = 100;
    let beyond_waiting = "x".repeat(super::admission::WAIT_MAX_BYTES + 1);
    let unsigned = TestRequest::post().uri(PATH).set_payload(EVENT);
    let cases: Vec<(&str, Settings, TestRequest, u16, &str)> = vec![
        (
            "no signature",
            settings(),
            unsigned,
            401,
            "missing_signature",
        ),
        (
            "signed over the body alone",
            settings(),
            signed(EVENT).insert_header(("X-Qminder-Signature", hex::encode([0u8; 32]))),
            401,
            "invalid_signature",
        ),
        (
            "not hex",
            settings(),
            signed(EVENT).insert_header(("X-Qminder-Signature", "zz")),
            401,
            "invalid_signature",
        ),
        (
            "too large by Content-Length",
            small,
            signed(&big),
            413,
            "body_too_large",
        ),
        (
            "headers too large",
            settings(),
            signed(EVENT).insert_header(("x-padding", "p".repeat(17 * 1024))),
            431,
            "headers_too_large",
        ),
        (
            "unreadable Content-Length",
            settings(),
            signed(EVENT).insert_header(("content-length", "many")),
            400,
            "bad_request",
        ),
        (
            "from outside allow_cidrs",
            allowlisted,
            signed(EVENT),
            403,
            "ip_not_allowed",
        ),
        (
            "at max_in_flight",
            no_slots.clone(),
            signed(EVENT),
            503,
            "overloaded",
        ),
        (
            "a wrong signature never takes a max_in_flight slot: it is refused for itself",
            no_slots,
            signed(EVENT).insert_header(("X-Qminder-Signature", hex::encode([0u8; 32]))),
            401,
            "invalid_signature",
        ),
        (
            "no room for the body in max_in_flight_body_bytes",
            no_body_room,
            signed(EVENT),
            503,
            "overloaded",
        ),
        (
            "a large body with no room in max_unverified_body_bytes",
            unverified_short,
            signed(&beyond_waiting),
            503,
            "body_budget_exhausted",
        ),
        (
            "not a POST",
            settings(),
            TestRequest::get().uri(PATH),
            405,
            "method_not_allowed",
        ),
        (
            "no endpoint there",
            settings(),
            TestRequest::post().uri("/elsewhere"),
            404,
            "not_found",
        ),
    ];
    for (what, settings, request, status, code) in cases {
        let fake = FakeDelivery::answering(Vec::new());
        let (answer, metrics) = one(&settings, &fake, request).await;
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.body, serde_json::json!({ "error": code }), "{what}");
        assert!(fake.topics().is_empty(), "{what}: something was published");
        let endpoint = if code == "not_found" { "none" } else { PATH };
        let line = format!(
            r#"qminder_bridge_events_rejected_total{{endpoint="{endpoint}",reason="{code}"}} 1"#
        );
        assert!(count(&metrics, &line), "{what}: no {line}");
        assert_eq!(
            answer.headers.contains_key("retry-after"),
            status == 503,
            "{what}"
        );
    }
}

#[actix_web::test]
async fn refuses_new_webhooks_once_shutdown_began() {
    let fake = FakeDelivery::answering(Vec::new());
    let stopping = Arc::new(Stopping::default());
    stopping.begin();
    let (answers, _) = exchange(&settings(), &fake, stopping, vec![signed(EVENT)]).await;
    assert_eq!(answers[0].status, 503);
    assert_eq!(
        answers[0].body,
        serde_json::json!({ "error": "shutting_down" })
    );
    assert!(fake.topics().is_empty());
}

#[actix_web::test]
async fn answers_a_replayed_event_with_its_first_acknowledgement_without_publishing_again() {
    let mut s = settings();
    s.dedupe.enabled = true;
    let fake = FakeDelivery::answering(Vec::new());
    let (answers, metrics) = exchange(
        &s,
        &fake,
        Arc::default(),
        vec![signed(EVENT), signed(EVENT)],
    )
    .await;
    assert_eq!((answers[0].status, answers[1].status), (200, 200));
    assert_eq!(answers[1].body["duplicate"], true);
    assert_eq!(answers[0].body["offset"], answers[1].body["offset"]);
    assert_eq!(fake.topics().len(), 1);
    assert!(count(
        &metrics,
        r#"qminder_bridge_events_deduplicated_total{endpoint="/hook"} 1"#
    ));
}

#[actix_web::test]
async fn does_not_remember_a_failed_delivery_so_the_retry_is_published() {
    let mut s = settings();
    s.dedupe.enabled = true;
    let fake = FakeDelivery::answering(vec![Err(DeliveryError::Timeout)]);
    let (answers, _) = exchange(
        &s,
        &fake,
        Arc::default(),
        vec![signed(EVENT), signed(EVENT)],
    )
    .await;
    assert_eq!((answers[0].status, answers[1].status), (503, 200));
    assert!(answers[1].body.get("duplicate").is_none());
    assert_eq!(fake.topics().len(), 2);
}

#[actix_web::test]
async fn a_replayed_dead_letter_gets_its_first_answer() {
    let mut s = settings();
    s.dedupe.enabled = true;
    let fake = FakeDelivery::answering(Vec::new());
    let body = "not json";
    let (answers, _) = exchange(&s, &fake, Arc::default(), vec![signed(body), signed(body)]).await;
    assert_eq!((answers[0].status, answers[1].status), (202, 202));
    assert_eq!(
        answers[0].body["dead_letter_reason"],
        answers[1].body["dead_letter_reason"]
    );
    assert_eq!(fake.topics().len(), 1);
}

#[actix_web::test]
async fn counts_each_route_under_its_own_topic_even_an_override_named_like_a_fallback_label() {
    let mut s = settings();
    s.kafka
        .topics
        .insert("unknown".into(), "custom.unknown".into());
    let fake = FakeDelivery::answering(Vec::new());
    let requests = vec![
        signed(r#"{"type":"unknown","data":{"id":"1"}}"#),
        signed(r#"{"type":"ticket_teleported","data":{"id":"2"}}"#),
    ];
    let (answers, metrics) = exchange(&s, &fake, Arc::default(), requests).await;
    assert_eq!(answers[0].body["topic"], "custom.unknown");
    assert_eq!(answers[1].body["topic"], "qminder.unknown");
    for topic in ["custom.unknown", "qminder.unknown"] {
        let line = format!(
            r#"qminder_bridge_events_forwarded_total{{event_type="unknown",topic="{topic}"}} 1"#
        );
        assert!(count(&metrics, &line), "no {line}");
    }
}
