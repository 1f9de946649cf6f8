//! The results of a suite: one row per run, the ratios, and each target met or missed.
//!
//! Printed as a plain-text table (what `scripts/bench` shows and `docs/performance.md`
//! quotes) and saved as JSON beside the run's logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::delivery::Delivery;
use crate::procfs::WindowCpu;
use crate::stats::{Percentiles, Tally};

/// The bridge's default `kafka.linger_ms` (the suite's configuration does not change it
/// unless `--kafka linger_ms=…` is given).
pub const LINGER_MS: f64 = 1.0;

/// CPU used by other processes in a window above which the report flags the run.
pub const CONTENDED_CORES: f64 = 0.1;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub name: String,
    /// `closed` or `open @ <rate>/s`.
    pub shape: String,
    pub seconds: f64,
    /// 2xx answers per second in the window.
    pub rps: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    pub unsent: u64,
    /// Closed loop: send → answer. Open loop: scheduled send → answer.
    pub latency: Percentiles,
    /// Open loop only: actual send → answer, and how late sends were.
    pub service: Option<Percentiles>,
    pub send_lag: Option<Percentiles>,
    /// Server CPU seconds (user + system) within the window, per 2xx answer, in µs.
    pub server_cpu_us_per_event: Option<f64>,
    /// CPU use within the window, in cores (CPU seconds ÷ window seconds): the server, the
    /// generator (this process), the broker, and everything else on the machine.
    pub server_cores: Option<f64>,
    pub generator_cores: Option<f64>,
    pub broker_cores: Option<f64>,
    pub other_cores: Option<f64>,
    /// The generator's own CPU per request sent, in µs.
    pub generator_cpu_us_per_request: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub delivery: Option<Delivery>,
    /// The bridge's own view, from its `/metrics` over the whole run (warm-up included):
    /// mean request duration and mean wait for Kafka's acknowledgement, in ms.
    pub bridge_request_mean_ms: Option<f64>,
    pub bridge_kafka_mean_ms: Option<f64>,
}

impl RunResult {
    /// Builds the row from a run's tally and the CPU seconds of the server, the generator
    /// and the broker (in that order) within the window.
    pub fn new(name: &str, shape: String, seconds: f64, tally: &Tally, cpu: &WindowCpu) -> Self {
        let process = |i: usize| cpu.processes.get(i).copied().flatten();
        let (server, generator, broker) = (process(0), process(1), process(2));
        let known: f64 = [server, generator, broker].iter().flatten().sum();
        let ok = tally.ok_in_window();
        let answered = ok + tally.not_ok_in_window() + tally.errors;
        let per = |cpu: Option<f64>, n: u64| cpu.filter(|_| n > 0).map(|s| s * 1e6 / n as f64);
        let open = !tally.service.is_empty();
        Self {
            name: name.to_owned(),
            shape,
            seconds,
            rps: ok as f64 / seconds,
            statuses: tally.statuses.clone(),
            errors: tally.errors,
            unsent: tally.unsent,
            latency: Percentiles::of(&tally.latency),
            service: open.then(|| Percentiles::of(&tally.service)),
            send_lag: open.then(|| Percentiles::of(&tally.send_lag)),
            server_cpu_us_per_event: per(server, ok),
            server_cores: server.map(|s| s / seconds),
            generator_cores: generator.map(|s| s / seconds),
            broker_cores: broker.map(|s| s / seconds),
            other_cores: cpu.machine.map(|m| (m - known).max(0.0) / seconds),
            generator_cpu_us_per_request: per(generator, answered),
            peak_rss_mib: None,
            delivery: None,
            bridge_request_mean_ms: None,
            bridge_kafka_mean_ms: None,
        }
    }
}

/// The whole suite.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Settings and machine, one line each.
    pub setup: Vec<String>,
    pub runs: Vec<RunResult>,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

impl Report {
    fn run(&self, name: &str) -> Option<&RunResult> {
        self.runs.iter().find(|r| r.name == name)
    }

