//! `qminder-bridge backfill`, the real binary, against the Qminder API simulator and a
//! broker with SQLite storage (its high watermarks are right; docs/testing.md): after an
//! outage, what Qminder says happened and no webhook brought is rebuilt, once.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use futures_util::StreamExt;
use qminder_bridge::delivery::spool::report::coordination_topic;
use qminder_bridge::secret::SecretSpec;
use serde_json::{Value, json};

use crate::helpers::broker::Tansu;
use crate::helpers::qminder_sim::{Fault, QminderSim, SimTicket, account};
use crate::helpers::schema::checked_event;
use crate::helpers::{SECRET, TestApp, kafka, spawn_app_with};

const BIN: &str = env!("CARGO_BIN_EXE_qminder-bridge");
const KEY: &str = "backfill-test-api-key-42";
const MINUTE_MS: i64 = 60_000;

/// One webhook Qminder sent: (ticket id, type), when, and its body's `data`.
#[derive(Debug, Clone)]
struct Sent {
    ticket: String,
    event_type: &'static str,
    at_ms: i64,
    data: Value,
}

/// Every webhook the account's tickets fired, by the test's own reading of a ticket
/// (not the bridge's): created, called, served, and a removal 30 s after its last time.
fn webhooks(tickets: &[SimTicket]) -> Vec<Sent> {
    let mut out = Vec::new();
    for t in tickets {
        let mut latest = 0;
        for (stage, event_type) in [
            ("created", "ticket_created"),
            ("called", "ticket_called"),
            ("served", "ticket_served"),
        ] {
            if let Some(at_ms) = t.time_ms(stage) {
                latest = at_ms;
                out.push(Sent {
                    ticket: t.id().into(),
                    event_type,
                    at_ms,
                    data: t.json.clone(),
                });
            }
        }
        if ["CANCELLED_BY_CLERK", "NOSHOW"].contains(&t.status()) {
            let at_ms = latest + 30_000;
            out.push(Sent {
                ticket: t.id().into(),
                event_type: "ticket_cancelled",
                at_ms,
                data: t.json.clone(),
            });
        }
    }
    out
}

