//! `light`: the closed loop with a generator that costs little, so the bridge's own cost
//! shows. Debian's `wrk` replays pre-signed webhooks (`bench/wrk/replay.lua` cycles
//! through `signature<TAB>body` lines made here, so nothing is signed while it runs)
//! against the bare actix baseline and then the bridge, at each number of connections
//! (default 64 and 256), in one run with one tansu broker. It prints requests/s, the ratio
//! to the baseline at the same connections, wrk's p50/p99, and the CPU per request of the
//! server and of the broker. Then it checks delivery: every distinct body sent must be
//! in Kafka, and the records read must number the 2xx answers wrk counted (warm-ups
//! included): a replayed body is a new record each time.
//!
//! wrk's latency is closed-loop (from its own send); the open-loop latency mode of
//! `suite` (scheduled send times, HDR histogram) stays the one for p50/p99 at a rate.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::children::{Result, Running, free_port};
use crate::delivery;
use crate::events::{self, Signer};
use crate::load::Window;
use crate::procfs;
use crate::suite::{ENDPOINT_PATH, ENDPOINT_URL, SECRET, Suite, SuiteArgs, start_tansu};

const REPLAY_LUA: &str = include_str!("../wrk/replay.lua");

/// Settings of `light`; the suite's settings (duration, warm-up, workers, librdkafka
/// overrides, …) apply too.
#[derive(Debug, Clone, clap::Args)]
pub struct LightArgs {
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Connections to measure at, each in turn.
    #[arg(long = "at", value_delimiter = ',', default_value = "64,256")]
    pub at: Vec<usize>,
    /// Distinct pre-signed bodies to cycle through.
    /// (Every one is sent in each run that answers at least this many: the report says if
    /// a run did not.)
    #[arg(long, default_value_t = 10_000)]
    pub bodies: u64,
    /// Also count, per bridge thread kind, CPU, context switches, futex calls and syscalls
    /// with `perf stat --per-thread` during each bridge point.
    #[arg(long)]
    pub perf: bool,
    /// Measure the bridge only (no baseline points, so no ratios).
    #[arg(long)]
    pub skip_baseline: bool,
    /// The wrk binary.
    #[arg(long, env = "WRK", default_value = "wrk")]
    pub wrk: PathBuf,
}

/// What wrk's `done()` in `replay.lua` prints.
#[derive(Debug, Clone, Copy, Deserialize)]
struct WrkSummary {
    requests: u64,
    duration_us: u64,
    status_errors: u64,
    socket_errors: u64,
    p50_us: u64,
    p99_us: u64,
}

/// One measured (server, connections) point.
#[derive(Debug, Clone)]
struct Point {
    server: &'static str,
    connections: usize,
    summary: WrkSummary,
    server_cpu_s: Option<f64>,
    broker_cpu_s: Option<f64>,
    /// CPU taken in the window by everything but the server, the broker and wrk, in cores:
    /// a run with much of it was disturbed.
    other_cores: Option<f64>,
    /// With `--perf`: the per-thread accounting.
    perf: Option<crate::perfstat::ByKind>,
}

impl Point {
    fn ok(&self) -> u64 {
        self.summary
            .requests
            .saturating_sub(self.summary.status_errors)
    }
    fn rps(&self) -> f64 {
        self.ok() as f64 / (self.summary.duration_us as f64 / 1e6)
    }
    fn per_request_us(&self, cpu: Option<f64>) -> Option<f64> {
        let ok = self.ok();
        cpu.filter(|_| ok > 0).map(|c| c * 1e6 / ok as f64)
    }
}

