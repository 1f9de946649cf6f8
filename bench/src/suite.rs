//! `suite`: the whole benchmark of `scripts/bench`, with the same generator settings for
//! every run.
//!
//! 1. a private tansu broker (in-memory storage) on a free port;
//! 2. **baseline**: `qminder-bridge-baseline`, closed loop (maximum 2xx/s);
//! 3. **bridge direct**: the bridge answering after Kafka's ack (acks=all), closed loop;
//! 4. **bridge spool**: the bridge answering once the event is fsynced to its spool;
//! 5. **bridge @ rate**: the bridge in direct mode, open loop at a fraction (50 %) of the
//!    maximum measured in 3, for latency without coordinated omission;
//! 6. **kafka only**: librdkafka producing straight to the broker at that same rate, with the
//!    bridge's producer settings and no HTTP: the broker's floor under the bridge's latency.
//!
//! Each bridge run gets a fresh process, its own configuration file and topic prefix; after
//! it, every acknowledged id is looked for in Kafka, and the process's peak RSS is read.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::children::{self, Result, Running, free_port};
use crate::delivery;
use crate::events::{Signer, SizeRange};
use crate::kafka::{self, ProducePlan};
use crate::load::{self, Plan, Shape, Target};
use crate::procfs;
use crate::report::{Report, RunResult};

/// The endpoint URL configured in the bridge, and signed: not the address connected to.
pub const ENDPOINT_URL: &str = "https://bridge.example.com/webhooks/qminder";
pub const ENDPOINT_PATH: &str = "/webhooks/qminder";
pub(crate) const SECRET: &str = "bench-secret-7f3c9a";

/// Which runs to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    Baseline,
    Direct,
    Spool,
    Latency,
    Kafka,
}

/// Settings of a suite; every one has an environment variable too.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// Measured seconds of each run.
    #[arg(long, env = "DURATION", default_value_t = 20)]
    pub duration: u64,
    /// Warm-up seconds before each measurement (answers not counted, ids still checked).
    #[arg(long, env = "WARMUP", default_value_t = 5)]
    pub warmup: u64,
    /// Keep-alive connections of the generator.
    #[arg(long, env = "CONNECTIONS", default_value_t = 256)]
    pub connections: usize,
    /// Keep-alive connections of the open-loop (latency) run: enough that a request rarely
    /// waits for a free one (such waits still count, from the scheduled time).
    #[arg(long, env = "OPEN_CONNECTIONS", default_value_t = 256)]
    pub open_connections: usize,
    /// Generator threads (1 = a single-threaded runtime).
    #[arg(long, env = "GEN_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// HTTP workers of the bridge and the baseline (0 = one per CPU, the bridge's default).
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Open-loop rate as a fraction of the direct run's maximum.
    #[arg(long, env = "LATENCY_FRACTION", default_value_t = 0.5)]
    pub latency_fraction: f64,
    /// Open-loop rate in requests per second (instead of the fraction; needed with
    /// `--only latency`).
    #[arg(long, env = "LATENCY_RATE")]
    pub latency_rate: Option<f64>,
    /// Smallest and largest body, in bytes.
    #[arg(long, default_value_t = 512)]
    pub size_min: usize,
    #[arg(long, default_value_t = 2048)]
    pub size_max: usize,
    /// Runs to make (default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Step>,
    /// The tansu binary (default: ~/.cargo/bin/tansu, else tansu on PATH).
    #[arg(long, env = "TANSU")]
    pub tansu: Option<PathBuf>,
    /// The bridge binary (default: `qminder-bridge` beside this program).
    #[arg(long)]
    pub bridge: Option<PathBuf>,
    /// The baseline binary (default: `qminder-bridge-baseline` beside this program).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Directory for the run's scratch directory (configurations, spool, logs); it should
    /// be on a real disk, since the spool fsyncs there.
    #[arg(long, env = "BENCH_SCRATCH")]
    pub scratch: Option<PathBuf>,
    /// Keep the scratch directory (logs, results.json) after the suite.
    #[arg(long, env = "BENCH_KEEP", value_parser = clap::builder::FalseyValueParser::new())]
    pub keep: bool,
    /// librdkafka property for the bridge's `[kafka.librdkafka]`, as KEY=VALUE (repeatable),
    /// for experiments such as `--librdkafka linger.ms=0`. Default: none (as shipped).
    #[arg(long = "librdkafka", value_name = "KEY=VALUE", value_parser = key_value)]
    pub librdkafka: Vec<(String, String)>,
    /// A `[kafka]` setting of the bridge, as KEY=VALUE with VALUE in TOML (repeatable), for
    /// experiments such as `--kafka linger_ms=0.5` or `--kafka max_in_flight_requests=5`.
    /// Default: none (the bridge's defaults).
    #[arg(long = "kafka", value_name = "KEY=VALUE", value_parser = key_value)]
    pub kafka: Vec<(String, String)>,
    /// Environment variable for the bridge process only, as KEY=VALUE (repeatable), for
    /// experiments such as `--bridge-env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`.
    #[arg(long = "bridge-env", value_name = "KEY=VALUE", value_parser = key_value)]
    pub bridge_env: Vec<(String, String)>,
    /// Extra lines for the report's header (e.g. the commit measured).
    #[arg(long)]
    pub note: Vec<String>,
}

