//! The faults a real Kafka cluster has, on a 3-broker librdkafka mock cluster (topics with 3
//! partitions, replication factor 3), under steady signed traffic from the test (4
//! keep-alive connections, one webhook each every 12 ms: ~300/s), each in direct and in
//! spool mode. Every answer and every `/readyz` sample is recorded; then every 2xx is
//! looked for by reading the topic back (never by watermarks).
//!
//! The mock cluster does not elect leaders by itself (`broker_down` leaves the metadata
//! as it was), so the scripts below play the controller: a controlled shutdown moves a
//! broker's leaders away first; a broker lost for good has its leaders moved 1 s after it
//! went down (Kafka's controller does it after `broker.session.timeout.ms`, 9 s by default).
//! Each test prints one line of figures (`--nocapture`); docs/reliability.md has the table.
//! `CLUSTER_DEBUG=1` also prints the 2xx answered in each second, with a 12 s tail after the
//! fault, to see how throughput comes back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::helpers::traffic::{Answer, Traffic};
use crate::helpers::{TestApp, kafka, spawn_app_with};

const BROKERS: i32 = 3;
const PARTITIONS: i32 = 3;
/// The bridge's `kafka.delivery_timeout_ms` in these tests (its default).
const DELIVERY_TIMEOUT: Duration = Duration::from_millis(5000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Spool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    ControlledRollingRestart,
    UncontrolledRollingRestart,
    LeaderMove,
    BrokerLost,
    SlowBroker,
    RetriableErrors,
    ClusterDown,
}

/// What a scenario may do to what senders and probes see. None of them may replace the
/// producer: each is something librdkafka rides out by itself.
struct Expect {
    /// 503s are allowed (direct mode); in spool mode there are never any.
    may_503: bool,
    /// `/readyz` may say 503 (direct mode, while no broker answers).
    may_be_unready: bool,
    /// From the end of the fault to the last non-2xx answer.
    recover_within: Duration,
}

impl Scenario {
    fn expect(self) -> Expect {
        let (may_503, may_be_unready, recover_s) = match self {
            Self::ControlledRollingRestart | Self::LeaderMove => (false, false, 0),
            Self::UncontrolledRollingRestart | Self::BrokerLost | Self::RetriableErrors => {
                (true, false, 4)
            }
            Self::SlowBroker => (true, false, 3),
            Self::ClusterDown => (true, true, 3),
        };
        Expect {
            may_503,
            may_be_unready,
            recover_within: Duration::from_secs(recover_s),
        }
    }
}

/// The mock cluster with the bridge's topics, partition p led by broker p + 1.
struct Cluster {
    mock: MockCluster<'static, DefaultProducerContext>,
    topics: Vec<String>,
}

impl Cluster {
    fn new(prefix: &str) -> Self {
        let mock = MockCluster::new(BROKERS).expect("mock cluster");
        let mut topics: Vec<String> = qminder_bridge::event::KNOWN_EVENT_TYPES
            .iter()
            .map(|t| format!("{prefix}.{t}"))
            .collect();
        let settings = qminder_bridge::config::KafkaSettings {
            topic_prefix: prefix.to_owned(),
            ..Default::default()
        };
        topics.push(settings.unknown_topic());
        topics.push(settings.dead_letter_topic());
        for topic in &topics {
            mock.create_topic(topic, PARTITIONS, BROKERS)
                .expect("mock topic");
        }
        let cluster = Self { mock, topics };
        cluster.lead_with(|p| p + 1);
        cluster
    }

    /// Partition p of every topic is led by broker `leader(p)`.
    fn lead_with(&self, leader: impl Fn(i32) -> i32) {
        for topic in &self.topics {
            for p in 0..PARTITIONS {
                self.mock
                    .partition_leader(topic, p, Some(leader(p)))
                    .expect("a leader");
            }
        }
    }