    /// The tables, ratios and targets, as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.setup {
            let _ = writeln!(out, "{line}");
        }
        out.push_str(&self.results_table());
        out.push_str(&self.cpu_table());
        for r in &self.runs {
            if let (Some(request), Some(kafka)) = (r.bridge_request_mean_ms, r.bridge_kafka_mean_ms)
            {
                let _ = writeln!(
                    out,
                    "\n{}: the bridge's /metrics: mean request {request:.2} ms, mean wait for a Kafka ack {kafka:.2} ms",
                    r.name
                );
            }
            if let (Some(service), Some(lag)) = (&r.service, &r.send_lag) {
                let _ = writeln!(out, "\n{}: from the actual send: {service}", r.name);
                let _ = writeln!(out, "{}: send lateness:       {lag}", r.name);
            }
            let failed: Vec<String> = r
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(s, n)| format!("{n}× {s}"))
                .collect();
            if !failed.is_empty() || r.errors > 0 || r.unsent > 0 {
                let _ = writeln!(
                    out,
                    "{}: non-2xx {failed:?}, connection errors {}, never sent {}",
                    r.name, r.errors, r.unsent
                );
            }
        }
        let busy: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.other_cores.is_some_and(|c| c > CONTENDED_CORES))
            .map(|r| format!("{} ({:.2})", r.name, r.other_cores.unwrap_or_default()))
            .collect();
        if !busy.is_empty() {
            let _ = writeln!(
                out,
                "\nWARNING: other processes used more than {CONTENDED_CORES} cores during: {}. \
                 Those figures are not representative of this machine.",
                busy.join(", ")
            );
        }
        out.push_str(&self.targets());
        out
    }

    fn results_table(&self) -> String {
        let mut out = format!(
            "\n{:<14} {:<14} {:>7} {:>7} {:>5} | {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} | {:>15}\n",
            "run",
            "load",
            "2xx/s",
            "2xx",
            "other",
            "p50 ms",
            "p90",
            "p99",
            "p99.9",
            "max",
            "µs/ev",
            "RSS MiB",
            "in Kafka / lost"
        );
        for r in &self.runs {
            let ok: u64 = r
                .statuses
                .iter()
                .filter(|(s, _)| (200..300).contains(*s))
                .map(|(_, n)| n)
                .sum();
            let all: u64 = r.statuses.values().sum();
            let delivery = r.delivery.map_or_else(
                || "-".to_owned(),
                |d| {
                    let capped = if d.capped { "*" } else { "" };
                    format!("{}/{} {}{capped}", d.found, d.acknowledged, d.lost)
                },
            );
            let l = &r.latency;
            let _ = writeln!(
                out,
                "{:<14} {:<14} {:>7.0} {:>7} {:>5} | {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.1} | {:>6} {:>7} | {:>15}",
                r.name,
                r.shape,
                r.rps,
                ok,
                all - ok + r.errors,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                opt(r.server_cpu_us_per_event, 1),
                opt(r.peak_rss_mib, 1),
                delivery,
            );
        }
        out
    }

    fn cpu_table(&self) -> String {
        let mut out = format!(
            "\nCPU in the measured window, in cores (CPU-seconds per second; the machine has {}):\n\
             {:<14} {:>7} {:>7} {:>7} {:>7} | {:>14}\n",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            "run",
            "server",
            "gen",
            "broker",
            "other",
            "gen µs/request"
        );
        for r in &self.runs {
            let _ = writeln!(
                out,
                "{:<14} {:>7} {:>7} {:>7} {:>7} | {:>14}",
                r.name,
                opt(r.server_cores, 2),
                opt(r.generator_cores, 2),
                opt(r.broker_cores, 2),
                opt(r.other_cores, 2),
                opt(r.generator_cpu_us_per_request, 1),
            );
        }
        out
    }

    fn targets(&self) -> String {
        let mut out =
            String::from("\ntarget                                   measured      verdict\n");
        let mut line = |what: &str, value: Option<f64>, unit: &str, pass: Option<bool>| {
            let verdict = match pass {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            // Ratios get 3 decimals, so that 0.697 does not print as a missed "0.70".
            let decimals = match unit {
                "" => 3,
                "ids" => 0,
                _ => 2,
            };
            let _ = writeln!(
                out,
                "{what:<40} {:>8} {unit:<4} {verdict}",
                opt(value, decimals)
            );
        };
        let baseline = self.run("baseline").map(|r| r.rps);
        let direct = self.run("bridge direct");
        let spool = self.run("bridge spool");
        let latency = self.run("bridge @ rate");
        let ratio = direct.zip(baseline).map(|(d, b)| d.rps / b);
        line(
            "bridge ÷ baseline ≥ 0.70",
            ratio,
            "",
            ratio.map(|r| r >= 0.7),
        );
        let p99 = latency.map(|r| r.latency.p99);
        let bound = LINGER_MS + 2.0;
        line(
            &format!("p99 at the set rate ≤ {bound} ms (linger+2)"),
            p99,
            "ms",
            p99.map(|p| p <= bound),
        );
        let cpu = direct.and_then(|r| r.server_cpu_us_per_event);
        line(
            "bridge CPU ≤ 10 µs/event (direct, max)",
            cpu,
            "µs",
            cpu.map(|c| c <= 10.0),
        );
        let rss = self
            .runs
            .iter()
            .filter(|r| r.name.starts_with("bridge"))
            .filter_map(|r| r.peak_rss_mib)
            .reduce(f64::max);
        line(
            "bridge peak RSS ≤ 50 MiB (all runs)",
            rss,
            "MiB",
            rss.map(|m| m <= 50.0),
        );
        let spool_ratio = spool.zip(direct).map(|(s, d)| s.rps / d.rps);
        line(
            "spool ÷ direct ≥ 0.5",
            spool_ratio,
            "",
            spool_ratio.map(|r| r >= 0.5),
        );
        let checked: Vec<&Delivery> = self
            .runs
            .iter()
            .filter_map(|r| r.delivery.as_ref())
            .collect();
        let lost =
            (!checked.is_empty()).then(|| checked.iter().map(|d| d.lost).sum::<usize>() as f64);
        line(
            "acknowledged but lost = 0 (all runs)",
            lost,
            "ids",
            lost.map(|l| l == 0.0),
        );
        if checked.iter().any(|d| d.capped) {
            out.push_str(
                "* a delivery check was cut short at its cap: its \"lost\" is an upper bound\n",
            );
        }
        out
    }
}
