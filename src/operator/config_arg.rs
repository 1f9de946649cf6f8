//! `--config FILE` (or `$QMINDER_BRIDGE_CONFIG`), shared by the commands that read the
//! configuration, and loading it with the errors on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// TOML configuration file. Environment variables QMINDER_BRIDGE__<SECTION>__<KEY>
    /// override it.
    #[arg(long, short, env = "QMINDER_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Loads the settings or says why not, on stderr.
pub fn load(arg: &ConfigArg) -> Result<Settings, ExitCode> {
    Settings::load(arg.config.as_deref()).map_err(|e| {
        eprintln!("qminder-bridge: {e}");
        ExitCode::from(2)
    })
}