pub(crate) struct Suite<'a> {
    pub(crate) args: &'a SuiteArgs,
    pub(crate) dir: &'a Path,
    pub(crate) bootstrap: String,
    pub(crate) broker_pid: u32,
    pub(crate) target_sizes: SizeRange,
}

/// Runs the suite; the report, or what went wrong.
///
/// # Errors
/// When a process cannot start or get ready, or the delivery check cannot run.
pub fn run(args: &SuiteArgs) -> Result<Report> {
    let parent = args.scratch.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("qminder-bench-")
        .tempdir_in(&parent)
        .map_err(|e| format!("scratch directory in {}: {e}", parent.display()))?;
    let dir = scratch.path();
    let tansu_port = free_port()?;
    let tansu = start_tansu(args, dir, tansu_port)?;
    let suite = Suite {
        args,
        dir,
        bootstrap: format!("127.0.0.1:{tansu_port}"),
        broker_pid: tansu.pid(),
        target_sizes: SizeRange {
            min: args.size_min,
            max: args.size_max.max(args.size_min),
        },
    };
    let wants = |s: Step| args.only.is_empty() || args.only.contains(&s);
    let mut runs = Vec::new();
    if wants(Step::Baseline) {
        runs.push(suite.baseline()?);
    }
    let mut direct_rps = None;
    if wants(Step::Direct) {
        let r = suite.bridge("bridge direct", "direct", false, Shape::Closed)?;
        direct_rps = Some(r.rps);
        runs.push(r);
    }
    if wants(Step::Spool) {
        runs.push(suite.bridge("bridge spool", "spool", true, Shape::Closed)?);
    }
    let rate = args
        .latency_rate
        .or(direct_rps.map(|r| r * args.latency_fraction));
    if wants(Step::Latency) {
        let rate = rate.ok_or("--only latency needs --latency-rate (or run direct first)")?;
        runs.push(suite.bridge("bridge @ rate", "latency", false, Shape::Open { rate })?);
    }
    if wants(Step::Kafka) {
        let rate = rate.ok_or("--only kafka needs --latency-rate (or run direct first)")?;
        runs.push(suite.kafka_only(rate)?);
    }
    drop(tansu);
    let report = Report {
        setup: suite.setup_lines(),
        runs,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), json).map_err(|e| e.to_string())?;
    if args.keep {
        let kept = scratch.keep();
        eprintln!(
            "kept {} (logs, configurations, results.json)",
            kept.display()
        );
    }
    Ok(report)
}

pub(crate) fn start_tansu(args: &SuiteArgs, dir: &Path, port: u16) -> Result<Running> {
    let binary = args.tansu.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
        home.filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("tansu"))
    });
    let cwd = dir.join("tansu");
    std::fs::create_dir_all(&cwd).map_err(|e| e.to_string())?;
    // tansu reads a .env from its working directory: give it an empty one.
    std::fs::write(cwd.join(".env"), "").map_err(|e| e.to_string())?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(&binary);
    command
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(&cwd)
        .env("RUST_LOG", "warn");
    let mut tansu = Running::start(
        "tansu",
        command,
        &dir.join("tansu.log"),
        Duration::from_secs(5),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    tansu.wait_for(Duration::from_secs(20), || children::accepts(addr))?;
    eprintln!("tansu listening on {addr} ({})", binary.display());
    Ok(tansu)
}

