//! The spool's own disk failing or misused: a writer behind, failed writes, damage,
//! slow fsyncs, file modes, a deleted cursor, health coming back, parked bytes.

use super::*;
use crate::delivery::spool::log::Cut;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_appends_at_once_while_the_writer_is_behind_and_holds_no_more_than_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    let queue = 2;
    let (spool, tasks) = Spool::start(
        &settings(dir.path()),
        kafka.clone(),
        ready(),
        &metrics(),
        queue,
    )
    .unwrap();
    // Holding the log's state stalls the writer at its next batch, as a slow disk would:
    // it can have taken at most 1 + `queue` appends, and `queue` more wait in line.
    let stalled = spool.inner.shared.lock();
    let ids = ids(0..u32::try_from(2 * queue + 2).unwrap());
    let pending: Vec<_> = ids.iter().map(|id| spool.deliver(&record(id))).collect();
    drop(stalled);
    let results = futures_util::future::join_all(pending).await;
    let refused = results
        .iter()
        .filter(
            |r| matches!(r, Err(DeliveryError::SpoolUnavailable(why)) if why.contains("behind")),
        )
        .count();
    let spooled = results
        .iter()
        .filter(|r| matches!(r, Ok(Delivered::Spooled { .. })))
        .count();
    assert!(refused >= 1, "{results:?}");
    assert_eq!(refused + spooled, results.len(), "{results:?}");
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_a_fresh_segment_once_a_failed_write_could_not_be_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    assert_eq!(append(&spool, ids(0..1)).await, vec![0]);
    // What the writer records when a write failed and truncating it failed too.
    spool.inner.shared.lock().write_failed(Cut::Failed, 1);
    assert_eq!(append(&spool, ids(1..2)).await, vec![1]);
    assert!(!spool.inner.shared.lock().active_damaged());
    let firsts: Vec<u64> = spool
        .inner
        .shared
        .lock()
        .segments()
        .keys()
        .copied()
        .collect();
    assert!(
        firsts.contains(&1),
        "e1 opened a segment of its own: {firsts:?}"
    );
    assert_eq!(kafka.wait_for(2).await, ids(0..2));
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_records_around_one_damaged_on_disk_and_parks_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    assert_eq!(append(&spool, ids(0..3)).await, vec![0, 1, 2]);
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);
    // Flip a byte in the middle of the second record's value, as a bad block would.
    let segment = log::segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let third = bytes.len() / 3;
    bytes[third + third / 2] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();

    let kafka = Arc::new(FakeKafka::default());
    let m = metrics();
    let (spool, tasks) = start(dir.path(), &kafka, &m);
    assert_eq!(kafka.wait_for(2).await, ["e0", "e2"]);
    assert_eq!(m.spool.parked.get(), 1);
    assert_eq!(m.spool.torn_records.get(), 0);
    let parked: Vec<_> = std::fs::read_dir(dir.path().join("parked"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(parked.len(), 1);
    assert!(parked[0].starts_with("damaged-"), "{parked:?}");
    // New records go on after the highest intact one.
    assert_eq!(append(&spool, ids(3..4)).await, vec![3]);
    assert_eq!(kafka.wait_for(3).await, ["e0", "e2", "e3"]);
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_disk_does_not_confirm_in_time_is_a_spool_timeout_bounded_by_its_own_setting() {
    let dir = tempfile::tempdir().unwrap();
    let kafka: Arc<dyn Deliver> = Arc::new(FakeKafka::default());
    let mut settings = settings(dir.path());
    settings.write_timeout_ms = 200;
    let (spool, tasks) = Spool::start(&settings, kafka, ready(), &metrics(), QUEUE).unwrap();
    // Holding the log's state stalls the writer, as a disk that does not answer would.
    let shared = Arc::clone(&spool.inner.shared);
    let (held, holding) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _stalled = shared.lock();
        held.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    });
    holding.recv().unwrap();
    let started = Instant::now();
    let outcome = spool.deliver(&record("e0")).await;
    let waited = started.elapsed();
    holder.join().unwrap();
    assert_eq!(outcome, Err(DeliveryError::SpoolTimeout));
    assert_eq!(outcome.unwrap_err().reason(), "spool_timeout");
    assert!(
        waited < Duration::from_secs(3),
        "bounded by spool.write_timeout_ms: {waited:?}"
    );
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_files_are_private_whatever_the_umask() {
    // Issue 20, row 9: segments, the cursor and parked records hold personal data.
    use std::os::unix::fs::PermissionsExt;
    let _umask = crate::hardening::UMASK_TESTS.lock().await;
    let before = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let kafka = Arc::new(FakeKafka::default());
    kafka.unacceptable.lock().unwrap().insert("e1".into());
    let m = metrics();
    let (spool, tasks) = start(&dir, &kafka, &m);
    assert_eq!(append(&spool, ids(0..3)).await, vec![0, 1, 2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.spool.parked.get() == 0 {
        assert!(Instant::now() < deadline, "e1 was never parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tasks.stop(Duration::from_secs(5)).await;
    rustix::process::umask(before);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the spool directory");
    assert_eq!(mode(&dir.join("parked")), 0o700, "parked/");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("parked")).unwrap())
    {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(files >= 3, "a segment, the cursor and a parked record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cursor_never_loses_the_events_spooled_after_it() {
    // Issue 20, row 6, end to end: an empty last segment named 26 and no cursor.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(log::segment_path(dir.path(), 26), b"").unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.down.store(true, Ordering::SeqCst);
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    assert_eq!(append(&spool, ids(0..3)).await, vec![26, 27, 28]);
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);
    let kafka = Arc::new(FakeKafka::default());
    let (_spool, tasks) = start(dir.path(), &kafka, &metrics());
    assert_eq!(kafka.wait_for(3).await, ids(0..3));
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_comes_back_by_itself_once_the_disk_works_again() {
    // Issue 20, row 2: after one failed write the spool stayed unhealthy (and the pod not
    // ready, so no append ever came to prove it well) until a restart.
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    spool.inner.shared.failing_writes.store(1, Ordering::SeqCst);
    let failed = spool.deliver(&record("e0")).await;
    assert!(
        matches!(failed, Err(DeliveryError::SpoolUnavailable(_))),
        "{failed:?}"
    );
    assert!(!spool.is_healthy());
    let deadline = Instant::now() + writer::TICK * 5;
    while !spool.is_healthy() {
        assert!(Instant::now() < deadline, "still unhealthy with no appends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(append(&spool, ids(1..2)).await, vec![0]);
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_keeps_failing_never_makes_the_ones_kafka_took_go_out_again() {
    // Issue 20, row 3, in part: one event of a new type whose topic is missing, then five
    // others, became 25 records, everything behind the stuck one sent again on each retry.
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.failing.lock().unwrap().insert("n0".into(), 4);
    let (spool, tasks) = start(dir.path(), &kafka, &metrics());
    let stuck = Record {
        topic: "qminder.ticket_teleported",
        ..record("n0")
    };
    let others = ids(0..5);
    let mut pending = vec![spool.deliver(&stuck)];
    for (i, id) in others.iter().enumerate() {
        let mut r = record(id);
        r.key = Some(["1", "2", "3", "4", "5"][i]);
        pending.push(spool.deliver(&r));
    }
    for outcome in futures_util::future::join_all(pending).await {
        assert!(
            matches!(outcome, Ok(Delivered::Spooled { .. })),
            "{outcome:?}"
        );
    }
    // n0 goes through last: every send of the batch it is in was made by then.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kafka.got().contains(&"n0".to_owned()) {
        assert!(Instant::now() < deadline, "n0 never went through");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got = kafka.got();
    got.sort();
    let mut want = others.clone();
    want.push("n0".into());
    want.sort();
    assert_eq!(got, want, "each event once");
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_records_count_towards_max_bytes() {
    // Issue 20, item 2: parked/ is on the same disk; it must not let the spool outgrow it.
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    kafka.unacceptable.lock().unwrap().insert("big0".into());
    let m = metrics();
    let mut small = settings(dir.path());
    small.max_bytes = 200 * 1024;
    small.segment_bytes = 64 * 1024;
    let deliver: Arc<dyn Deliver> = kafka.clone();
    let (spool, tasks) = Spool::start(&small, deliver, ready(), &m, QUEUE).unwrap();
    let big = |id: &'static str| Record {
        value: Cow::Owned(vec![b'x'; 120 * 1024]),
        ..record(id)
    };
    assert!(matches!(
        spool.deliver(&big("big0")).await,
        Ok(Delivered::Spooled { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Parked, and its segment rolled and deleted: only the parked copy is left.
    while m.spool.parked.get() == 0 || spool.inner.shared.lock().segment_bytes() > 0 {
        assert!(Instant::now() < deadline, "never parked and reclaimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = spool.deliver(&big("big1")).await;
    assert!(
        matches!(refused, Err(DeliveryError::SpoolFull)),
        "120 KiB parked + 120 KiB > 200 KiB: {refused:?}"
    );
    assert!(
        m.spool.bytes.get() >= 120 * 1024,
        "spool_bytes shows the parked bytes"
    );
    tasks.stop(Duration::from_secs(5)).await;
}