/// Sends `webhooks` to the bridge, 32 at a time; each must be acknowledged.
async fn deliver_live(app: &TestApp, webhooks: &[&Sent]) {
    futures_util::stream::iter(webhooks)
        .map(|w| async move {
            let body = json!({"type": w.event_type, "data": w.data}).to_string();
            let answer = app.post_signed(&body).await;
            let status = answer.status();
            let text = answer.text().await.unwrap_or_default();
            assert!(status.is_success(), "{status} {text}");
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// A configuration file for the tool: the app's, with the account's API.
pub(super) fn config_for(app: &TestApp, sim: &QminderSim) -> tempfile::NamedTempFile {
    config_with(app, sim, |_| {})
}

/// [`config_for`], with `tweak` applied.
pub(super) fn config_with(
    app: &TestApp,
    sim: &QminderSim,
    tweak: impl FnOnce(&mut qminder_bridge::config::Settings),
) -> tempfile::NamedTempFile {
    let mut s = app.settings.clone();
    tweak(&mut s);
    s.endpoints[0].secrets = vec![SecretSpec::parse("env:QMINDER_BRIDGE_TEST_SECRET")];
    s.endpoints[0].qminder = Some(sim.settings(SecretSpec::parse("env:QMINDER_TEST_API_KEY")));
    crate::helpers::config_file(&toml::to_string(&s).expect("TOML"))
}

async fn backfill(config: &tempfile::NamedTempFile, since_ms: i64, until_ms: i64) -> Output {
    backfill_with_key(config, since_ms, until_ms, KEY).await
}

async fn backfill_args(
    config: &tempfile::NamedTempFile,
    since_ms: i64,
    until_ms: i64,
    extra: &[&str],
) -> Output {
    backfill_command(config, since_ms, until_ms, KEY, extra).await
}

async fn backfill_with_key(
    config: &tempfile::NamedTempFile,
    since_ms: i64,
    until_ms: i64,
    key: &str,
) -> Output {
    backfill_command(config, since_ms, until_ms, key, &[]).await
}

async fn backfill_command(
    config: &tempfile::NamedTempFile,
    since_ms: i64,
    until_ms: i64,
    key: &str,
    extra: &[&str],
) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("backfill")
        .arg("--config")
        .arg(config.path())
        .args([
            "--since",
            &(since_ms / 1000).to_string(),
            "--until",
            &(until_ms / 1000 + 1).to_string(),
        ])
        .env_remove("QMINDER_BRIDGE_CONFIG")
        .env("QMINDER_BRIDGE_TEST_SECRET", SECRET)
        .env("QMINDER_TEST_API_KEY", key)
        .args(extra);
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .expect("the tool")
}

/// (ticket id, type) → the events in Kafka for it, read from all four topics.
pub(super) async fn in_kafka(app: &TestApp, want: usize) -> BTreeMap<(String, String), Vec<Value>> {
    let bootstrap = app.settings.kafka.bootstrap_servers.clone();
    let topics: Vec<String> = [
        "ticket_created",
        "ticket_called",
        "ticket_served",
        "ticket_cancelled",
    ]
    .iter()
    .map(|t| app.topic(t))
    .collect();
    tokio::task::spawn_blocking(move || {
        let mut found: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
        let mut total = 0;
        for topic in &topics {
            // SQLite storage: the high watermark is the topic's record count.
            let n =
                usize::try_from(kafka::count(&bootstrap, std::slice::from_ref(topic))).unwrap_or(0);
            let mut read = 0;
            if n > 0 {
                kafka::scan(&bootstrap, topic, Duration::from_secs(60), |r| {
                    let event = checked_event(r);
                    let subject = event["subject"].as_str().unwrap_or("").to_owned();
                    let event_type = event["type"].as_str().unwrap_or("");
                    let event_type = event_type.trim_start_matches("com.qminder.").to_owned();
                    found.entry((subject, event_type)).or_default().push(event);
                    read += 1;
                    read >= n
                });
            }
            total += read;
        }
        assert!(
            total >= want,
            "read {total} records, expected at least {want}"
        );
        found
    })
    .await
    .expect("reader")
}

pub(super) fn published(report: &str) -> u64 {
    column(report, 4)
}

/// The sum of a column of the report's per-type table: 1 found, 2 present, 3 missing,
/// 4 published, 5 failed.
fn column(report: &str, n: usize) -> u64 {
    report
        .lines()
        .filter(|l| l.starts_with("ticket_"))
        .map(|l| {
            l.split_whitespace()
                .nth(n)
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a count")
        })
        .sum()
}

/// Every webhook Qminder sent is in Kafka once, marked as rebuilt if it was in the window.
async fn each_transition_once(app: &TestApp, all: &[Sent], since: i64, until: i64) {
    let found = in_kafka(app, all.len()).await;
    for w in all {
        let events = found.get(&(w.ticket.clone(), w.event_type.to_owned()));
        let events = events
            .unwrap_or_else(|| panic!("{} of ticket {} is not in Kafka", w.event_type, w.ticket));
        assert_eq!(
            events.len(),
            1,
            "{} of ticket {}: {events:#?}",
            w.event_type,
            w.ticket
        );
        let marked = events[0].get("qminderorigin").and_then(Value::as_str);
        let rebuilt = (since..=until).contains(&w.at_ms);
        assert_eq!(
            marked,
            rebuilt.then_some("backfill"),
            "{} of ticket {}",
            w.event_type,
            w.ticket
        );
    }
    let total = found.values().map(Vec::len).sum::<usize>();
    assert_eq!(total, all.len(), "nothing else in Kafka");
}

/// An account whose webhooks reached the bridge except during a ten-minute outage.
pub(super) struct Outage {
    _broker: Tansu,
    pub(super) app: TestApp,
    pub(super) sim: QminderSim,
    pub(super) config: tempfile::NamedTempFile,
    tickets: usize,
    all: Vec<Sent>,
    since: i64,
    until: i64,
}

impl Outage {
    /// `n` tickets created over 30 minutes (then 30 more for the last to be served); the
    /// webhooks of minutes 10 to 20 never arrived.
    pub(super) async fn new(n: usize) -> Self {
        let broker = Tansu::start_sqlite();
        let app = spawn_app_with(&broker.bootstrap(), |_| {}).await;
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let start = now - 60 * MINUTE_MS;
        let tickets = account(21, 1, n, start, 30 * MINUTE_MS, now - MINUTE_MS);
        let (since, until) = (start + 10 * MINUTE_MS, start + 20 * MINUTE_MS);
        let all = webhooks(&tickets);
        let live: Vec<&Sent> = all
            .iter()
            .filter(|w| !(since..=until).contains(&w.at_ms))
            .collect();
        deliver_live(&app, &live).await;
        let sim = QminderSim::start(KEY, tickets).await;
        let config = config_for(&app, &sim);
        Self {
            _broker: broker,
            app,
            sim,
            config,
            tickets: n,
            all,
            since,
            until,
        }
    }

    fn lost(&self) -> Vec<&Sent> {
        self.all
            .iter()
            .filter(|w| (self.since..=self.until).contains(&w.at_ms))
            .collect()
    }

    pub(super) async fn backfill(&self) -> (Output, String) {
        self.backfill_with(&[]).await
    }

    async fn backfill_with(&self, extra: &[&str]) -> (Output, String) {
        let out = backfill_args(&self.config, self.since, self.until, extra).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    async fn each_transition_once(&self) {
        each_transition_once(&self.app, &self.all, self.since, self.until).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_every_transition_qminder_reports_is_in_kafka_exactly_once_and_a_second_run_publishes_nothing()
 {
    let outage = Outage::new(6_000).await;
    let lost = outage.lost();
    let created = lost
        .iter()
        .filter(|w| w.event_type == "ticket_created")
        .count();
    assert!(
        created >= 1_900,
        "{created} tickets created during the outage"
    );

    // A dry run says what is missing and publishes nothing.
    let (dry, report) = outage.backfill_with(&["--dry-run"]).await;
    assert!(dry.status.success(), "{report}");
    assert_eq!(column(&report, 3), lost.len() as u64, "missing: {report}");
    assert_eq!(published(&report), 0, "{report}");
    let before = outage.sim.log().len();

    // Pages of 1,000 (Qminder's are 10,000): the 4,000 tickets searched take five pages.
    let (first, report) = outage.backfill_with(&["--page-limit", "1000"]).await;
    assert!(first.status.success(), "{report}");
    assert_eq!(published(&report), lost.len() as u64, "{report}");
    outage.each_transition_once().await;
    let requests = outage.sim.log().len() - before;
    assert!(
        (6..=8).contains(&requests) && requests * 5 <= outage.tickets,
        "{requests} API requests for {} tickets",
        outage.tickets
    );

    let (second, report) = outage.backfill().await;
    assert!(second.status.success(), "{report}");
    assert_eq!(
        published(&report),
        0,
        "a second run publishes nothing: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backfills_at_once_fill_the_gap_once_one_waiting_for_the_others_lease() {
    let outage = Outage::new(600).await;
    let (a, b) = tokio::join!(outage.backfill(), outage.backfill());
    assert!(a.0.status.success(), "{}", a.1);
    assert!(b.0.status.success(), "{}", b.1);
    let total = published(&a.1) + published(&b.1);
    assert_eq!(
        total,
        outage.lost().len() as u64,
        "one published, the other found it: {}\n{}",
        a.1,
        b.1
    );
    assert!(
        published(&a.1) == 0 || published(&b.1) == 0,
        "{}\n{}",
        a.1,
        b.1
    );
    outage.each_transition_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_refuses_the_key_or_keeps_rate_limiting_gets_an_honest_error_and_nothing_is_published()
 {
    let broker = Tansu::start_sqlite();
    let app = spawn_app_with(&broker.bootstrap(), |_| {}).await;
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let tickets = account(5, 1, 40, now - 20 * MINUTE_MS, 10 * MINUTE_MS, now);
    let sim = QminderSim::start(KEY, tickets).await;
    let config = config_for(&app, &sim);
    let (since, until) = (now - 30 * MINUTE_MS, now);
    let cases: [(&str, Vec<Fault>, &str, i32); 3] = [
        ("wrong key", vec![], "refused the API key", 2),
        (
            "persistent 429",
            // Retry-After: 0, so that eight attempts take no minutes of back-off.
            vec![Fault::RateLimited(Some(0)); 8],
            "kept answering 429",
            2,
        ),
        (
            "a few 429s and a 500",
            vec![
                Fault::RateLimited(Some(1)),
                Fault::RateLimited(None),
                Fault::ServerError,
            ],
            "2 rate-limited",
            0,
        ),
    ];
    for (case, faults, says, code) in cases {
        let before = app.published().await;
        sim.fail_next(&faults);
        let key = if case == "wrong key" {
            "not-the-right-key-at-all"
        } else {
            KEY
        };
        let out = backfill_with_key(&config, since, until, key).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{case}: {text}");
        assert!(text.contains(says), "{case}: {text}");
        assert!(
            !text.contains("not-the-right-key-at-all"),
            "{case}: the key is never shown"
        );
        if code == 2 {
            assert!(text.contains("nothing was published"), "{case}: {text}");
            assert_eq!(app.published().await, before, "{case}: nothing published");
        } else {
            assert!(published(&text) > 0, "{case}: {text}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_whose_events_are_still_spooled_is_filled_only_once_the_spool_has_forwarded_them()
{
    let broker = Tansu::start_sqlite();
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().expect("a directory");
    // The ticket topics do not exist yet: their events wait in the spool (held aside).
    let app = spawn_app_with(&bootstrap, |s| {
        s.spool.enabled = true;
        s.spool.dir = dir.path().join("spool");
        s.kafka.create_topics = false;
        let others: Vec<String> = s
            .kafka
            .router()
            .topics()
            .into_iter()
            .filter(|t| !t.contains(".ticket_"))
            .collect();
        kafka::create_topics(&bootstrap, &others, &[]);
        let coordination = coordination_topic(&s.kafka.topic_prefix);
        kafka::create_topics(&bootstrap, &[coordination], &[]);
    })
    .await;
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let start = now - 30 * MINUTE_MS;
    let tickets = account(33, 1, 300, start, 20 * MINUTE_MS, now);
    let (since, until) = (start + 10 * MINUTE_MS, now + 60_000);
    let all = webhooks(&tickets);
    // Sent now: accepted (202) and spooled within the window's time, not yet in Kafka.
    let live: Vec<&Sent> = all
        .iter()
        .filter(|w| !(since..=until).contains(&w.at_ms))
        .collect();
    deliver_live(&app, &live).await;
    let sim = QminderSim::start(KEY, tickets).await;
    let config = config_for(&app, &sim);
    wait_for_a_report(
        &bootstrap,
        &coordination_topic(&app.settings.kafka.topic_prefix),
    )
    .await;

    let out = backfill_args(&config, since, until, &["--spool-wait-s", "3"]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("still holds events of the window"), "{text}");

    let ticket_topics: Vec<String> = all_ticket_types().iter().map(|t| app.topic(t)).collect();
    kafka::create_topics(&bootstrap, &ticket_topics, &[]);
    let out = backfill_args(&config, since, until, &["--spool-wait-s", "120"]).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let lost = all.len() - live.len();
    assert_eq!(published(&text), lost as u64, "{text}");
    each_transition_once(&app, &all, since, until).await;
    app.stop().await;
}

fn all_ticket_types() -> [&'static str; 4] {
    [
        "ticket_created",
        "ticket_called",
        "ticket_served",
        "ticket_cancelled",
    ]
}

/// Waits until a replica has reported how far its spool is drained.
async fn wait_for_a_report(bootstrap: &str, topic: &str) {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        kafka::scan(&bootstrap, &topic, Duration::from_secs(30), |r| {
            r.value_str().contains("spool_drained_through")
        });
    })
    .await
    .expect("reader");
}

/// The reconciler's missing-transition counts, summed over event types.
async fn reconciled_missing(app: &TestApp) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("qminder_bridge_reconcile_missing_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn reconcile_runs(app: &TestApp) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("qminder_bridge_reconcile_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconciling_bridges_fill_what_no_webhook_brought_once_and_count_it() {
    let broker = Tansu::start_sqlite();
    let bootstrap = broker.bootstrap();
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let start = now - 50 * MINUTE_MS;
    let tickets = account(44, 1, 300, start, 40 * MINUTE_MS, now - 3 * MINUTE_MS);
    let (since, until) = (start + 10 * MINUTE_MS, start + 20 * MINUTE_MS);
    let all = webhooks(&tickets);
    let live: Vec<&Sent> = all
        .iter()
        .filter(|w| !(since..=until).contains(&w.at_ms))
        .collect();
    let first = spawn_app_with(&bootstrap, |_| {}).await;
    deliver_live(&first, &live).await;
    let prefix = first.settings.kafka.topic_prefix.clone();
    first.stop().await;

    let sim = QminderSim::start(KEY, tickets).await;
    let reconciling = |s: &mut qminder_bridge::config::Settings| {
        s.kafka.topic_prefix = prefix.clone();
        s.endpoints[0].qminder = Some(sim.settings(SecretSpec::parse(KEY)));
        // A run every half hour covers the last hour, a minute behind: the first, 10 s
        // after start, covers the whole account.
        s.reconcile.enabled = true;
        s.reconcile.interval_s = 1_800;
        s.reconcile.lag_s = 60;
    };
    let a = spawn_app_with(&bootstrap, reconciling).await;
    let b = spawn_app_with(&bootstrap, reconciling).await;
    let lost = (all.len() - live.len()) as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let runs = (reconcile_runs(&a).await, reconcile_runs(&b).await);
        if runs.0 >= 1.0 && runs.1 >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runs so far: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let counted = reconciled_missing(&a).await + reconciled_missing(&b).await;
    assert_eq!(
        counted, lost,
        "the gaps are counted once, by whichever replica filled them"
    );
    each_transition_once(&a, &all, since, until).await;
    a.stop().await;
    b.stop().await;
}

/// A measurement, not a check of behaviour (the scenarios above are): how long a backfill
/// of a whole busy day takes, and how many API requests it makes. Run by hand:
/// `cargo test --release --test api -- --ignored --nocapture a_busy_day`; the figures are
/// in docs/performance.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/performance.md, run by hand"]
async fn a_busy_day_is_filled_in_one_run() {
    let broker = Tansu::start_sqlite();
    let app = spawn_app_with(&broker.bootstrap(), |_| {}).await;
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let start = now - 24 * 60 * MINUTE_MS;
    let tickets = account(55, 1, 20_000, start, 23 * 60 * MINUTE_MS, now - MINUTE_MS);
    // A two-hour outage in the afternoon.
    let (lost_from, lost_to) = (start + 14 * 60 * MINUTE_MS, start + 16 * 60 * MINUTE_MS);
    let all = webhooks(&tickets);
    let live: Vec<&Sent> = all
        .iter()
        .filter(|w| !(lost_from..=lost_to).contains(&w.at_ms))
        .collect();
    let sending = std::time::Instant::now();
    deliver_live(&app, &live).await;
    eprintln!(
        "{} live webhooks delivered in {:?}",
        live.len(),
        sending.elapsed()
    );
    let sim = QminderSim::start(KEY, tickets).await;
    let config = config_for(&app, &sim);
    let started = std::time::Instant::now();
    let out = backfill(&config, start, now).await;
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    eprintln!(
        "a day backfilled in {took:?} with {} API requests:\n{text}",
        sim.log().len()
    );
    assert_eq!(published(&text), (all.len() - live.len()) as u64, "{text}");
    // The same topics read by the tests' own reader (one topic at a time), for comparison.
    let reading = std::time::Instant::now();
    let found = in_kafka(&app, all.len()).await;
    eprintln!(
        "the tests' reader read {} records back in {:?}",
        found.values().map(Vec::len).sum::<usize>(),
        reading.elapsed()
    );
}
