//! `qminder-bridge`: parse the command line, load the configuration, start logging, build
//! the bridge, run it until SIGTERM/SIGINT, and flush. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use qminder_bridge::operator::cli::{self, Cli, Command};
use qminder_bridge::operator::{backfill, spool_cli};
use qminder_bridge::startup::Application;
use qminder_bridge::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(arg) => serve(arg),
        Command::CheckConfig(arg) => cli::check_config(arg),
        Command::Sign { url, file } => cli::sign(url, file.as_ref()),
        Command::Send(args) => cli::send(args),
        Command::Topics { config, create } => cli::topics(config, *create),
        Command::Spool(args) => {
            // Parked records it exports or replays hold personal data.
            let _ = qminder_bridge::hardening::harden();
            spool_cli::run(args)
        }
        Command::Webhooks(args) => qminder_bridge::operator::webhooks::run(args),
        Command::Backfill(args) => {
            // It holds tickets (personal data) in memory.
            let _ = qminder_bridge::hardening::harden();
            backfill::run(args)
        }
    }
}

fn serve(arg: &cli::ConfigArg) -> ExitCode {
    let settings = match cli::load(arg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    telemetry::init(settings.log.format);
    if let Err(error) = qminder_bridge::hardening::harden() {
        tracing::warn!(%error, "Process hardening is incomplete: a core dump could hold secrets.");
    }
    qminder_bridge::hardening::open_files_for_connections(settings.connections());
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match Application::build(settings, arg.config.clone()).await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(%error, "The bridge cannot start.");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(port = app.port(), "Listening for Qminder webhooks.");
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "The HTTP server failed.");
                ExitCode::FAILURE
            }
        }
    })
}