    /// The partitions broker `b` leads in the initial layout, led by the next broker.
    fn move_leaders_off(&self, b: i32) {
        self.lead_with(|p| if p + 1 == b { b % BROKERS + 1 } else { p + 1 });
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Plays `scenario` on `cluster`; returns when the fault started and ended.
async fn play(scenario: Scenario, cluster: &Cluster, origin: Instant) -> (Duration, Duration) {
    let mock = &cluster.mock;
    let start = origin.elapsed();
    match scenario {
        Scenario::ControlledRollingRestart => {
            for b in 1..=BROKERS {
                cluster.move_leaders_off(b);
                sleep_ms(300).await;
                mock.broker_down(b).expect("down");
                sleep_ms(2000).await;
                mock.broker_up(b).expect("up");
                sleep_ms(1000).await;
                cluster.lead_with(|p| p + 1);
                sleep_ms(300).await;
            }
        }
        Scenario::UncontrolledRollingRestart => {
            for b in 1..=BROKERS {
                mock.broker_down(b).expect("down");
                sleep_ms(2000).await;
                mock.broker_up(b).expect("up");
                sleep_ms(1000).await;
            }
        }
        Scenario::LeaderMove => {
            for shift in 1..=BROKERS {
                cluster.lead_with(|p| (p + shift) % BROKERS + 1);
                sleep_ms(1000).await;
            }
        }
        Scenario::BrokerLost => {
            mock.broker_down(1).expect("down");
            sleep_ms(1000).await;
            cluster.move_leaders_off(1);
            sleep_ms(2000).await;
        }
        Scenario::SlowBroker => {
            let slow = DELIVERY_TIMEOUT * 2;
            mock.broker_round_trip_time(1, slow).expect("rtt");
            // Longer than the delivery timeout: the mock holds responses while it is slow.
            tokio::time::sleep(DELIVERY_TIMEOUT + Duration::from_secs(2)).await;
            mock.broker_round_trip_time(1, Duration::ZERO).expect("rtt");
        }
        Scenario::RetriableErrors => {
            use RDKafkaRespErr::{
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION as NOT_LEADER,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT as TIMED_OUT,
            };
            for errors in [[NOT_LEADER; 10], [TIMED_OUT; 10], [NOT_LEADER; 10]] {
                mock.request_errors(RDKafkaApiKey::Produce, &errors);
                sleep_ms(1000).await;
            }
        }
        Scenario::ClusterDown => {
            mock.broker_down(-1).expect("down");
            sleep_ms(10_000).await;
            mock.broker_up(-1).expect("up");
        }
    }
    (start, origin.elapsed())
}

async fn bridge_on(cluster: &Cluster, prefix: &str, mode: Mode, dir: &std::path::Path) -> TestApp {
    spawn_app_with(&cluster.mock.bootstrap_servers(), |s| {
        s.kafka.topic_prefix = prefix.to_owned();
        s.kafka.create_topics = false;
        s.kafka.partitions = PARTITIONS;
        s.kafka.delivery_timeout_ms = u64::try_from(DELIVERY_TIMEOUT.as_millis()).expect("ms");
        s.server.shutdown_timeout_ms = 10_000;
        if mode == Mode::Spool {
            s.spool.enabled = true;
            s.spool.dir = dir.to_owned();
        }
    })
    .await
}

/// Reads the topic until every id of `acknowledged` is found; returns the records read.
async fn find_all(app: &TestApp, acknowledged: &[u64]) -> usize {
    let bootstrap = app.bootstrap.clone();
    let topic = app.topic("ticket_created");
    let mut missing: HashSet<String> = acknowledged.iter().map(u64::to_string).collect();
    tokio::task::spawn_blocking(move || {
        let mut read = 0;
        if !missing.is_empty() {
            kafka::scan(&bootstrap, &topic, Duration::from_secs(60), |record| {
                read += 1;
                missing.remove(record.key_str().expect("a key"));
                missing.is_empty()
            });
        }
        read
    })
    .await
    .expect("the reader")
}

async fn run(scenario: Scenario, mode: Mode) {
    let _timed = crate::helpers::HEAVY.read().await;
    let expect = scenario.expect();
    let prefix = format!("c{}x{:?}x{:?}", std::process::id(), scenario, mode).to_lowercase();
    let cluster = Cluster::new(&prefix);
    let dir = tempfile::tempdir().expect("spool dir");
    let app = bridge_on(&cluster, &prefix, mode, dir.path()).await;
    let origin = Instant::now();
    let traffic = Traffic::start(&app, origin, 4, Duration::from_millis(12));
    sleep_ms(1000).await;
    let (fault_start, fault_end) = play(scenario, &cluster, origin).await;
    // Traffic goes on until the recovery bound, and 3 s more to show it recovered.
    let tail = if std::env::var("CLUSTER_DEBUG").is_ok() {
        Duration::from_secs(12)
    } else {
        expect.recover_within + Duration::from_secs(3)
    };
    tokio::time::sleep(tail).await;
    let (answers, readyz) = traffic.finish().await;
    if mode == Mode::Spool {
        wait_drained(&app).await;
    }
    let acknowledged: Vec<u64> = answers.iter().filter(|a| a.ok()).map(|a| a.id).collect();
    let read = find_all(&app, &acknowledged).await;
    let restarts = app.metric("qminder_bridge_producer_restarts_total").await;
    let report = Report::new(&answers, &readyz, fault_start, fault_end);
    println!(
        "cluster fault {scenario:?}, {mode:?}: {} 2xx (all {} found, {read} records read), \
         slowest answer {:.2} s, {}, restarts {restarts}, recovered {:.1} s after the fault, \
         readyz 503 in {} of {} samples",
        acknowledged.len(),
        acknowledged.len(),
        report.slowest().as_secs_f64(),
        report.failures(),
        report.recovered.as_secs_f64(),
        report.unready,
        readyz.len(),
    );
    if std::env::var("CLUSTER_DEBUG").is_ok() {
        let mut per_s = vec![0; 40];
        for a in answers.iter().filter(|a| a.ok()) {
            per_s[(a.done.as_secs() as usize).min(39)] += 1;
        }
        println!("fault {fault_start:?}..{fault_end:?}; 2xx per second: {per_s:?}");
    }
    report.check(&expect, mode, restarts);
    app.stop().await;
}

/// Polls until the spool is empty (at most 60 s).
async fn wait_drained(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.metric("qminder_bridge_spool_events").await > 0.0 {
        assert!(Instant::now() < deadline, "the spool did not drain in 60 s");
        sleep_ms(100).await;
    }
}

/// What the answers and samples say, relative to the fault.
struct Report<'a> {
    answers: &'a [Answer],
    failed: Vec<&'a Answer>,
    fault_start: Duration,
    fault_end: Duration,
    /// From the fault's end to the last non-2xx answer (0 if none came after it).
    recovered: Duration,
    /// `/readyz` samples that were not 200, and when.
    unready: usize,
    unready_span: Option<(Duration, Duration)>,
}

impl<'a> Report<'a> {
    fn new(
        answers: &'a [Answer],
        readyz: &[(Duration, u16)],
        fault_start: Duration,
        fault_end: Duration,
    ) -> Self {
        let failed: Vec<&Answer> = answers.iter().filter(|a| !a.ok()).collect();
        let last_bad = failed.iter().map(|a| a.done).max().unwrap_or_default();
        let unready: Vec<Duration> = readyz
            .iter()
            .filter(|(_, s)| *s != 200)
            .map(|(t, _)| *t)
            .collect();
        Self {
            answers,
            recovered: last_bad.saturating_sub(fault_end),
            unready: unready.len(),
            unready_span: unready.first().zip(unready.last()).map(|(a, b)| (*a, *b)),
            failed,
            fault_start,
            fault_end,
        }
    }