/// Runs `light`; the printed report.
///
/// # Errors
/// When a process cannot start, wrk fails, or the delivery check cannot run.
pub fn run(args: &LightArgs) -> Result<String> {
    let parent = args
        .suite
        .scratch
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("qminder-light-")
        .tempdir_in(&parent)
        .map_err(|e| e.to_string())?;
    let dir = scratch.path();
    let tansu_port = free_port()?;
    let tansu = start_tansu(&args.suite, dir, tansu_port)?;
    let suite = Suite {
        args: &args.suite,
        dir,
        bootstrap: format!("127.0.0.1:{tansu_port}"),
        broker_pid: tansu.pid(),
        target_sizes: events::SizeRange {
            min: args.suite.size_min,
            max: args.suite.size_max.max(args.suite.size_min),
        },
    };
    let ids = presign(dir, args.bodies, suite.target_sizes)?;
    std::fs::write(dir.join("replay.lua"), REPLAY_LUA).map_err(|e| e.to_string())?;

    let mut points = Vec::new();
    if !args.skip_baseline {
        let (baseline, target) = suite.start_baseline()?;
        for &c in &args.at {
            points.push(measure(args, &suite, "baseline", &baseline, &target, c)?.0);
        }
        baseline.stop();
    }
    let (bridge, target) = suite.start_bridge("bridge", "light", false)?;
    let mut answered = 0;
    for &c in &args.at {
        let (point, warm_ok) = measure(args, &suite, "bridge", &bridge, &target, c)?;
        answered += warm_ok + point.ok();
        points.push(point);
    }
    bridge.stop();
    let found = delivery::check(
        &suite.bootstrap,
        "light",
        &ids,
        true,
        Duration::from_secs(5),
        Duration::from_secs(600),
    )
    .map_err(|e| format!("delivery check: {e}"))?;
    drop(tansu);
    if args.suite.keep {
        eprintln!("kept {}", scratch.keep().display());
    }
    Ok(render(args, &points, answered, &found))
}

/// Writes `bodies.tsv` (`signature<TAB>body` per line) and returns the bodies' event ids.
fn presign(dir: &Path, count: u64, sizes: events::SizeRange) -> Result<Vec<[u8; 32]>> {
    let signer = Signer::new(ENDPOINT_URL, SECRET);
    let mut text = String::new();
    let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for seq in 0..count {
        let body = events::body(seq, sizes);
        let _ = writeln!(text, "{}\t{body}", signer.sign(body.as_bytes()));
        let mut id = Sha256::new();
        id.update(ENDPOINT_URL.as_bytes());
        id.update(body.as_bytes());
        ids.push(id.finalize().into());
    }
    std::fs::write(dir.join("bodies.tsv"), text).map_err(|e| e.to_string())?;
    Ok(ids)
}

/// A warm-up run of wrk, then the measured one with the CPU of the server and the broker
/// sampled around it; the point and the warm-up's 2xx count.
fn measure(
    args: &LightArgs,
    suite: &Suite<'_>,
    server: &'static str,
    process: &Running,
    target: &crate::load::Target,
    connections: usize,
) -> Result<(Point, u64)> {
    let url = format!("http://{}{ENDPOINT_PATH}", target.addr);
    let warm = spawn_wrk(args, suite.dir, &url, connections, args.suite.warmup.max(1))?;
    let warm = wrk_summary(args, warm)?;
    let seconds = args.suite.duration;
    let perf_out = suite.dir.join(format!("{server}-{connections}.perf.txt"));
    let perf = (args.perf && server == "bridge")
        .then(|| crate::perfstat::start(process.pid(), seconds, &perf_out))
        .transpose()
        .map_err(|e| format!("perf: {e}"))?;
    let child = spawn_wrk(args, suite.dir, &url, connections, seconds)?;
    let start = Instant::now();
    let window = Window {
        start,
        measure: start,
        end: start + Duration::from_secs(seconds),
    };
    let pids = vec![process.pid(), suite.broker_pid, child.id()];
    let sampler = procfs::sample_window(pids, window);
    let summary = wrk_summary(args, child)?;
    let cpu = sampler.join().unwrap_or_default();
    let perf = perf.map(|mut child| {
        let _ = child.wait();
        crate::perfstat::read(&perf_out)
    });
    let point = Point {
        server,
        connections,
        summary,
        server_cpu_s: cpu.processes.first().copied().flatten(),
        broker_cpu_s: cpu.processes.get(1).copied().flatten(),
        other_cores: other_cores(&cpu, seconds),
        perf,
    };
    eprintln!(
        "{server} @ {connections} connections: {:.0} 2xx/s, p50 {} µs, p99 {} µs, non-2xx {}",
        point.rps(),
        summary.p50_us,
        summary.p99_us,
        summary.status_errors
    );
    Ok((point, warm.requests.saturating_sub(warm.status_errors)))
}

