//! Issue 20, row 3: a topic Kafka cannot take for now holds up no other topic. Its records
//! are held aside (durably, in order), the others flow, and the held ones follow once the
//! topic can be written; a held topic takes at most its share of the spool.

use super::*;

const MISSING: &str = "qminder.ticket_teleported";

fn to_missing(id: &str) -> Record<'_> {
    Record {
        topic: MISSING,
        key: Some("9"),
        ..record(id)
    }
}

fn refuse_topic(kafka: &FakeKafka, error: DeliveryError) {
    let mut refusing = kafka.refusing_topics.lock().unwrap();
    refusing.insert(MISSING.into(), error);
}

/// A spool in `dir` whose Kafka refuses [`MISSING`] with `error`.
fn refusing(
    dir: &std::path::Path,
    error: DeliveryError,
) -> (Arc<FakeKafka>, Metrics, Spool, SpoolTasks) {
    let kafka = Arc::new(FakeKafka::default());
    refuse_topic(&kafka, error);
    let m = metrics();
    let (spool, tasks) = start(dir, &kafka, &m);
    (kafka, m, spool, tasks)
}

async fn spooled(spool: &Spool, record: &Record<'_>) {
    let outcome = spool.deliver(record).await;
    assert!(
        matches!(outcome, Ok(Delivered::Spooled { .. })),
        "{outcome:?}"
    );
}

fn held(m: &Metrics) -> i64 {
    m.spool.held_events.with_label_values(&[MISSING]).get()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_kafka_cannot_take_holds_up_no_other_topic_and_follows_in_order_once_it_can() {
    let dir = tempfile::tempdir().unwrap();
    // A broker that says nothing more than that the record timed out: the other topics'
    // acks in the same batch show the cause is the topic's.
    let (kafka, m, spool, tasks) = refusing(dir.path(), DeliveryError::Timeout);
    spooled(&spool, &to_missing("n0")).await;
    // Far more than one forward batch (16) behind it.
    append(&spool, ids(0..40)).await;
    let got = kafka.wait_for(40).await;
    assert_eq!(got, ids(0..40), "every other event, once, in order");
    spooled(&spool, &to_missing("n1")).await;
    until("both held", || held(&m) == 2).await;
    assert_eq!(m.spool.events.get(), 0, "nothing left in the log's backlog");

    kafka.refusing_topics.lock().unwrap().clear();
    until("the held events never followed", || held(&m) == 0).await;
    let got = kafka.got();
    assert_eq!(
        &got[40..],
        ["n0", "n1"],
        "held ones in order, after: {got:?}"
    );
    assert!(!dir.path().join("held").join(MISSING).exists());
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_kafka_says_it_refuses_is_held_even_with_nothing_else_to_compare() {
    let dir = tempfile::tempdir().unwrap();
    let refused = DeliveryError::TopicRefused("TopicAuthorizationFailed".into());
    let (_kafka, m, spool, tasks) = refusing(dir.path(), refused);
    spooled(&spool, &to_missing("n0")).await;
    until("never held", || held(&m) == 1).await;
    assert_eq!(m.spool.events.get(), 0);
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_survive_a_restart_and_go_out_once_the_topic_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (kafka, m, spool, tasks) = refusing(dir.path(), DeliveryError::Timeout);
    spooled(&spool, &to_missing("n0")).await;
    append(&spool, ids(0..3)).await;
    kafka.wait_for(3).await;
    until("never held", || held(&m) == 1).await;
    tasks.stop(Duration::from_secs(5)).await;
    drop(spool);

    kafka.refusing_topics.lock().unwrap().clear();
    let m = metrics();
    let (_spool, tasks) = start(dir.path(), &kafka, &m);
    let got = kafka.wait_for(4).await;
    assert_eq!(
        got,
        ["e0", "e1", "e2", "n0"],
        "the held one, and nothing twice"
    );
    until("still counted as held", || held(&m) == 0).await;
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_topic_takes_only_its_share_and_then_only_its_own_webhooks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Arc::new(FakeKafka::default());
    refuse_topic(&kafka, DeliveryError::Timeout);
    let m = metrics();
    let mut small = settings(dir.path());
    small.max_bytes = 128 * 1024;
    small.segment_bytes = 64 * 1024;
    let deliver: Arc<dyn Deliver> = kafka.clone();
    let (spool, tasks) = Spool::start(&small, deliver, ready(), &m, QUEUE).unwrap();
    // Four times the spool's size in all, half of it to the missing topic: unbounded, its
    // held (or parked) records would fill the spool and every webhook would get 503.
    let (mut kept, mut refused) = (0u64, 0u64);
    for round in 0..400u32 {
        let id = format!("n{round}");
        match spool.deliver(&to_missing(&id)).await {
            Ok(Delivered::Spooled { .. }) => kept += 1,
            Err(DeliveryError::SpoolFull) => refused += 1,
            other => panic!("{other:?}"),
        }
        // Every other topic's webhook is taken, throughout (at the pace Kafka takes them).
        append(&spool, [format!("e{round}")]).await;
        kafka.wait_for(round as usize + 1).await;
    }
    kafka.wait_for(400).await;
    assert!(refused > 0, "the missing topic was never refused");
    let share = small.max_bytes / 4;
    let held_bytes = m.spool.held_bytes.get() as u64;
    assert!(
        held_bytes > 0 && held_bytes <= share,
        "held {held_bytes} bytes, share {share}"
    );
    until("some acknowledged event neither held nor parked", || {
        m.spool.parked.get() + held(&m) as u64 == kept
    })
    .await;
    tasks.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_held_file_is_parked_and_counted_not_left_unseen() {
    // A held record is an acknowledged event. One whose file is no longer an intact frame
    // (a flipped bit) goes where damaged segment bytes go: parked, counted, alerted on.
    let dir = tempfile::tempdir().unwrap();
    let lane = dir.path().join("held").join(MISSING);
    std::fs::create_dir_all(&lane).unwrap();
    let file = lane.join(format!("{:020}.frame", 5));
    std::fs::write(&file, b"not an intact frame any more").unwrap();
    let kafka = Arc::new(FakeKafka::default());
    let m = metrics();
    let (_spool, tasks) = start(dir.path(), &kafka, &m);
    assert!(
        !file.exists(),
        "left in held/, where nothing would ever read it"
    );
    let parked = dir
        .path()
        .join("parked")
        .join(format!("damaged-held-{MISSING}-{:020}.bin", 5));
    assert_eq!(
        std::fs::read(&parked).unwrap(),
        b"not an intact frame any more"
    );
    assert_eq!(m.spool.parked.get(), 1);
    let listed = inspect::parked(dir.path()).unwrap();
    assert!(matches!(
        listed[..],
        [inspect::ParkedItem {
            kind: inspect::ParkedKind::Damaged,
            ..
        }]
    ));
    tasks.stop(Duration::from_secs(5)).await;
}
