//! The command line: `serve`, `check-config`, `sign`, `send`, `topics`, `spool`. Parsing
//! only, plus the small commands that need no server; `serve` hands over to `startup`,
//! `send` to `send`, `spool` to `spool_cli`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use std::time::Duration;

use crate::delivery::kafka::{self, TopicFacts, TopicOutcome};
pub use crate::operator::config_arg::{ConfigArg, load};
use crate::operator::send;
use crate::signature::Signer;

#[derive(Debug, Parser)]
#[command(
    name = "qminder-bridge",
    version,
    about = "Qminder webhooks in, CloudEvents on Kafka out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge.
    Serve(ConfigArg),
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig(ConfigArg),
    /// Print the X-Qminder-Signature Qminder would send for a body (secret from $QMINDER_SECRET).
    Sign {
        /// The webhook URL as registered in Qminder.
        #[arg(long)]
        url: String,
        /// File holding the body; standard input if absent.
        file: Option<PathBuf>,
    },
    /// Sign each FILE as Qminder would (secret from $QMINDER_SECRET) and POST it to URL;
    /// prints `<status> <file> <answer>` per file, exits 1 unless every answer is 2xx.
    Send(SendArgs),
    /// List the topics the configuration needs and whether the broker has them; exits 1 if
    /// any is missing (after creating them, with --create).
    Topics {
        #[command(flatten)]
        config: ConfigArg,
        /// Create the missing topics with kafka.partitions and kafka.replication_factor.
        #[arg(long)]
        create: bool,
    },
    /// Inspect the spool (spool.dir) of a configuration, and re-send its parked records.
    Spool(crate::operator::spool_cli::SpoolArgs),
    /// Ask Qminder's API which ticket transitions happened in a window, and publish those
    /// missing from Kafka (marked qminderorigin=backfill); needs [endpoints.qminder].
    Backfill(crate::operator::backfill::BackfillArgs),
    /// Register, remove or rotate the webhook in Qminder (its API, [endpoints.qminder]).
    Webhooks(crate::operator::webhooks::WebhooksArgs),
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Where to POST, e.g. https://bridge.example.com/webhooks/qminder.
    #[arg(long)]
    url: String,
    /// The URL the signature covers, if not --url: the endpoint's `url` as registered in
    /// Qminder, when you reach the bridge another way (port-forward, internal address).
    #[arg(long)]
    sign_url: Option<String>,
    /// PEM file with an extra CA certificate to trust (e.g. a self-signed [server.tls]).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Give up on a request after this long.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Webhook bodies, sent byte for byte in this order (examples/events/ has one per type).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// `check-config`
pub fn check_config(arg: &ConfigArg) -> ExitCode {
    let settings = match load(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(e) = kafka::check_properties(&settings) {
        eprintln!("qminder-bridge: invalid configuration:\n  - kafka.librdkafka: {e}");
        return ExitCode::from(2);
    }
    for warning in settings.warnings() {
        eprintln!("qminder-bridge: warning: {warning}");
    }
    let bound = settings.memory_bound();
    match toml::to_string_pretty(&settings) {
        Ok(text) => {
            println!(
                "# The configuration is valid. Its limits allow up to {} MiB of memory \
                 (server.memory_limit_bytes: {} MiB).\n\
                 # Effective settings (secrets redacted):\n{text}",
                bound.total() / (1024 * 1024),
                settings.server.memory_limit_bytes / (1024 * 1024)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qminder-bridge: cannot print the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The webhook secret from `$QMINDER_SECRET`, or why not (on stderr).
fn secret_from_env() -> Result<SecretString, ExitCode> {
    match std::env::var("QMINDER_SECRET") {
        Ok(secret) if !secret.is_empty() => Ok(SecretString::from(secret)),
        Ok(_) => {
            eprintln!("qminder-bridge: QMINDER_SECRET is empty");
            Err(ExitCode::from(2))
        }
        Err(_) => {
            eprintln!("qminder-bridge: set QMINDER_SECRET to the webhook's secret");
            Err(ExitCode::from(2))
        }
    }
}

/// `sign`
pub fn sign(url: &str, file: Option<&PathBuf>) -> ExitCode {
    let secret = match secret_from_env() {
        Ok(secret) => secret,
        Err(code) => return code,
    };
    let body = match file {
        Some(path) => std::fs::read(path),
        None => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).map(|_| body)
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            eprintln!("qminder-bridge: cannot read the body: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", Signer::new(url, &secret).sign(&body));
    ExitCode::SUCCESS
}

/// `send`
pub fn send(args: &SendArgs) -> ExitCode {
    let request = send::SendRequest {
        url: &args.url,
        sign_url: args.sign_url.as_deref(),
        ca_file: args.ca_file.as_deref(),
        timeout: Duration::from_millis(args.timeout_ms),
        files: &args.files,
    };
    match secret_from_env() {
        Ok(secret) => send::send(&request, secret),
        Err(code) => code,
    }
}

/// `topics`
pub fn topics(arg: &ConfigArg, create: bool) -> ExitCode {
    let settings = match load(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let kafka = &settings.kafka;
    if kafka.is_embedded() {
        eprintln!(
            "qminder-bridge: the embedded broker exists only inside `serve`, which creates its topics"
        );
        return ExitCode::from(2);
    }
    let router = kafka.router();
    let names = router.topics();
    let timeout = Duration::from_secs(10);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qminder-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if create {
        match runtime.block_on(kafka::create_topics(kafka, &names, timeout)) {
            Ok(outcomes) => {
                for (name, outcome) in outcomes {
                    if outcome == TopicOutcome::Created {
                        println!("created  {name}");
                    }
                }
            }
            Err(e) => {
                eprintln!("qminder-bridge: cannot create topics: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match runtime.block_on(kafka::inspect_topics(kafka, &names, timeout)) {
        Ok(facts) => print_topics(&facts),
        Err(e) => {
            eprintln!("qminder-bridge: cannot ask the broker for metadata: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line per topic, warnings on stderr; exit 1 if any is missing.
fn print_topics(facts: &[TopicFacts]) -> ExitCode {
    let mut missing = 0;
    let shown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    for f in facts {
        match f.partitions {
            Some(n) => println!(
                "exists   {} ({n} partitions, {} replicas, min.insync.replicas {}, max.message.bytes {})",
                f.name,
                shown(f.replication_factor.map(|v| v.to_string())),
                shown(f.min_insync_replicas.map(|v| v.to_string())),
                shown(f.max_message_bytes.map(|v| v.to_string())),
            ),
            None => {
                missing += 1;
                println!("missing  {}", f.name);
            }
        }
        if let Some(warning) = f.durability_warning() {
            eprintln!("qminder-bridge: warning: {warning}");
        }
    }
    if missing == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("qminder-bridge: {missing} topic(s) missing; create them with --create");
        ExitCode::from(1)
    }
}
