//! Qminder's REST API: the simulator held to Qminder's OpenAPI document, and the bridge's
//! API client (search a window whole, keep under the rate limit, honest errors) against it.

use std::time::Duration;

use qminder_bridge::config::QminderSettings;
use qminder_bridge::operator::qminder_api::{ApiError, Client, PAGE_LIMIT, Window, tickets};
use qminder_bridge::secret::SecretSpec;
use serde_json::Value;

use crate::helpers::qminder_sim::{Fault, QminderSim, SEARCH_CAP, SimTicket, account};

const KEY: &str = "test-api-key-0123456789";
/// 2026-12-01T09:00:00Z
const DAY_START_MS: i64 = 1_796_115_600_000;
const HOUR_MS: i64 = 3_600_000;

fn document() -> Value {
    serde_json::from_str(include_str!("../fixtures/qminder-openapi.json")).expect("JSON")
}

fn settings(sim: &QminderSim, per_s: f64) -> QminderSettings {
    QminderSettings {
        api_url: sim.url.clone(),
        api_key: SecretSpec::parse(&sim.key),
        locations: vec![],
        request_timeout_ms: 10_000,
        max_requests_per_s: per_s,
    }
}

fn client(sim: &QminderSim, per_s: f64) -> Client {
    Client::new(&settings(sim, per_s))
        .expect("a client")
        .with_first_backoff(Duration::from_millis(20))
}