/// A binary beside this program, unless given.
fn sibling(given: Option<&PathBuf>, name: &str) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Ok(exe.with_file_name(name))
}

impl Suite<'_> {
    fn plan(&self, shape: Shape) -> Plan {
        let connections = match shape {
            Shape::Closed => self.args.connections,
            Shape::Open { .. } => self.args.open_connections,
        };
        Plan {
            shape,
            connections,
            warmup: Duration::from_secs(self.args.warmup),
            duration: Duration::from_secs(self.args.duration),
            threads: self.args.threads,
        }
    }

    pub(crate) fn target(&self, port: u16) -> Target {
        Target {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            path: ENDPOINT_PATH.to_owned(),
            signer: Signer::new(ENDPOINT_URL, SECRET),
            sizes: self.target_sizes,
        }
    }

    /// Runs the load against `server`, sampling the CPU of the server, the generator, the
    /// broker and the machine in the window.
    fn measure(
        &self,
        name: &str,
        server: &Running,
        target: &Target,
        shape: Shape,
    ) -> Result<(RunResult, Vec<[u8; 32]>)> {
        let plan = self.plan(shape);
        eprintln!(
            "{name}: {} s warm-up + {} s measured, {} connections …",
            plan.warmup.as_secs(),
            plan.duration.as_secs(),
            plan.connections
        );
        let mut sampler = None;
        let pids = vec![server.pid(), std::process::id(), self.broker_pid];
        let tally = load::run(target, plan, |window| {
            sampler = Some(procfs::sample_window(pids, window));
        })
        .map_err(|e| format!("{name}: the generator failed: {e}"))?;
        let cpu = sampler.and_then(|s| s.join().ok()).unwrap_or_default();
        let shape_text = match shape {
            Shape::Closed => "closed".to_owned(),
            Shape::Open { rate } => format!("open @ {rate:.0}/s"),
        };
        let result = RunResult::new(name, shape_text, plan.duration.as_secs_f64(), &tally, &cpu);
        eprintln!("{name}: {:.0} 2xx/s, {}", result.rps, result.latency);
        Ok((result, tally.ids))
    }

    /// Starts the baseline server on a free port and waits until it accepts connections.
    pub(crate) fn start_baseline(&self) -> Result<(Running, Target)> {
        let port = free_port()?;
        let mut command = Command::new(sibling(
            self.args.baseline.as_ref(),
            "qminder-bridge-baseline",
        )?);
        command.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            &self.args.workers.to_string(),
        ]);
        let mut server = Running::start(
            "baseline",
            command,
            &self.dir.join("baseline.log"),
            Duration::from_secs(5),
        )?;
        let target = self.target(port);
        server.wait_for(Duration::from_secs(20), || children::accepts(target.addr))?;
        Ok((server, target))
    }

    fn baseline(&self) -> Result<RunResult> {
        let (mut server, target) = self.start_baseline()?;
        let (mut result, _) = self.measure("baseline", &server, &target, Shape::Closed)?;
        result.peak_rss_mib = procfs::peak_rss_bytes(server.pid()).ok().map(mib);
        server.check_alive()?;
        server.stop();
        Ok(result)
    }

    /// Starts the bridge with its own configuration and topic prefix `prefix` and waits
    /// until it is ready.
    pub(crate) fn start_bridge(
        &self,
        name: &str,
        prefix: &str,
        spool: bool,
    ) -> Result<(Running, Target)> {
        let port = free_port()?;
        let config = self.dir.join(format!("{prefix}.toml"));
        std::fs::write(&config, self.bridge_config(port, prefix, spool))
            .map_err(|e| e.to_string())?;
        let mut command = Command::new(sibling(self.args.bridge.as_ref(), "qminder-bridge")?);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(self.args.bridge_env.iter().map(|(k, v)| (k, v)));
        let log = self.dir.join(format!("{prefix}.log"));
        let mut bridge = Running::start(name, command, &log, Duration::from_secs(20))?;
        let target = self.target(port);
        bridge.wait_for(Duration::from_secs(60), || {
            children::http_status(target.addr, "/readyz") == Some(200)
        })?;
        Ok((bridge, target))
    }

    fn bridge(&self, name: &str, prefix: &str, spool: bool, shape: Shape) -> Result<RunResult> {
        let (mut bridge, target) = self.start_bridge(name, prefix, spool)?;
        let (mut result, ids) = self.measure(name, &bridge, &target, shape)?;
        // A spool may still be forwarding: give it longer.
        // Until everything there is has been read; a spool may still be forwarding.
        let (idle, cap) = (Duration::from_secs(20), Duration::from_secs(600));
        let delivery = delivery::check(&self.bootstrap, prefix, &ids, false, idle, cap)
            .map_err(|e| format!("{name}: delivery check: {e}"))?;
        eprintln!(
            "{name}: {} of {} acknowledged ids found in Kafka in {:.1} s, {} lost{}",
            delivery.found,
            delivery.acknowledged,
            delivery.seconds,
            delivery.lost,
            if delivery.capped {
                " (check cut short at the cap: an upper bound)"
            } else {
                ""
            }
        );
        result.delivery = Some(delivery);
        if let Some((200, metrics)) = children::http_get(target.addr, "/metrics") {
            let mean = |name: &str| {
                let sum = metric_sum(&metrics, &format!("{name}_sum"))?;
                let count = metric_sum(&metrics, &format!("{name}_count"))?;
                (count > 0.0).then(|| sum * 1000.0 / count)
            };
            result.bridge_request_mean_ms = mean("qminder_bridge_request_duration_seconds");
            result.bridge_kafka_mean_ms = mean("qminder_bridge_kafka_delivery_duration_seconds");
        }
        result.peak_rss_mib = procfs::peak_rss_bytes(bridge.pid()).ok().map(mib);
        bridge.check_alive()?;
        bridge.stop();
        Ok(result)
    }

    /// librdkafka alone, producing to the broker at `rate`, open loop.
    fn kafka_only(&self, rate: f64) -> Result<RunResult> {
        let name = "kafka only";
        let plan = ProducePlan {
            bootstrap: self.bootstrap.clone(),
            topic: "kafka-only.records".to_owned(),
            rate,
            warmup: Duration::from_secs(self.args.warmup),
            duration: Duration::from_secs(self.args.duration),
            sizes: self.target_sizes,
            overrides: self.producer_overrides(),
        };
        eprintln!("{name}: librdkafka → broker at {rate:.0}/s, no HTTP …");
        let mut sampler = None;
        let pids = vec![std::process::id(), self.broker_pid];
        let tally = kafka::run(&plan, |window| {
            sampler = Some(procfs::sample_window(pids, window));
        })
        .map_err(|e| format!("{name}: {e}"))?;
        let mut cpu = sampler.and_then(|s| s.join().ok()).unwrap_or_default();
        // No server here: the producer is the generator's process.
        cpu.processes.insert(0, None);
        let seconds = plan.duration.as_secs_f64();
        let result = RunResult::new(name, format!("open @ {rate:.0}/s"), seconds, &tally, &cpu);
        eprintln!("{name}: {}", result.latency);
        Ok(result)
    }

    /// The producer properties of the "kafka only" floor: the bridge's `linger.ms` and
    /// `max.in.flight.requests.per.connection` (its defaults, or what `--kafka` sets), then
    /// `--librdkafka`'s.
    fn producer_overrides(&self) -> Vec<(String, String)> {
        let typed = |key: &str, default: &str| {
            let value = self.args.kafka.iter().find(|(k, _)| k == key);
            value.map_or(default.to_owned(), |(_, v)| v.clone())
        };
        let mut overrides = vec![
            ("linger.ms".to_owned(), typed("linger_ms", "1")),
            (
                "max.in.flight.requests.per.connection".to_owned(),
                typed("max_in_flight_requests", "1"),
            ),
        ];
        overrides.extend(self.args.librdkafka.iter().cloned());
        overrides
    }

    /// The bridge's configuration for one run: a free port, the private broker, topics
    /// created with replication factor 1, one endpoint with a secret, maybe the spool.
    fn bridge_config(&self, port: u16, prefix: &str, spool: bool) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut text = format!(
            "[server]\nlisten = {}\nworkers = {}\n\
             # The generator is one client address, with more connections than one\n\
             # address may hold by default.\n\
             max_connections_per_address = 0\n\n\
             [kafka]\nbootstrap_servers = {}\ntopic_prefix = {}\ncreate_topics = true\nreplication_factor = 1\n{}\n\
             [[endpoints]]\npath = {}\nurl = {}\nsecrets = [{}]\n",
            q(&format!("127.0.0.1:{port}")),
            self.args.workers,
            q(&self.bootstrap),
            q(prefix),
            self.args
                .kafka
                .iter()
                .fold(String::new(), |mut out, (k, v)| {
                    let _ = writeln!(out, "{k} = {v}");
                    out
                }),
            q(ENDPOINT_PATH),
            q(ENDPOINT_URL),
            q(SECRET),
        );
        if !self.args.librdkafka.is_empty() {
            text.push_str("\n[kafka.librdkafka]\n");
            for (key, value) in &self.args.librdkafka {
                let _ = writeln!(text, "{} = {}", q(key), q(value));
            }
        }
        if spool {
            let dir = self.dir.join(format!("{prefix}-spool"));
            let _ = write!(
                text,
                "\n[spool]\nenabled = true\ndir = {}\n",
                q(&dir.to_string_lossy())
            );
        }
        text
    }

    fn setup_lines(&self) -> Vec<String> {
        let a = self.args;
        let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let workers = if a.workers == 0 {
            format!("{cpus} (one per CPU)")
        } else {
            a.workers.to_string()
        };
        let mut lines = vec![
            format!(
                "generator: {} connections (open loop: {}), {} thread(s), {} s warm-up + {} s measured per run, bodies {}–{} B",
                a.connections,
                a.open_connections,
                a.threads,
                a.warmup,
                a.duration,
                self.target_sizes.min,
                self.target_sizes.max
            ),
            format!(
                "servers: {workers} HTTP workers; broker: tansu (memory storage) at {}; {cpus} CPUs shared by all",
                self.bootstrap
            ),
        ];
        lines.extend(bridge_setting_lines(a));
        lines
    }
}

