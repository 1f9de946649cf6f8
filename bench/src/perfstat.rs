//! Per-thread accounting of a process with `perf stat --per-thread` (software events and
//! syscall tracepoints: what works inside this VM, where hardware counters do not): CPU
//! time, context switches, futex calls, all syscalls, and the socket writes that carry
//! Kafka requests, summed by thread kind (librdkafka's broker threads, the HTTP workers,
//! rdkafka's polling thread, …) and divided by the requests answered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// The events counted.
pub const EVENTS: &str = "task-clock,context-switches,syscalls:sys_enter_futex,raw_syscalls:sys_enter,\
syscalls:sys_enter_sendmsg,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_poll,syscalls:sys_enter_ppoll";

/// Starts `perf stat` on `pid` for `seconds`, writing to `out`.
///
/// # Errors
/// When perf cannot be started.
pub fn start(pid: u32, seconds: u64, out: &Path) -> std::io::Result<Child> {
    Command::new("perf")
        .args([
            "stat",
            "--per-thread",
            "-x,",
            "-e",
            EVENTS,
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(out)
        .args(["--", "sleep", &seconds.to_string()])
        .spawn()
}

/// Counts by thread kind, then by event.
pub type ByKind = BTreeMap<String, BTreeMap<String, f64>>;

/// What kind of thread a `comm` is: librdkafka names its threads `rdk:broker<N>` and
/// `rdk:main`; actix's workers are `actix-rt|system:…`; rdkafka's polling thread and Tokio's
/// workers have names of their own.
fn kind(comm: &str) -> String {
    let name = comm.rsplit_once('-').map_or(comm, |(n, _)| n);
    if name.starts_with("rdk:broker") {
        "rdk:broker*".into()
    } else if name.starts_with("actix-rt") {
        "actix workers".into()
    } else if name.starts_with("tokio-runtime") {
        "tokio workers".into()
    } else {
        name.to_owned()
    }
}

/// Reads `perf stat -x,` output into counts by thread kind.
pub fn read(path: &Path) -> ByKind {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by: ByKind = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(comm), Some(value), Some(event)) = (fields.first(), fields.get(1), fields.get(3))
        else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        *by.entry(kind(comm))
            .or_default()
            .entry((*event).to_owned())
            .or_default() += value;
    }
    by
}

/// A table: per thread kind, per answered request: CPU µs, context switches, futex calls,
/// syscalls, socket writes, waits.
pub fn render(by: &ByKind, answered: u64, window: Duration) -> String {
    let n = answered.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<24} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}   (per 2xx answered; {answered} in {:.0} s)",
        "thread kind",
        "CPU µs",
        "ctxsw",
        "futex",
        "syscalls",
        "writes",
        "waits",
        window.as_secs_f64()
    );
    let mut total: BTreeMap<&str, f64> = BTreeMap::new();
    for (kind, events) in by {
        let get = |e: &str| events.get(e).copied().unwrap_or(0.0);
        let writes = get("syscalls:sys_enter_sendmsg")
            + get("syscalls:sys_enter_writev")
            + get("syscalls:sys_enter_write");
        let waits = get("syscalls:sys_enter_epoll_wait")
            + get("syscalls:sys_enter_poll")
            + get("syscalls:sys_enter_ppoll");
        let row = [
            ("cpu", get("task-clock") * 1000.0),
            ("ctx", get("context-switches")),
            ("futex", get("syscalls:sys_enter_futex")),
            ("sys", get("raw_syscalls:sys_enter")),
            ("writes", writes),
            ("waits", waits),
        ];
        if row[0].1 / n < 0.05 {
            continue;
        }
        let _ = write!(out, "  {kind:<24}");
        for (i, (name, v)) in row.iter().enumerate() {
            *total.entry(name).or_default() += v;
            let width = if i == 3 { 9 } else { 8 };
            let _ = write!(out, " {:>width$.2}", v / n);
        }
        out.push('\n');
    }
    let _ = write!(out, "  {:<24}", "all threads");
    for (i, name) in ["cpu", "ctx", "futex", "sys", "writes", "waits"]
        .iter()
        .enumerate()
    {
        let width = if i == 3 { 9 } else { 8 };
        let _ = write!(
            out,
            " {:>width$.2}",
            total.get(name).copied().unwrap_or(0.0) / n
        );
    }
    out.push('\n');
    out
}
