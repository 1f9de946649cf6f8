//! The log on its own: durability across restarts, the cursor, torn tails, re-sends,
//! reclaim, capacity and parking.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_acknowledged_events_across_a_restart_and_forwards_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    assert_eq!(append(&spool, ids(0..5)).await, vec![0, 1, 2, 3, 4]);
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);

    let kafka = Arc::new(FakeKafka::default());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    assert_eq!(kafka.wait_for(5).await, ids(0..5));
    assert_eq!(m.spool.replayed.get(), 5);
    // New events continue the numbering.
    assert_eq!(append(&spool, ids(5..7)).await, vec![5, 6]);
    assert_eq!(kafka.wait_for(7).await, ids(0..7));
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_the_cursor_so_a_restart_forwards_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    append(&spool, ids(0..40)).await;
    assert_eq!(kafka.wait_for(40).await, ids(0..40));
    // The cursor is stored right after the ack is counted; wait for the file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Cursor::new(dir.path()).load().unwrap() != 40 {
        assert!(Instant::now() < deadline, "cursor never reached 40");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.spool.forwarded.get(), 40);
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);

    let again = Arc::new(FakeKafka::default());
    let m = metrics();
    let (spool, tasks) =
        Spool::start(&settings(dir.path()), again.clone(), ready(), &m, QUEUE).unwrap();
    append(&spool, ids(40..41)).await;
    assert_eq!(again.wait_for(1).await, ids(40..41));
    assert_eq!(m.spool.replayed.get(), 0);
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discards_a_torn_last_record_counts_it_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    append(&spool, ids(0..3)).await;
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);
    // A crash in the middle of writing a fourth frame: a header and part of its payload.
    let segment = log::segment_path(dir.path(), 0);
    let mut torn = frame::header(&[7u8; 300]).to_vec();
    torn.extend_from_slice(&[7u8; 120]);
    let mut bytes = std::fs::read(&segment).unwrap();
    let intact = bytes.len();
    bytes.extend_from_slice(&torn);
    std::fs::write(&segment, bytes).unwrap();

    let kafka = Arc::new(FakeKafka::default());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    assert_eq!(m.spool.torn_records.get(), 1);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), intact as u64);
    assert_eq!(append(&spool, ids(3..4)).await, vec![3]);
    assert_eq!(kafka.wait_for(4).await, ids(0..4));
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sends_from_the_first_failed_record_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    kafka.fail_once.lock().unwrap().insert("e2".into());
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    append(&spool, ids(0..6)).await;
    kafka.down.store(false, Ordering::SeqCst);
    // e2 fails once: the forwarder re-sends from e2, so records after it in that batch may
    // arrive twice. Nothing is lost, and the last copies are in spool order.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Cursor::new(dir.path()).load().unwrap() != 6 {
        assert!(
            Instant::now() < deadline,
            "cursor never reached 6: {:?}",
            kafka.got()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = kafka.got();
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 6, "{got:?}");
    let mut last_copies: Vec<&String> = Vec::new();
    for (i, id) in got.iter().enumerate() {
        if !got[i + 1..].contains(id) {
            last_copies.push(id);
        }
    }
    assert_eq!(last_copies, ids(0..6).iter().collect::<Vec<_>>(), "{got:?}");
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_forwarded_segments_and_never_the_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let m = metrics();
    let mut s = settings(dir.path());
    s.segment_bytes = 1024;
    let (spool, tasks) = Spool::start(&s, kafka.clone(), ready(), &m, QUEUE).unwrap();
    append(&spool, ids(0..60)).await;
    assert_eq!(kafka.wait_for(60).await, ids(0..60));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        if segments == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{segments} segments left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(append(&spool, ids(60..61)).await, vec![60]);
    assert_eq!(kafka.wait_for(61).await, ids(0..61));
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_events_beyond_max_bytes_until_forwarding_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    let mut s = settings(dir.path());
    s.max_bytes = 2000;
    s.segment_bytes = 1000;
    let (spool, tasks) = Spool::start(&s, kafka.clone(), ready(), &metrics(), QUEUE).unwrap();
    let mut accepted = 0;
    let mut full = false;
    for id in ids(0..30) {
        match spool.deliver(&record(&id)).await {
            Ok(_) => accepted += 1,
            Err(DeliveryError::SpoolFull) => {
                full = true;
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(full && accepted > 0, "accepted {accepted}");
    assert!(
        !spool.is_healthy(),
        "a full spool is not healthy (readiness)"
    );
    kafka.down.store(false, Ordering::SeqCst);
    let accepted_ids = ids(0..u32::try_from(accepted).unwrap());
    assert_eq!(kafka.wait_for(accepted).await, accepted_ids);
    // Forwarded segments are deleted, so there is room again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match spool.deliver(&record("after")).await {
            Ok(_) => break,
            Err(DeliveryError::SpoolFull) => {
                assert!(Instant::now() < deadline, "never room again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(spool.is_healthy(), "healthy again once there is room");
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parks_an_event_kafka_refuses_outright_and_forwards_the_ones_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.unacceptable.lock().unwrap().insert("e2".into());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    assert_eq!(append(&spool, ids(0..5)).await, vec![0, 1, 2, 3, 4]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.spool.parked.get() == 0 {
        assert!(Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything else reaches Kafka, in order (e3 and e4 maybe twice: at-least-once).
    let mut first_seen: Vec<String> = Vec::new();
    while first_seen.len() < 4 {
        assert!(Instant::now() < deadline, "forwarded {:?}", kafka.got());
        first_seen = Vec::new();
        for id in kafka.got() {
            if !first_seen.contains(&id) {
                first_seen.push(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(first_seen, ["e0", "e1", "e3", "e4"]);
    let refusals = m
        .spool
        .forward_failures
        .with_label_values(&["too_large"])
        .get();
    assert_eq!(refusals, u64::from(forwarder::PARK_AFTER));
    // The parked event is kept whole on disk, for an operator.
    let path = dir.path().join("parked").join(format!("{:020}.frame", 2));
    let bytes = std::fs::read(&path).unwrap();
    let available = bytes.len() as u64;
    match frame::read(&mut bytes.as_slice(), available).unwrap() {
        frame::Outcome::Frame(parked, size) => {
            assert_eq!(size, available);
            assert_eq!(parked.seq, 2);
            assert_eq!(parked.id, "e2");
            assert_eq!(parked.value, record("e2").value.as_ref());
        }
        other => panic!("{other:?}"),
    }
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);

    // After a restart the parked event is not sent again, and new ones flow.
    kafka.unacceptable.lock().unwrap().clear();
    let before = kafka.got().len();
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    assert_eq!(append(&spool, ids(5..6)).await, vec![5]);
    let got = kafka.wait_for(before + 1).await;
    assert_eq!(got[before..], ["e5"]);
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_segment_left_by_a_failed_rotation_skips_no_record_after_a_restart() {
    // A rotation after record 4 created `5.seg`, then could not fsync the directory (EIO,
    // or no descriptor for it): the writer kept appending 5… to `0.seg`, and the empty
    // file stayed. Restarted with the cursor at 6, the forwarder took `5.seg` for the
    // segment holding 6: records 6–9, acknowledged, were skipped and their segment deleted.
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    append(&spool, ids(0..6)).await;
    kafka.wait_for(6).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Cursor::new(dir.path()).load().unwrap() != 6 {
        assert!(Instant::now() < deadline, "cursor never reached 6");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kafka.down.store(true, Ordering::SeqCst);
    append(&spool, ids(6..10)).await;
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);
    std::fs::write(log::segment_path(dir.path(), 5), b"").unwrap();

    let kafka = Arc::new(FakeKafka::default());
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    assert_eq!(append(&spool, ids(10..11)).await, vec![10]);
    assert_eq!(kafka.wait_for(5).await, ids(6..11));
    tasks.stop(Duration::from_secs(5)).await;
}
