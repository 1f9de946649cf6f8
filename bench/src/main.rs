//! `qminder-bridge-bench`: the load generator, and `suite`, the whole benchmark.
//!
//! `load` sends signed webhooks to a running bridge (or baseline) — closed loop, or open
//! loop with `--rate` — and can check delivery in Kafka afterwards. `suite` starts tansu,
//! the baseline and the bridge itself and prints the comparison table (see
//! `docs/performance.md`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use qminder_bridge_bench::events::{Signer, SizeRange};
use qminder_bridge_bench::load::{self, Plan, Shape, Target};
use qminder_bridge_bench::stats::Percentiles;
use qminder_bridge_bench::suite::{self, SuiteArgs};
use qminder_bridge_bench::{delivery, light};

#[derive(Debug, Parser)]
#[command(
    name = "qminder-bridge-bench",
    version,
    about = "Load generator and benchmark suite for qminder-bridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start tansu, the baseline and the bridge; measure them all; print the table.
    Suite(SuiteArgs),
    /// Send signed webhooks to a running server and report what came back.
    Load(LoadArgs),
    /// The light closed loop: wrk replays pre-signed webhooks against the baseline and the
    /// bridge at 64 and 256 connections; prints the ratios.
    Light(light::LightArgs),
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Address to connect to.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Path to post to.
    #[arg(long, default_value = suite::ENDPOINT_PATH)]
    path: String,
    /// The endpoint URL configured in the bridge: part of what is signed.
    #[arg(long)]
    url: String,
    /// The webhook secret.
    #[arg(long, env = "QMINDER_SECRET", hide_env_values = true)]
    secret: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Open loop at this many requests per second; closed loop without it.
    #[arg(long)]
    rate: Option<f64>,
    /// Smallest and largest body, in bytes.
    #[arg(long, default_value_t = 512)]
    size_min: usize,
    #[arg(long, default_value_t = 2048)]
    size_max: usize,
    /// After the run, look for every acknowledged id in the topics `<topic-prefix>.*` here.
    #[arg(long)]
    kafka: Option<String>,
    #[arg(long, default_value = "qminder")]
    topic_prefix: String,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Suite(args) => match suite::run(&args) {
            Ok(report) => {
                println!("{}", report.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("qminder-bridge-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Load(args) => load_once(&args),
        Cmd::Light(args) => match light::run(&args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("qminder-bridge-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load_once(args: &LoadArgs) -> ExitCode {
    let target = Target {
        addr: args.target,
        path: args.path.clone(),
        signer: Signer::new(&args.url, &args.secret),
        sizes: SizeRange {
            min: args.size_min,
            max: args.size_max.max(args.size_min),
        },
    };
    let plan = Plan {
        shape: args.rate.map_or(Shape::Closed, |rate| Shape::Open { rate }),
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration),
        threads: args.threads,
    };
    let tally = match load::run(&target, plan, |_| {}) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("qminder-bridge-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seconds = plan.duration.as_secs_f64();
    println!("2xx/s      {:.0}", tally.ok_in_window() as f64 / seconds);
    println!(
        "statuses   {:?} (connection errors {}, never sent {})",
        tally.statuses, tally.errors, tally.unsent
    );
    println!("latency    {}", Percentiles::of(&tally.latency));
    if args.rate.is_some() {
        println!("service    {}", Percentiles::of(&tally.service));
        println!("send lag   {}", Percentiles::of(&tally.send_lag));
    }
    if let Some(bootstrap) = &args.kafka {
        match delivery::check(
            bootstrap,
            &args.topic_prefix,
            &tally.ids,
            false,
            Duration::from_secs(20),
            Duration::from_secs(600),
        ) {
            Ok(d) => {
                println!(
                    "delivery   {} of {} acknowledged ids found in Kafka, {} lost{}",
                    d.found,
                    d.acknowledged,
                    d.lost,
                    if d.capped {
                        " (check cut short: an upper bound)"
                    } else {
                        ""
                    }
                );
                if d.lost > 0 {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("qminder-bridge-bench: delivery check: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
