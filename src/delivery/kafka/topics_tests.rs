//! Tests of `topics.rs`.

use super::*;

fn facts(rf: Option<usize>, min: Option<i64>, max: Option<u64>) -> TopicFacts {
    TopicFacts {
        name: "t".into(),
        partitions: Some(3),
        replication_factor: rf,
        min_insync_replicas: min,
        max_message_bytes: max,
    }
}

/// The broker probe creates the topics on the runtime that also serves the bridge's
/// other tasks (and, in the tests, the HTTP clients): while the broker does not answer,
/// that runtime must go on. (Before, librdkafka's blocking metadata request held the
/// thread for the whole timeout: a test's client, not polled meanwhile, got actix's
/// 408 for a request it had not yet written.)
#[tokio::test(flavor = "current_thread")]
async fn lets_the_runtime_run_while_it_waits_for_a_broker_that_does_not_answer() {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", "127.0.0.1:1");
    let topics = ["t".to_owned()];
    let ensured = ensure(&config, &topics, 1, 1, Duration::from_secs(2));
    let looked = inspect(&config, &topics, Duration::from_secs(2));
    tokio::select! {
        biased;
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
        _ = ensured => panic!("ensure held the runtime's thread for its whole wait"),
    }
    tokio::select! {
        biased;
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
        _ = looked => panic!("inspect held the runtime's thread for its whole wait"),
    }
}

#[test]
fn warns_only_where_one_lost_disk_could_lose_an_acknowledged_write() {
    assert!(facts(Some(3), Some(1), None).durability_warning().is_some());
    assert!(facts(Some(3), Some(2), None).durability_warning().is_none());
    assert!(facts(Some(1), Some(1), None).durability_warning().is_none());
    assert!(facts(Some(3), None, None).durability_warning().is_none());
}

#[test]
fn knows_the_record_limit_only_when_every_topic_told_it() {
    let told = [facts(None, None, Some(2000)), facts(None, None, Some(5000))];
    assert_eq!(record_limit(&told), Some(5000));
    let untold = [facts(None, None, Some(2000)), facts(None, None, None)];
    assert_eq!(record_limit(&untold), None);
    assert_eq!(min_insync_replicas(3), 2);
    assert_eq!(min_insync_replicas(1), 1);
}