    fn slowest(&self) -> Duration {
        self.answers
            .iter()
            .map(|a| a.done - a.sent)
            .max()
            .unwrap_or_default()
    }

    fn failures(&self) -> String {
        match (self.failed.first(), self.failed.last()) {
            (Some(first), Some(last)) => format!(
                "{} non-2xx answered from {:.1} to {:.1} s after the fault began (it lasted {:.1} s)",
                self.failed.len(),
                first.done.saturating_sub(self.fault_start).as_secs_f64(),
                last.done.saturating_sub(self.fault_start).as_secs_f64(),
                (self.fault_end - self.fault_start).as_secs_f64()
            ),
            _ => "no non-2xx".to_owned(),
        }
    }

    fn check(&self, expect: &Expect, mode: Mode, restarts: f64) {
        for a in &self.failed {
            assert!(
                a.status == 503 && a.retry_after,
                "a failure other than 503 + Retry-After: {a:?}"
            );
            assert!(
                a.done >= self.fault_start,
                "a 503 before the fault began: {a:?}"
            );
        }
        let may_503 = expect.may_503 && mode == Mode::Direct;
        assert!(
            may_503 || self.failed.is_empty(),
            "503s: {}",
            self.failures()
        );
        assert!(
            self.recovered <= expect.recover_within,
            "still failing {:?} after the fault (bound {:?})",
            self.recovered,
            expect.recover_within
        );
        let after = self
            .answers
            .iter()
            .filter(|a| a.sent > self.fault_end + self.recovered && a.ok())
            .count();
        assert!(after >= 50, "only {after} answers after recovery");
        assert_eq!(restarts, 0.0, "the producer was replaced");
        let may_be_unready = expect.may_be_unready && mode == Mode::Direct;
        if may_be_unready {
            // The whole cluster down: the senders and the probe must notice.
            assert!(!self.failed.is_empty(), "no 503 while no broker answered");
            assert!(
                self.unready > 0,
                "/readyz stayed 200 while no broker answered"
            );
        }
        match self.unready_span {
            None => {}
            Some(span) if may_be_unready => assert!(
                span.0 >= self.fault_start && span.1 <= self.fault_end + Duration::from_secs(3),
                "/readyz was 503 from {span:?}, outside the fault {:?}",
                (self.fault_start, self.fault_end)
            ),
            Some(span) => panic!("/readyz flapped: {} samples 503 in {span:?}", self.unready),
        }
    }
}

macro_rules! scenario_tests {
    ($($name:ident: $scenario:ident, $mode:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run(Scenario::$scenario, Mode::$mode).await;
        }
    )*};
}

