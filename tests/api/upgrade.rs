//! An upgrade never strands a backlog: a spool written by an earlier release is forwarded
//! by this one, and a spool this release cannot read is refused, never misread.

use std::path::Path;
use std::time::Duration;

use qminder_bridge::startup::Application;

use crate::helpers::broker::{self, Tansu};
use crate::helpers::{kafka, spawn_app_with, test_settings};

/// A copy of `tests/fixtures/<name>` in a scratch directory (the fixture stays as it is).
fn fixture_copy(name: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().expect("a scratch directory");
    for entry in std::fs::read_dir(&from).expect("the fixture") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("a name"))).expect("copy");
        }
    }
    dir
}

/// `topic`'s records, read until one with the id `last` (60 s at most).
async fn read_until_id(bootstrap: &str, topic: &str, last: &str) -> Vec<kafka::Received> {
    let (bootstrap, topic, last) = (bootstrap.to_owned(), topic.to_owned(), last.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        kafka::scan(&bootstrap, &topic, Duration::from_secs(60), |record| {
            records.push(record.clone());
            record.json()["id"] == last.as_str()
        });
        records
    })
    .await
    .expect("reader")
}

/// `tests/fixtures/spool-2026-12-05` (its README says how it was made): five webhooks, the
/// first two forwarded before Kafka froze, the cursor at 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_spooled_by_the_release_of_2026_12_05_is_forwarded_by_this_one() {
    let broker = Tansu::start();
    let dir = fixture_copy("spool-2026-12-05");
    let app = spawn_app_with(&broker.bootstrap(), |s| {
        s.spool.enabled = true;
        s.spool.dir = dir.path().to_owned();
        s.kafka.topic_prefix = "qminder".into();
    })
    .await;
    let expected = [
        (
            "qminder.ticket_created",
            "4fe7b980f38c077abbb2b92b60ef8c0d91e8f8753d5e1e2622f46da0d1a85588",
            r#""data":{"id":102,"firstName":"Ülle","line":7}"#,
        ),
        (
            "qminder.ticket_served",
            "a3a3b63b0252ee08982f9c903a706177efdeb37ead129ad5a1455bb0e6c030f9",
            r#""data":{"id":"101","served":{"date":"2026-12-05T10:05:00Z"}}"#,
        ),
        (
            "qminder.unknown",
            "98c85b971f121480ebed4c94dceadd00a4282610943862553971b55064b0dfcd",
            r#""data":{"id":"9"}"#,
        ),
    ];
    for (topic, id, data) in expected {
        // Each topic holds the one record it should, and nothing before it: the first
        // ticket_created (sequence 0) went out under the earlier release, not again.
        let records = read_until_id(&broker.bootstrap(), topic, id).await;
        let ids: Vec<_> = records.iter().map(|r| r.json()["id"].clone()).collect();
        assert_eq!(ids, vec![id], "{topic}");
        assert!(
            records[0].value_str().contains(data),
            "{}",
            records[0].value_str()
        );
    }
    app.wait_for_metric("qminder_bridge_spool_events", 0.0, Duration::from_secs(30))
        .await;
    let called = vec!["qminder.ticket_called".to_owned()];
    assert_eq!(kafka::count(&broker.bootstrap(), &called), 0, "sent again");
    app.stop().await;
    let format = std::fs::read_to_string(dir.path().join("format")).expect("a format file");
    assert_eq!(format, "qminder-bridge spool format 1\n");
}

/// A downgrade with a backlog (a format this release does not know), or a `format` file
/// edited by hand: the bridge does not start, says why and what to do, and touches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_in_a_format_this_release_cannot_read_is_refused_with_what_to_do() {
    let cases = [
        (
            "qminder-bridge spool format 2\n",
            "written by a newer release",
        ),
        (
            "qminder-bridge spool format one\n",
            "not a spool format file",
        ),
        ("", "not a spool format file"),
    ];
    for (format, said) in cases {
        let dir = fixture_copy("spool-2026-12-05");
        std::fs::write(dir.path().join("format"), format).expect("write");
        let segment = dir.path().join("00000000000000000000.seg");
        let before = std::fs::read(&segment).expect("read");
        let mut settings = test_settings(broker::shared());
        settings.spool.enabled = true;
        settings.spool.dir = dir.path().to_owned();
        let error = Application::build(settings, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{format:?} was accepted"))
            .to_string();
        assert!(error.contains(said), "{format:?}: {error}");
        assert_eq!(std::fs::read(&segment).expect("read"), before, "{format:?}");
    }
}