/// The report lines that say how the bridge was set up beyond its defaults (its
/// environment, `[kafka]` keys, librdkafka overrides), then the `--note` lines.
pub(crate) fn bridge_setting_lines(a: &SuiteArgs) -> Vec<String> {
    let mut lines = Vec::new();
    if !a.bridge_env.is_empty() {
        let vars: Vec<String> = a
            .bridge_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!("bridge environment: {}", vars.join(" ")));
    }
    if !a.kafka.is_empty() {
        let keys: Vec<String> = a.kafka.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        lines.push(format!("bridge [kafka] settings: {}", keys.join(", ")));
    }
    if !a.librdkafka.is_empty() {
        let props: Vec<String> = a
            .librdkafka
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!(
            "bridge [kafka.librdkafka] overrides: {}",
            props.join(", ")
        ));
    }
    lines.extend(a.note.iter().cloned());
    lines
}

/// `KEY=VALUE` → (`KEY`, `VALUE`).
fn key_value(text: &str) -> std::result::Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// The sum over every label set of a Prometheus series `name` in `/metrics` text.
pub(crate) fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_prometheus_series_over_its_label_sets() {
        let text = "# TYPE x histogram\nx_sum{endpoint=\"/a\"} 1.5\nx_sum{endpoint=\"/b\"} 0.5\n\
                    x_sum_other 9\nx_count 4\n";
        assert_eq!(metric_sum(text, "x_sum"), Some(2.0));
        assert_eq!(metric_sum(text, "x_count"), Some(4.0));
        assert_eq!(metric_sum(text, "y_sum"), None);
    }
}