scenario_tests! {
    a_controlled_rolling_restart_answers_no_503_and_loses_nothing: ControlledRollingRestart, Direct;
    a_controlled_rolling_restart_in_spool_mode_loses_nothing: ControlledRollingRestart, Spool;
    an_uncontrolled_rolling_restart_loses_nothing: UncontrolledRollingRestart, Direct;
    an_uncontrolled_rolling_restart_in_spool_mode_loses_nothing: UncontrolledRollingRestart, Spool;
    leaders_moved_under_load_answer_no_503_and_lose_nothing: LeaderMove, Direct;
    leaders_moved_under_load_in_spool_mode_lose_nothing: LeaderMove, Spool;
    a_broker_lost_for_good_loses_nothing: BrokerLost, Direct;
    a_broker_lost_for_good_in_spool_mode_loses_nothing: BrokerLost, Spool;
    a_broker_slower_than_the_delivery_timeout_costs_bounded_503s: SlowBroker, Direct;
    a_broker_slower_than_the_delivery_timeout_in_spool_mode_loses_nothing: SlowBroker, Spool;
    bursts_of_retriable_produce_errors_lose_nothing: RetriableErrors, Direct;
    bursts_of_retriable_produce_errors_in_spool_mode_lose_nothing: RetriableErrors, Spool;
    the_whole_cluster_down_for_ten_seconds_is_503_then_recovers: ClusterDown, Direct;
    the_whole_cluster_down_for_ten_seconds_in_spool_mode_loses_nothing: ClusterDown, Spool;
}
