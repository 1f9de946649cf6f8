//! `qminder-bridge spool …`, the operator's tools, run as the real binary against the
//! spool directory a bridge left behind: a parked record is listed and replayed into Kafka,
//! a stopped bridge's backlog is counted exactly, and `replay` refuses while a bridge holds
//! the directory.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use qminder_bridge::delivery::spool::forwarder::PARK_AFTER;

use crate::helpers::traffic::ticket_created;
use crate::helpers::{TestApp, config_file, kafka, spawn_app_unready, spawn_app_with};

const BIN: &str = env!("CARGO_BIN_EXE_qminder-bridge");

/// A configuration file for the tools: the app's Kafka side and spool directory.
fn config_for(app: &TestApp) -> tempfile::NamedTempFile {
    let s = &app.settings;
    let text = format!(
        "[kafka]\nbootstrap_servers = {:?}\ntopic_prefix = {:?}\ndelivery_timeout_ms = 5000\n\
         [spool]\nenabled = true\ndir = {:?}\n\
         [[endpoints]]\npath = \"/webhooks/qminder\"\nurl = {:?}\nsecrets = [\"tool-test-secret-123\"]\n",
        s.kafka.bootstrap_servers,
        s.kafka.topic_prefix,
        s.spool.dir.display().to_string(),
        app.url(),
    );
    config_file(&text)
}

async fn spool(config: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("spool")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("QMINDER_BRIDGE_CONFIG");
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .expect("the tool")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn spool_in(dir: &Path) -> impl FnOnce(&mut qminder_bridge::config::Settings) + '_ {
    move |s| {
        s.spool.enabled = true;
        s.spool.dir = dir.to_owned();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_record_is_listed_then_replayed_into_kafka_and_leaves_parked() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let dir = tempfile::tempdir().expect("spool dir");
    let app = spawn_app_with(&cluster.bootstrap_servers(), |s| {
        s.kafka.create_topics = false;
        for t in qminder_bridge::event::KNOWN_EVENT_TYPES {
            let topic = format!("{}.{t}", s.kafka.topic_prefix);
            cluster.create_topic(&topic, 1, 1).expect("mock topic");
        }
        spool_in(dir.path())(s);
    })
    .await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; PARK_AFTER as usize],
    );
    assert_eq!(app.post_signed(&ticket_created(41)).await.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metric("qminder_bridge_spool_parked_total").await < 1.0 {
        assert!(Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = config_for(&app);
    let topic = app.topic("ticket_created");
    app.stop().await;

    let listed = spool(config.path(), &["parked", "list"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let text = stdout(&listed);
    assert!(text.starts_with("1 parked item(s)"), "{text}");
    assert!(text.contains(&format!("topic {topic}")), "{text}");
    assert!(
        text.contains("refuses this record itself"),
        "the reason is shown: {text}"
    );
    let id = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("an id");

    // The refusals were used up: Kafka takes the record now.
    let replayed = spool(config.path(), &["parked", "replay", id]).await;
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(
        stdout(&replayed).contains("replayed 1 of 1"),
        "{replayed:?}"
    );
    let bootstrap = cluster.bootstrap_servers();
    let records = tokio::task::spawn_blocking(move || {
        kafka::read_until(&bootstrap, &topic, Duration::from_secs(20), |r| {
            !r.is_empty()
        })
    })
    .await
    .expect("reader");
    assert_eq!(records[0].key_str(), Some("41"));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("parked"))
        .expect("parked/")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "still parked: {left:?}");
    let listed = spool(config.path(), &["parked", "list"]).await;
    assert!(
        stdout(&listed).starts_with("0 parked item(s)"),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_a_stopped_bridges_backlog_exactly() {
    let dir = tempfile::tempdir().expect("spool dir");
    // No broker: everything stays in the spool.
    let dead = crate::helpers::broker::DeadAddress::new();
    let app = spawn_app_unready(dead.as_str(), spool_in(dir.path())).await;
    for id in 0..17 {
        assert_eq!(app.post_signed(&ticket_created(id)).await.status(), 202);
    }
    let bytes = app.metric("qminder_bridge_spool_bytes").await;
    let config = config_for(&app);
    app.stop().await;

    let status = spool(config.path(), &["status"]).await;
    assert!(status.status.success(), "{status:?}");
    let text = stdout(&status);
    assert!(text.contains("(no bridge holds it)"), "{text}");
    assert!(
        text.contains(&format!("backlog           17 events, {bytes} bytes")),
        "{text}"
    );
    assert!(text.contains("cursor            0 "), "{text}");
    assert!(text.contains("segments          1"), "{text}");
    assert!(text.contains("parked            0"), "{text}");
    assert!(text.contains("s ago)"), "the oldest event's age: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_while_a_bridge_holds_the_spool_directory() {
    let dir = tempfile::tempdir().expect("spool dir");
    let dead = crate::helpers::broker::DeadAddress::new();
    let app = spawn_app_unready(dead.as_str(), spool_in(dir.path())).await;
    let config = config_for(&app);

    let refused = spool(config.path(), &["parked", "replay", "--all"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("holds the spool directory"), "{stderr}");
    let status = spool(config.path(), &["status"]).await;
    assert!(
        stdout(&status).contains("a bridge holds it now"),
        "{status:?}"
    );
    app.stop().await;

    // Once the bridge has stopped, the lock is free.
    let replayed = spool(config.path(), &["parked", "replay", "--all"]).await;
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(
        stdout(&replayed).contains("replayed 0 of 0"),
        "{replayed:?}"
    );
}
