//! Attacks by clients that hold no secret, against the real binary on tansu, each with 20
//! genuine signed deliveries sent while it lasts: the door stays open for Qminder, and the
//! bridge's peak RSS (`VmHWM` in `/proc/PID/status`) stays below the shipped pod limit.
//! docs/security.md's "attacks tried" table points here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::process::BridgeProcess;
use crate::helpers::{PATH, broker};

/// The memory limit of the shipped Kubernetes pod (deploy/kubernetes/base/statefulset.yaml).
const POD_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
/// A well-formed signature that matches nothing.
const WRONG_SIGNATURE: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An attack running in the background until dropped, and what it managed.
pub(super) struct Attack {
    pub(super) stop: Arc<AtomicBool>,
    /// Requests the attack began (head sent).
    pub(super) started: Arc<AtomicU64>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attack {
    /// `connections` clients, each in a loop: connect, send a POST head declaring
    /// `length` bytes with a wrong signature, then the body `chunk` bytes at a time every
    /// `every`, until the bridge closes the connection; then again. They come from
    /// [`ATTACKERS`] addresses, as a botnet would; Qminder's deliveries from 127.0.0.1.
    fn start(
        address: &str,
        connections: usize,
        length: usize,
        chunk: usize,
        every: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let host = address.trim_start_matches("http://").to_owned();
        let tasks = (0..connections)
            .map(|i| {
                let (stop, started, host) = (Arc::clone(&stop), Arc::clone(&started), host.clone());
                tokio::spawn(async move {
                    let from = attacker(i);
                    while !stop.load(Ordering::Relaxed) {
                        let _ =
                            one_request(&host, from, length, chunk, every, &started, &stop).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            started,
            tasks,
        }
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// How many client addresses an attack comes from.
const ATTACKERS: usize = 64;

/// The address attacking connection `i` comes from: one of 127.0.1.1 ..= 127.0.1.64 (the
/// whole of 127/8 is the loopback interface's on Linux).
pub(super) fn attacker(i: usize) -> IpAddr {
    let host = u8::try_from(i % ATTACKERS + 1).expect("under 256");
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, host))
}

/// A TCP connection to `host` (`ip:port`) from the address `from`.
pub(super) async fn connect_from(host: &str, from: IpAddr) -> std::io::Result<TcpStream> {
    let to: SocketAddr = host.parse().map_err(std::io::Error::other)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

async fn one_request(
    host: &str,
    from: IpAddr,
    length: usize,
    chunk: usize,
    every: Duration,
    started: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut stream = connect_from(host, from).await?;
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         X-Qminder-Signature: {WRONG_SIGNATURE}\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    started.fetch_add(1, Ordering::Relaxed);
    let body = vec![b'a'; chunk];
    let mut sent = 0;
    let mut answer = [0u8; 512];
    while sent < length && !stop.load(Ordering::Relaxed) {
        let n = chunk.min(length - sent);
        stream.write_all(&body[..n]).await?;
        sent += n;
        if !every.is_zero() {
            // Wait for the next drip, or for the bridge to answer and close.
            if let Ok(read) = tokio::time::timeout(every, stream.read(&mut answer)).await {
                return read.map(|_| ());
            }
        }
    }
    // Whole body sent: read the answer (401 expected) so the connection ends cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await;
    Ok(())
}

/// Waits until the attack has begun at least `n` requests.
pub(super) async fn wait_started(attack: &Attack, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while attack.started() < n {
        assert!(
            Instant::now() < deadline,
            "the attack never got {n} requests going (only {})",
            attack.started()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends 20 signed deliveries one after another, `gap` apart; their statuses.
async fn twenty_genuine(bridge: &BridgeProcess, gap: Duration) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..20 {
        let body = format!(
            r#"{{"type":"ticket_created","data":{{"id":"g{i}","line":1,"created":{{"date":"2020-05-25T00:00:00Z"}}}}}}"#
        );
        let answer = tokio::time::timeout(Duration::from_secs(15), bridge.post_signed(&body)).await;
        statuses.push(answer.map_or(0, |(status, _)| status));
        tokio::time::sleep(gap).await;
    }
    statuses
}

/// What came of an attack: the 20 genuine deliveries' statuses, the bridge's peak RSS,
/// and how many requests the attack began.
pub(super) struct Outcome {
    pub(super) statuses: Vec<u16>,
    pub(super) peak: u64,
    pub(super) begun: u64,
}

/// Twenty genuine deliveries `gap` apart while `attack` goes on; then it is stopped and the
/// outcome reported.
pub(super) async fn genuine_during(
    bridge: &BridgeProcess,
    attack: Attack,
    gap: Duration,
) -> Outcome {
    let statuses = twenty_genuine(bridge, gap).await;
    let peak = bridge.peak_rss_bytes();
    let begun = attack.started();
    attack.stop().await;
    report(&statuses, peak, begun);
    Outcome {
        statuses,
        peak,
        begun,
    }
}

/// What the attack tests print (docs/security.md quotes them).
fn report(statuses: &[u16], peak: u64, begun: u64) {
    eprintln!(
        "{} of 20 genuine deliveries answered 200 ({statuses:?}); peak RSS {} MiB; {begun} attack requests begun",
        ok_count(statuses),
        peak / (1024 * 1024)
    );
}

/// Every genuine delivery was answered 200.
pub(super) fn all_answered_200(statuses: &[u16]) {
    assert_eq!(
        ok_count(statuses),
        20,
        "answers during the attack: {statuses:?}"
    );
}

fn ok_count(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| **s == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unsigned_bodies_on_as_many_connections_as_max_in_flight_do_not_keep_out_signed_deliveries()
 {
    let _alone = crate::helpers::HEAVY.write().await;
    let bridge = BridgeProcess::start(broker::shared(), |s| s.server.max_in_flight = 16);
    bridge.wait_ready(Duration::from_secs(30)).await;
    // 16 connections, each dripping a 1,000-byte body at 1 byte a second.
    let attack = Attack::start(&bridge.address, 16, 1000, 1, Duration::from_secs(1));
    wait_started(&attack, 16).await;
    let Outcome { statuses, peak, .. } =
        genuine_during(&bridge, attack, Duration::from_millis(250)).await;
    all_answered_200(&statuses);
    assert!(peak < POD_LIMIT_BYTES, "peak RSS {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_dripping_a_byte_a_second_do_not_keep_out_signed_deliveries() {
    // The defaults, but for the test settings (two workers, a test broker and topics).
    let _alone = crate::helpers::HEAVY.write().await;
    let bridge = BridgeProcess::start(broker::shared(), |_| {});
    bridge.wait_ready(Duration::from_secs(30)).await;
    let attack = Attack::start(&bridge.address, 2000, 1000, 1, Duration::from_secs(1));
    wait_started(&attack, 2000).await;
    let Outcome {
        statuses,
        peak,
        begun,
    } = genuine_during(&bridge, attack, Duration::from_millis(250)).await;
    all_answered_200(&statuses);
    assert!(peak < POD_LIMIT_BYTES, "peak RSS {peak}");
    assert!(begun >= 2000, "{begun}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_megabyte_bodies_with_a_wrong_signature_stay_under_the_pod_limit()
{
    let _alone = crate::helpers::HEAVY.write().await;
    let bridge = BridgeProcess::start(broker::shared(), |_| {});
    bridge.wait_ready(Duration::from_secs(30)).await;
    // 300 connections, each sending 1 MiB bodies as fast as the bridge takes them.
    let attack = Attack::start(&bridge.address, 300, 1024 * 1024, 64 * 1024, Duration::ZERO);
    wait_started(&attack, 600).await;
    let Outcome { statuses, peak, .. } =
        genuine_during(&bridge, attack, Duration::from_millis(100)).await;
    assert!(
        ok_count(&statuses) >= 19,
        "answers during the attack: {statuses:?}"
    );
    assert!(
        peak < POD_LIMIT_BYTES,
        "peak RSS {} MiB",
        peak / (1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_unsigned_bodies_held_one_byte_short_of_complete_do_not_keep_out_signed_deliveries() {
    // Room for exactly 64 such bodies: were they taken from it, 64 attackers would fill
    // it to the byte, and the others would wait for room as a genuine body would.
    let _alone = crate::helpers::HEAVY.write().await;
    let held = 16 * 1024 - 1;
    let bridge = BridgeProcess::start(broker::shared(), |s| {
        s.server.max_body_bytes = 256 * 1024;
        s.server.max_unverified_body_bytes = 64 * held;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    // 400 connections, each sending all but the last byte of a 16 KiB body, held to the 408.
    let attack = Attack::start(
        &bridge.address,
        400,
        held + 1,
        held,
        Duration::from_secs(30),
    );
    wait_started(&attack, 400).await;
    let Outcome { statuses, peak, .. } =
        genuine_during(&bridge, attack, Duration::from_millis(100)).await;
    all_answered_200(&statuses);
    assert!(peak < POD_LIMIT_BYTES, "peak RSS {peak}");
}
