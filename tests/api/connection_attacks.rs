//! An attack on the connections rather than the budgets: one client address holding every
//! connection the bridge accepts with keep-alive probe requests (answered 200, so never
//! closed). `server.max_connections_per_address` stops it (`src/connection_limit.rs`).
//! docs/security.md's "attacks tried" table points here.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::attacks::{
    Attack, Outcome, all_answered_200, attacker, connect_from, genuine_during, wait_started,
};
use crate::helpers::broker;
use crate::helpers::process::BridgeProcess;

/// `connections` clients from `from`, each holding a keep-alive connection busy with a
/// `GET /healthz` a second (answered 200, so never closed by the bridge), until dropped;
/// `started` counts the clients whose first connection has been answered or refused.
fn hold_connections(address: &str, from: IpAddr, connections: usize) -> Attack {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let host = address.trim_start_matches("http://").to_owned();
    let tasks = (0..connections)
        .map(|_| {
            let (stop, started, host) = (Arc::clone(&stop), Arc::clone(&started), host.clone());
            tokio::spawn(async move {
                let mut first = Some(started);
                while !stop.load(Ordering::Relaxed) {
                    let _ = probe_until_closed(&host, from, &mut first).await;
                    if let Some(started) = first.take() {
                        started.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    Attack {
        stop,
        started,
        tasks,
    }
}

/// One connection asking for `/healthz` once a second until it is closed or not answered
/// (5 s waiting in the kernel's queue counts); the first answer counts in `first`, taken.
async fn probe_until_closed(
    host: &str,
    from: IpAddr,
    first: &mut Option<Arc<AtomicU64>>,
) -> std::io::Result<()> {
    let connect = tokio::time::timeout(Duration::from_secs(5), connect_from(host, from));
    let mut stream = connect.await.map_err(std::io::Error::other)??;
    let probe = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut answer = [0u8; 1024];
    loop {
        stream.write_all(probe.as_bytes()).await?;
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            return Ok(());
        }
        if let Some(started) = first.take() {
            started.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_every_connection_with_keep_alive_probes_does_not_keep_out_signed_deliveries()
 {
    let _alone = crate::helpers::HEAVY.write().await;
    let bridge = BridgeProcess::start(broker::shared(), |s| {
        s.server.max_connections = 64;
        s.server.max_connections_per_address = 16;
    });
    bridge.wait_ready(Duration::from_secs(30)).await;
    // Every attacking client has had its first connection served or refused.
    let attack = hold_connections(&bridge.address, attacker(0), 128);
    wait_started(&attack, 128).await;
    let Outcome { statuses, .. } =
        genuine_during(&bridge, attack, Duration::from_millis(100)).await;
    all_answered_200(&statuses);
    let refused = bridge
        .metric("qminder_bridge_connections_refused_total{reason=\"per_address_limit\"}")
        .await;
    assert!(refused > 0.0, "no connection was refused");
}

/// The soft and hard `Max open files` of process `pid`, from `/proc/PID/limits`.
fn open_files(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (numbers.next().expect("soft"), numbers.next().expect("hard"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_open_files_limit_below_max_connections_is_raised_and_a_hard_one_warned_about() {
    // 2048 connections by default, plus 256 for the rest: 2304 descriptors wanted.
    let (_, hard) = open_files("self");
    let soft_1024 = ["sh", "-c", r#"ulimit -Sn 1024 && exec "$0" "$@""#];
    let raised = BridgeProcess::start_under(&soft_1024, broker::shared(), |_| {});
    raised.wait_ready(Duration::from_secs(30)).await;
    let (soft, _) = open_files(&raised.pid().to_string());
    if hard >= 2304 {
        assert_eq!(soft, hard, "raised to the hard limit\n{}", raised.log());
        assert!(
            raised.log().contains("Raised the open-files limit"),
            "{}",
            raised.log()
        );
    } else {
        assert!(
            raised
                .log()
                .contains("open-files limit (RLIMIT_NOFILE) is below")
        );
    }
    let both_1024 = ["sh", "-c", r#"ulimit -n 1024 && exec "$0" "$@""#];
    let low = BridgeProcess::start_under(&both_1024, broker::shared(), |_| {});
    low.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(open_files(&low.pid().to_string()), (1024, 1024));
    let log = low.log();
    assert!(
        log.contains("open-files limit (RLIMIT_NOFILE) is below"),
        "{log}"
    );
}
