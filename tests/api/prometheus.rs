//! A real Prometheus server (Debian's `/usr/bin/prometheus`) scrapes the bridge, as in
//! production: it counts exactly what the bridge forwarded, and every rule of
//! `deploy/prometheus/alerts.yml` evaluates cleanly against the real series, with no alert
//! raised for a healthy bridge.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::broker::free_port;
use crate::helpers::{PATH, spawn_app};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn alerts_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml")
}

/// A Prometheus server on a free port that scrapes one target every second and evaluates
/// the bridge's alert rules every second; killed (and its storage removed) on drop.
struct Prometheus {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) as job `qminder-bridge`.
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: qminder-bridge\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n",
                rules = alerts_file().display()
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PROMETHEUS} starts (scripts/setup installs it): {e}"));
        Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `/-/ready` until Prometheus serves queries.
    async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.address))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/v1/<path>` with `query`; the answer's `data`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let answer: Value = self
            .http
            .get(format!("{}/api/v1/{path}", self.address))
            .query(query)
            .send()
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(answer["status"], "success", "{path} {query:?}: {answer}");
        answer["data"].clone()
    }

    /// The value of an instant query that yields one sample, or `None` while it yields none.
    async fn scalar(&self, promql: &str) -> Option<f64> {
        let data = self.api("query", &[("query", promql)]).await;
        let result = data["result"].as_array().expect("a vector").clone();
        assert!(result.len() <= 1, "{promql} gave several series: {data}");
        let value = result.first()?["value"][1].as_str()?.to_owned();
        Some(value.parse().expect("a number"))
    }

    /// Polls `promql` until it yields `want`; fails at once if it overshoots.
    async fn wait_for(&self, promql: &str, want: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.scalar(promql).await;
            if got == Some(want) {
                return;
            }
            assert!(
                got.is_none_or(|v| v < want),
                "{promql} = {got:?}, more than {want}"
            );
            assert!(
                Instant::now() < deadline,
                "{promql} = {got:?}, not {want}, after {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_the_bridge_counts_every_forwarded_event() {
    let app = spawn_app().await;
    let target = app.address.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target);
    prometheus.wait_ready(Duration::from_secs(30)).await;

    const N: u32 = 3;
    for id in 1..=N {
        let body = format!(r#"{{"type":"ticket_created","data":{{"id":"{id}"}}}}"#);
        assert_eq!(app.post_signed(&body).await.status(), 200, "{body}");
    }
    // A request that must not count as forwarded.
    assert_eq!(app.post(PATH, "{}", Some("00")).await.status(), 401);

    let within = Duration::from_secs(30);
    prometheus
        .wait_for(
            r#"sum(qminder_bridge_events_forwarded_total{event_type="ticket_created"})"#,
            f64::from(N),
            within,
        )
        .await;
    // The same scrape carries the rest: a target up, accepted = forwarded, the rejection.
    prometheus
        .wait_for(r#"up{job="qminder-bridge"}"#, 1.0, within)
        .await;
    prometheus
        .wait_for(
            r#"sum(qminder_bridge_events_accepted_total{event_type="ticket_created"})"#,
            f64::from(N),
            within,
        )
        .await;
    prometheus
        .wait_for(
            r#"sum(qminder_bridge_events_rejected_total{reason="invalid_signature"})"#,
            1.0,
            within,
        )
        .await;
    prometheus
        .wait_for(
            r#"sum(qminder_bridge_request_duration_seconds_count{endpoint="/webhooks/qminder"})"#,
            f64::from(N + 1),
            within,
        )
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_rule_evaluates_against_the_real_metrics_and_none_fires_for_a_healthy_bridge() {
    let app = spawn_app().await;
    let target = app.address.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target);
    prometheus.wait_ready(Duration::from_secs(30)).await;
    let body = r#"{"type":"ticket_created","data":{"id":"1"}}"#;
    assert_eq!(app.post_signed(body).await.status(), 200);
    prometheus
        .wait_for(r#"up{job="qminder-bridge"}"#, 1.0, Duration::from_secs(30))
        .await;

    let alerts = std::fs::read_to_string(alerts_file()).expect("alerts.yml");
    let expected = alerts.matches("- alert: ").count();
    assert!(expected >= 8, "alerts.yml has {expected} alerts");
    // Until every rule has been evaluated since the first scrape, with no error, and no
    // alert is pending or firing (absent(up) is pending until the first scrape lands).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let groups = prometheus.api("rules", &[]).await;
        let rules: Vec<Value> = groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").clone())
            .collect();
        let unhealthy: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        let active: Vec<String> = rules
            .iter()
            .flat_map(|r| r["alerts"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{} {}", a["labels"]["alertname"], a["state"]))
            .collect();
        if rules.len() == expected && unhealthy.is_empty() && active.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} rules loaded of {expected}; unhealthy: {unhealthy:?}; active alerts: {active:?}",
            rules.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}