/// The machine's busy CPU in the window less the server's, the broker's and wrk's, in cores.
fn other_cores(cpu: &procfs::WindowCpu, seconds: u64) -> Option<f64> {
    let ours: f64 = cpu.processes.iter().map(|p| p.unwrap_or(0.0)).sum();
    cpu.machine
        .map(|m| ((m - ours) / seconds.max(1) as f64).max(0.0))
}

/// Runs wrk once (one thread); read its summary with [`wrk_summary`].
fn spawn_wrk(
    args: &LightArgs,
    dir: &Path,
    url: &str,
    connections: usize,
    seconds: u64,
) -> Result<std::process::Child> {
    Command::new(&args.wrk)
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["--timeout", "10s", "-s", "replay.lua", url])
        .env("BODIES", dir.join("bodies.tsv"))
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (install Debian's wrk)", args.wrk.display()))
}

/// Waits for wrk and reads the summary line of `replay.lua`.
fn wrk_summary(args: &LightArgs, child: std::process::Child) -> Result<WrkSummary> {
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", args.wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("light: "))
        .ok_or_else(|| {
            format!(
                "wrk printed no summary: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    serde_json::from_str(line).map_err(|e| format!("wrk's summary {line:?}: {e}"))
}

fn render(args: &LightArgs, points: &[Point], answered: u64, found: &delivery::Delivery) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "light: wrk -t1, {} s warm-up + {} s measured per point, {} pre-signed bodies cycled",
        args.suite.warmup, args.suite.duration, args.bodies
    );
    for line in crate::suite::bridge_setting_lines(&args.suite) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "{:<9} {:>5} {:>9} {:>6} {:>8} {:>8} {:>9} {:>9} {:>7} {:>6}",
        "server",
        "conn",
        "2xx/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "srv µs/ev",
        "brk µs/ev",
        "non-2xx",
        "other"
    );
    for p in points {
        let base = points
            .iter()
            .find(|b| b.server == "baseline" && b.connections == p.connections)
            .map(Point::rps);
        let ratio = base.filter(|b| *b > 0.0).map(|b| p.rps() / b);
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        let _ = writeln!(
            out,
            "{:<9} {:>5} {:>9.0} {:>6} {:>8.2} {:>8.2} {:>9} {:>9} {:>7} {:>6}",
            p.server,
            p.connections,
            p.rps(),
            opt(ratio, 3),
            p.summary.p50_us as f64 / 1000.0,
            p.summary.p99_us as f64 / 1000.0,
            opt(p.per_request_us(p.server_cpu_s), 1),
            opt(p.per_request_us(p.broker_cpu_s), 1),
            p.summary.status_errors + p.summary.socket_errors,
            opt(p.other_cores, 2),
        );
    }
    out.push_str(&render_checks(args, points, answered, found));
    out
}

/// The per-thread accounting (with `--perf`) and the delivery check's lines.
fn render_checks(
    args: &LightArgs,
    points: &[Point],
    answered: u64,
    found: &delivery::Delivery,
) -> String {
    let mut out = String::new();
    for p in points {
        if let Some(perf) = &p.perf {
            let window = Duration::from_micros(p.summary.duration_us);
            let _ = writeln!(
                out,
                "bridge @ {} connections, per thread kind:",
                p.connections
            );
            out.push_str(&crate::perfstat::render(perf, p.ok(), window));
        }
    }
    let fewest = points
        .iter()
        .filter(|p| p.server == "bridge")
        .map(|p| p.summary.requests)
        .min()
        .unwrap_or(0);
    if fewest < args.bodies {
        let _ = writeln!(
            out,
            "note: a bridge run answered only {fewest} requests, fewer than the {} bodies: not every body was sent, so 'lost' counts unsent ones too",
            args.bodies
        );
    }
    let _ = writeln!(
        out,
        "delivery: {} of {} distinct bodies found in Kafka, {} lost; {} records read for {} 2xx answers ({})",
        found.found,
        found.acknowledged,
        found.lost,
        found.records,
        answered,
        if found.records >= answered {
            "every 2xx is a record"
        } else {
            "RECORDS MISSING"
        }
    );
    out
}
