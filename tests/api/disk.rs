//! The spool's own disk fills (issue 20, row 1): on a 4 MiB tmpfs, with Kafka frozen until
//! the spool refuses, then Kafka back. Every 202 must reach Kafka, the space come back, and
//! the bridge be ready and answer 202 again within 30 s, with no restart. The tmpfs is
//! mounted by the test (it runs as root here and in CI); a test that cannot make its fault
//! fails, it never skips.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::broker::Tansu;
use crate::helpers::kafka;
use crate::helpers::spawn_app_with;

/// A tmpfs of a given size, mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root, or CAP_SYS_ADMIN): {status}"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let stat = rustix::fs::statvfs(self.dir.path()).expect("statvfs");
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn ticket(i: usize) -> String {
    let pad = "p".repeat(2000);
    format!(r#"{{"type":"ticket_created","data":{{"id":"{i}","note":"{pad}"}}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_filled_to_enospc_serves_again_within_30_s_of_kafka_coming_back() {
    let _timed = crate::helpers::HEAVY.read().await;
    let disk = SmallDisk::mount(4 * 1024 * 1024);
    let broker = Tansu::start();
    let app = spawn_app_with(&broker.bootstrap(), |s| {
        s.spool.enabled = true;
        s.spool.dir = disk.path().join("spool");
        // Half the disk: the active segment is the one the disk fills in (a segment larger
        // than the whole disk is refused at start).
        s.spool.segment_bytes = 2 * 1024 * 1024;
        s.kafka.delivery_timeout_ms = 1500;
        s.server.request_timeout_ms = 3000;
        s.server.shutdown_timeout_ms = 5000;
    })
    .await;
    broker.freeze();
    let mut acknowledged = HashSet::new();
    let mut refused = 0;
    for i in 0..10_000 {
        let response = app.post_signed(&ticket(i)).await;
        match response.status().as_u16() {
            202 => {
                let ack: Value = response.json().await.expect("ack");
                acknowledged.insert(ack["id"].as_str().expect("id").to_owned());
            }
            503 => {
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("answered {other}"),
        }
    }
    assert_eq!(refused, 3, "the spool never refused");
    assert!(
        disk.free() < 64 * 1024,
        "the disk did not fill: {} free",
        disk.free()
    );
    println!("disk full after {} events spooled", acknowledged.len());

    broker.thaw();
    let thawed = Instant::now();
    // Webhooks keep coming while it recovers (nothing routes them by /readyz in compose),
    // one every 200 ms: recovery must not need a quiet moment.
    let deadline = thawed + Duration::from_secs(30);
    let mut i = 20_000;
    loop {
        let ready = app.readyz().await == 200;
        let free = disk.free();
        let response = app.post_signed(&ticket(i)).await;
        i += 1;
        let status = response.status().as_u16();
        if status == 202 {
            let ack: Value = response.json().await.expect("ack");
            acknowledged.insert(ack["id"].as_str().expect("id").to_owned());
        }
        if ready && status == 202 && free > 2 * 1024 * 1024 {
            println!(
                "serving again {:.1} s after Kafka came back, {} KiB free",
                thawed.elapsed().as_secs_f64(),
                free / 1024
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after Kafka came back: /readyz {ready}, a new event {status}, {free} bytes free"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let topic = app.topic("ticket_created");
    kafka::wait_for_ids(
        &app.bootstrap,
        &topic,
        &acknowledged,
        Duration::from_secs(30),
    )
    .await;
    app.stop().await;
}

#[test]
fn the_spool_cursor_moves_on_a_full_disk() {
    // Issue 20, row 1: the cursor was written beside and renamed, which needs a free block.
    use qminder_bridge::delivery::spool::cursor::Cursor;
    let disk = SmallDisk::mount(256 * 1024);
    let cursor = Cursor::new(disk.path());
    cursor.store(1).expect("the first store makes the file");
    fill(&disk);
    cursor
        .store(2)
        .expect("moving the cursor needs no free block");
    assert_eq!(cursor.load().expect("a cursor"), 2);
}

/// Issue 20, item 2: `spool.max_bytes` is checked against the filesystem (statvfs) at
/// start: more than it can hold is a warning; less than one segment of room is refused,
/// saying what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_larger_than_its_filesystem_is_warned_about_and_one_without_room_for_a_segment_refused()
 {
    use qminder_bridge::delivery::spool::room::{Room, check};
    let disk = SmallDisk::mount(1024 * 1024);
    let room = check(disk.path(), 1 << 30, 64 * 1024, 0).expect("statvfs");
    assert!(
        matches!(room, Room::Short { room_bytes } if room_bytes <= 1024 * 1024),
        "{room:?}"
    );
    assert_eq!(
        check(disk.path(), 512 * 1024, 64 * 1024, 0).expect("statvfs"),
        Room::Enough
    );
    let room = check(disk.path(), 1 << 30, 4 * 1024 * 1024, 0).expect("statvfs");
    assert!(matches!(room, Room::TooSmall { .. }), "{room:?}");

    let broker = crate::helpers::broker::shared();
    let mut settings = crate::helpers::app::test_settings(broker);
    settings.spool.enabled = true;
    settings.spool.dir = disk.path().join("spool");
    settings.spool.segment_bytes = 4 * 1024 * 1024;
    settings.spool.max_bytes = 64 * 1024 * 1024;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let failed = qminder_bridge::startup::Application::build_on(settings, listener).await;
    let Err(error) = failed else {
        panic!("a spool without room for a segment was opened");
    };
    let error = error.to_string();
    assert!(
        error.contains("room for less than one segment") && error.contains("spool.segment_bytes"),
        "{error}"
    );
}

/// Fills `disk` to its last block with a file of its own (removed by the caller).
fn fill(disk: &SmallDisk) -> std::path::PathBuf {
    use std::io::Write;
    let path = disk.path().join("filler");
    let mut filler = std::fs::File::create(&path).expect("a file");
    let block = vec![0u8; 4096];
    while filler
        .write_all(&block)
        .and_then(|()| filler.sync_data())
        .is_ok()
    {}
    assert!(
        disk.free() < 4096,
        "the disk did not fill: {} free",
        disk.free()
    );
    path
}

/// Issue 20, item 2: recovery needs no free space. A spool holding a damaged record, on a
/// disk that filled to the last block while the bridge was down, starts, forwards every
/// intact record around the damage, and keeps the damaged bytes in their segment until
/// there is room to park them; then the segment goes. (Before: recovery rewrote the
/// damaged segment whole, which failed with ENOSPC, so the bridge could not start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_on_a_full_disk_starts_forwards_around_the_damage_and_parks_it_once_there_is_room()
 {
    let disk = SmallDisk::mount(1024 * 1024);
    let spool = disk.path().join("spool");
    let with_spool = |s: &mut qminder_bridge::config::Settings| {
        s.spool.enabled = true;
        s.spool.dir = spool.clone();
        s.spool.segment_bytes = 64 * 1024;
        s.spool.max_bytes = 512 * 1024;
        s.server.max_body_bytes = 8 * 1024;
    };
    // 33 events of 2 KiB with Kafka away: segment 0 (sealed, 64 KiB) and a short segment 1.
    let nowhere = crate::helpers::broker::DeadAddress::new();
    let app = spawn_app_with(nowhere.as_str(), with_spool).await;
    let prefix = app.prefix().to_owned();
    let mut acknowledged = HashSet::new();
    for i in 0..33 {
        let response = app.post_signed(&ticket(i)).await;
        assert_eq!(response.status(), 202);
        let ack: Value = response.json().await.expect("ack");
        acknowledged.insert(ack["id"].as_str().expect("id").to_owned());
    }
    app.stop().await;
    let sealed = spool.join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&sealed).expect("segment 0");
    assert!(bytes.len() >= 64 * 1024, "segment 0 is sealed");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&sealed, &bytes).expect("a flipped bit");
    let filler = fill(&disk);

    let broker = Tansu::start();
    let app = spawn_app_with(&broker.bootstrap(), |s| {
        with_spool(s);
        s.kafka.topic_prefix = prefix;
    })
    .await;
    let topic = app.topic("ticket_created");
    let (b, t) = (broker.bootstrap(), topic.clone());
    let forwarded = tokio::task::spawn_blocking(move || {
        let mut ids = HashSet::new();
        kafka::scan(&b, &t, Duration::from_secs(60), |r| {
            ids.insert(r.json()["id"].as_str().expect("id").to_owned());
            ids.len() == 32
        });
        ids
    })
    .await
    .expect("reader");
    assert!(forwarded.is_subset(&acknowledged));
    assert!(sealed.exists(), "segment 0 went before its damage was kept");
    assert!(!spool.join("parked").exists() || parked_damage(&spool).is_empty());

    std::fs::remove_file(filler).expect("room again");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sealed.exists() || parked_damage(&spool).len() != 1 {
        assert!(Instant::now() < deadline, "the damage was never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// The damaged stretches parked in `spool/parked`.
fn parked_damage(spool: &Path) -> Vec<String> {
    std::fs::read_dir(spool.join("parked"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("damaged-"))
                .collect()
        })
        .unwrap_or_default()
}