/// Members of `value` its schema does not declare, as paths.
fn undeclared(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            let declared = schema.get("properties").and_then(Value::as_object);
            for (k, v) in members {
                match declared.and_then(|d| d.get(k)) {
                    Some(s) => undeclared(v, s, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                undeclared(v, &schema["items"], &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn hold_to_document(doc: &Value, method: &str, path: &str, answer: &Value) {
    let schema =
        &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} has no 200 schema in the document"
    );
    let validator = jsonschema::validator_for(schema).expect("a valid schema");
    if let Err(e) = validator.validate(answer) {
        panic!("{method} {path}: the simulator's answer breaks the document: {e}\n{answer:#}");
    }
    let mut extra = Vec::new();
    undeclared(answer, schema, "", &mut extra);
    assert!(
        extra.is_empty(),
        "{method} {path}: members the document does not declare: {extra:?}"
    );
}

fn sim_tickets(n: usize) -> Vec<SimTicket> {
    let mut tickets = account(
        11,
        1,
        n,
        DAY_START_MS,
        8 * HOUR_MS,
        DAY_START_MS + 9 * HOUR_MS,
    );
    tickets.extend(account(
        12,
        2,
        50,
        DAY_START_MS,
        8 * HOUR_MS,
        DAY_START_MS + 9 * HOUR_MS,
    ));
    tickets
}

#[tokio::test]
async fn the_simulators_answers_hold_to_qminders_openapi_document() {
    let doc = document();
    let sim = QminderSim::start(KEY, sim_tickets(300)).await;
    let http = reqwest::Client::new();
    let calls: [(&str, &str, &str, Option<&str>); 6] = [
        (
            "get",
            "/v1/tickets/search",
            "?location=1&limit=50&order=created%20ASC&minCreated=2026-12-01T10:00:00Z",
            None,
        ),
        (
            "get",
            "/v1/tickets/search",
            "?status=SERVED,NOSHOW&minCalled=1796119200&order=called%20DESC&limit=20",
            None,
        ),
        (
            "post",
            "/v1/tickets/count",
            "?location=1&status=CANCELLED_BY_CLERK",
            None,
        ),
        ("get", "/v1/locations", "", None),
        (
            "post",
            "/v1/webhooks",
            "",
            Some(r#"{"url":"https://bridge.example.com/webhooks/qminder"}"#),
        ),
        ("delete", "/v1/webhooks/{id}", "", None),
    ];
    let mut webhook_id = String::new();
    for (method, path, query, body) in calls {
        let url = format!("{}{}{query}", sim.url, path.replace("{id}", &webhook_id));
        let request = match method {
            "get" => http.get(&url),
            "post" => http.post(&url),
            _ => http.delete(&url),
        };
        let request = match body {
            Some(b) => request.header("content-type", "application/json").body(b),
            None => request,
        };
        let answer = request
            .header("X-Qminder-REST-API-Key", KEY)
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), 200, "{method} {url}");
        let answer: Value = answer.json().await.expect("JSON");
        hold_to_document(&doc, method, path, &answer);
        if path == "/v1/webhooks" {
            webhook_id = answer["id"].as_str().expect("an id").to_owned();
        }
        if path == "/v1/tickets/search" {
            assert!(
                !answer["data"].as_array().expect("data").is_empty(),
                "{url} found nothing"
            );
        }
    }
}

#[tokio::test]
async fn the_client_searches_only_with_parameters_the_document_declares_and_always_a_limit_and_an_order()
 {
    let doc = document();
    let sim = QminderSim::start(KEY, sim_tickets(300)).await;
    let c = client(&sim, 5.0);
    assert_eq!(tickets::locations(&c).await.expect("locations"), [1, 2]);
    let window = Window {
        location: 1,
        from_ms: DAY_START_MS,
        to_ms: DAY_START_MS + HOUR_MS,
    };
    tickets::created_between(&c, window, 100)
        .await
        .expect("a search");
    for request in sim.log() {
        let declared: Vec<&str> =
            doc["paths"][&request.path][request.method.to_lowercase()]["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
        for (name, _) in &request.query {
            assert!(
                declared.contains(&name.as_str()),
                "{} {}: undeclared {name}",
                request.method,
                request.path
            );
        }
        if request.path == "/v1/tickets/search" {
            let names: Vec<&str> = request.query.iter().map(|(k, _)| k.as_str()).collect();
            assert!(
                names.contains(&"limit") && names.contains(&"order"),
                "{names:?}"
            );
        }
    }
}

/// The tickets of `location` created within the window, as the simulator holds them.
fn truth(sim_tickets: &[SimTicket], w: Window) -> Vec<String> {
    let mut ids: Vec<String> = sim_tickets
        .iter()
        .filter(|t| t.location == w.location)
        .filter(|t| {
            t.time_ms("created")
                .is_some_and(|c| (w.from_ms..=w.to_ms).contains(&c))
        })
        .map(|t| t.id().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_window_with_more_tickets_than_a_page_is_found_whole_and_each_ticket_once() {
    // 12,000 tickets: more than the 10,000 a search ever answers, whatever its limit.
    let all = sim_tickets(12_000);
    let sim = QminderSim::start(KEY, all.clone()).await;
    let c = client(&sim, 5.0);
    let cases = [
        (
            Window {
                location: 1,
                from_ms: DAY_START_MS,
                to_ms: DAY_START_MS + 8 * HOUR_MS,
            },
            PAGE_LIMIT,
        ),
        (
            Window {
                location: 1,
                from_ms: DAY_START_MS + 1_234,
                to_ms: DAY_START_MS + HOUR_MS + 567,
            },
            97,
        ),
        (
            Window {
                location: 2,
                from_ms: DAY_START_MS,
                to_ms: DAY_START_MS + 8 * HOUR_MS,
            },
            7,
        ),
    ];
    for (window, page) in cases {
        let before = sim.log().len();
        let found = tickets::created_between(&c, window, page)
            .await
            .expect("a search");
        let mut ids: Vec<String> = found.iter().map(|t| t.id.clone()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "a ticket found twice");
        let want = truth(&all, window);
        assert!(
            want.len() > page.min(SEARCH_CAP),
            "the case must need more than one answer"
        );
        let missing = want.iter().find(|id| ids.binary_search(id).is_err());
        assert!(
            ids == want,
            "page {page}: found {} of {} tickets, first missing {missing:?}",
            ids.len(),
            want.len()
        );
        let requests = sim.log().len() - before;
        assert!(
            requests <= want.len() / page + 2,
            "{requests} requests for {} tickets",
            want.len()
        );
    }
    assert!(
        sim.log().iter().all(|r| r.status == 200),
        "no 429: the client stays under the limit"
    );
}

#[tokio::test]
async fn requests_are_spaced_to_the_configured_ceiling() {
    let sim = QminderSim::start(KEY, sim_tickets(10)).await;
    let c = client(&sim, 4.0);
    for _ in 0..6 {
        tickets::locations(&c).await.expect("locations");
    }
    let log = sim.log();
    let span = log.last().unwrap().at - log[0].at;
    // Six requests at 4 a second: five gaps of 250 ms.
    assert!(span >= Duration::from_millis(1_240), "{span:?}");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_waited_out_and_a_wrong_key_is_an_honest_error() {
    let sim = QminderSim::start(KEY, sim_tickets(50)).await;
    let c = client(&sim, 5.0);
    sim.fail_next(&[
        Fault::RateLimited(Some(1)),
        Fault::RateLimited(None),
        Fault::ServerError,
    ]);
    assert_eq!(tickets::locations(&c).await.expect("after retries"), [1, 2]);
    let log = sim.log();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429, 500, 200]
    );
    assert!(
        log[1].at - log[0].at >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(
        c.usage
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    sim.fail_next(&[Fault::RateLimited(None); 8]);
    match tickets::locations(&c).await {
        Err(ApiError::RateLimited { attempts: 8 }) => {}
        other => panic!("expected RateLimited after 8 attempts, got {other:?}"),
    }

    let mut wrong = settings(&sim, 5.0);
    wrong.api_key = SecretSpec::parse("not-the-key-at-all");
    let before = sim.log().len();
    let error = tickets::locations(&Client::new(&wrong).expect("a client"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ApiError::Unauthorized { status: 401 }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("not-the-key-at-all"), "{error}");
    assert_eq!(sim.log().len() - before, 1, "a refused key is not retried");
}

/// Where scripts/setup installs Qminder's SDK (npm `qminder-api`).
fn sdk_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("QMINDER_SDK_DIR") {
        return dir.into();
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
    std::path::Path::new(&cache).join("qminder-bridge-sdk")
}

#[tokio::test]
async fn qminders_own_javascript_sdk_lists_searches_counts_and_registers_against_the_simulator() {
    let modules = sdk_dir().join("node_modules");
    assert!(
        modules.join("qminder-api/package.json").exists(),
        "Qminder's SDK is not installed in {}: run scripts/setup",
        modules.display()
    );
    let dir = tempfile::tempdir().expect("a directory");
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).expect("write");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");
    let tickets = sim_tickets(300);
    let sim = QminderSim::start_tls(KEY, tickets.clone(), &cert, &key).await;
    sim.numeric_webhook_ids();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/search.cjs");
    let mut node = std::process::Command::new("node");
    node.arg(script)
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", &cert)
        .env("QMINDER_KEY", KEY)
        .env("QMINDER_SERVER", sim.url.trim_start_matches("https://"));
    let out = tokio::task::spawn_blocking(move || node.output().expect("node runs"))
        .await
        .expect("node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK failed against the simulator: {stderr}"
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(seen["locations"], serde_json::json!([1, 2]), "{seen}");
    let want: Vec<&str> = tickets
        .iter()
        .filter(|t| t.location == 1)
        .map(|t| t.id())
        .collect();
    let got: Vec<&str> = seen["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["id"].as_str().expect("the SDK's ticket id"))
        .collect();
    assert_eq!(got, want, "every ticket of location 1, oldest first");
    assert_eq!(seen["count"], 300, "{seen}");
    assert_eq!(seen["webhook"]["secret"], "string", "{seen}");
    assert!(seen["webhook"]["id"].is_u64(), "{seen}");
    assert_eq!(sim.webhooks(), [], "removed by the SDK");
    let paths: Vec<String> = sim
        .log()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(paths.iter().all(|p| p.ends_with(" 200")), "{paths:?}");
}
