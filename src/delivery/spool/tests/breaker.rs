//! Issue 20, row 4: parking has a breaker. When Kafka refuses many distinct records with
//! the same final error, the cause is the cluster (clock skew, a lowered limit), not the
//! records: nothing more is parked, the stream waits, and it resumes in order once the
//! refusal stops. Parking keeps its meaning for the one bad record.

use super::*;

fn skewed() -> DeliveryError {
    DeliveryError::Unacceptable("Broker: Invalid timestamp".into())
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn failures(m: &Metrics) -> u64 {
    m.spool
        .forward_failures
        .with_label_values(&["unacceptable"])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_every_record_parks_none_and_the_stream_resumes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    *kafka.refusing_all.lock().unwrap() = Some(skewed());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    append(&spool, ids(0..10)).await;
    // Long enough for every record to have been parked a few times over, one by one.
    until("too few attempts", Duration::from_secs(10), || {
        failures(&m) >= 10 * u64::from(forwarder::PARK_AFTER) + 10
    })
    .await;
    assert_eq!(
        m.spool.parked.get(),
        0,
        "parked while the cluster refuses all"
    );
    assert_eq!(m.spool.park_breaker_open.get(), 1);

    *kafka.refusing_all.lock().unwrap() = None;
    assert_eq!(kafka.wait_for(10).await, ids(0..10), "all, in order, once");
    until("the breaker stayed open", Duration::from_secs(5), || {
        m.spool.park_breaker_open.get() == 0
    })
    .await;
    assert_eq!(m.spool.parked.get(), 0);
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_refused_records_stops_being_parked_after_a_few() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    *kafka.refusing_all.lock().unwrap() = Some(skewed());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    // One at a time: each alone in its attempt, so only the history can tell.
    for i in 0..6u32 {
        let parked = m.spool.parked.get();
        append(&spool, ids(i..i + 1)).await;
        until(
            "neither parked nor stopped",
            Duration::from_secs(10),
            || m.spool.parked.get() > parked || m.spool.park_breaker_open.get() == 1,
        )
        .await;
    }
    let parked = m.spool.parked.get();
    assert!(
        parked <= u64::from(forwarder::BREAKER_AFTER),
        "parked {parked} of 6"
    );
    assert_eq!(m.spool.park_breaker_open.get(), 1);
    *kafka.refusing_all.lock().unwrap() = None;
    kafka.wait_for(6 - parked as usize).await;
    tasks.stop(Duration::from_secs(5)).await;
}
