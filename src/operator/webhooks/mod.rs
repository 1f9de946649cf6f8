//! `qminder-bridge webhooks`: the bridge's webhook registrations in Qminder, through the
//! API key of `[endpoints.qminder]` (`POST /v1/webhooks`, `DELETE /v1/webhooks/{id}`).
//!
//! Qminder has no "rotate secret" call and its API cannot list webhooks, so a rotation is
//! an overlap, walked by `rotate`: register the new URL (the endpoint's with another query
//! string, since the signature covers the URL), save its id and secret at once (the state
//! file, mode 0600, then the secret file the bridges read: a crash leaves no registration
//! whose secret is lost; files are checked before anything is registered), wait until every replica's `/metrics` shows deliveries signed by the
//! new registration (`qminder_bridge_webhooks_verified_total{registration}`), then remove
//! the old one. Run again after a crash or a time-out, it resumes from the state file
//! (`rotate.rs`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use super::config_arg::{self, ConfigArg};
use super::qminder_api::{ApiError, Client};

mod rotate;

#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The endpoint (its path) whose account to use; needed when several endpoints have
    /// an [endpoints.qminder] section.
    #[arg(long)]
    pub endpoint: Option<String>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Register URL in Qminder; prints the new webhook's id. Its secret is written to
    /// --secret-file (mode 0600, never overwritten), or printed only with --show-secret.
    Register {
        #[arg(long)]
        url: String,
        #[arg(long, required_unless_present = "show_secret")]
        secret_file: Option<PathBuf>,
        #[arg(long)]
        show_secret: bool,
    },
    /// Remove the webhook ID from Qminder.
    Remove {
        #[arg(value_parser = webhook_id)]
        id: String,
    },
    /// Register --new-url, save its id and secret, wait until every --bridge reports
    /// deliveries signed by it, then remove --old-id. Resumable (--state-file).
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The new registration's URL: the endpoint's url with another query string.
    #[arg(long)]
    pub new_url: String,
    /// The id of the registration to remove once the new one delivers.
    #[arg(long, value_parser = webhook_id)]
    pub old_id: String,
    /// Where the new secret is written (mode 0600), for the bridges to read.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Where the rotation's progress is kept, to resume it.
    #[arg(long)]
    pub state_file: PathBuf,
    /// A replica's /metrics URL; repeat for every replica.
    #[arg(long = "bridge", required = true)]
    pub bridges: Vec<String>,
    /// How long to wait for every replica to report a delivery by the new registration.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    #[arg(long, default_value_t = 2000, hide = true)]
    pub poll_ms: u64,
}

/// Qminder's answer to `POST /v1/webhooks`. The document's ids are UUID strings; its
/// JavaScript SDK types them as numbers: either is read.
#[derive(Debug, Deserialize)]
struct Registered {
    id: serde_json::Value,
    secret: String,
}

/// A webhook id as Qminder gives them (a UUID, or digits as the SDK types them): nothing
/// else goes into a request's path.
fn webhook_id(id: &str) -> Result<String, String> {
    let ok = !id.is_empty() && id.len() <= 64;
    if ok && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(id.to_owned())
    } else {
        Err("a webhook id is a UUID or a number, as Qminder answered it".into())
    }
}

pub fn run(args: &WebhooksArgs) -> ExitCode {
    let settings = match config_arg::load(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    crate::telemetry::init_for_tools();
    let chosen = crate::config::qminder_endpoint(&settings.endpoints, args.endpoint.as_deref());
    let (endpoint, qminder) = match chosen {
        Ok(chosen) => chosen,
        Err(error) => return fail(&error),
    };
    let client = match Client::new(qminder) {
        Ok(client) => client,
        Err(error) => return fail(&error.to_string()),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    let done = runtime.block_on(async {
        match &args.action {
            Action::Register {
                url,
                secret_file,
                show_secret,
            } => register(&client, url, secret_file.as_deref(), *show_secret).await,
            Action::Remove { id } => remove(&client, id).await,
            Action::Rotate(rotate_args) => {
                rotate::rotate(&client, &endpoint.path, rotate_args).await
            }
        }
    });
    done.unwrap_or_else(|error| fail(&error))
}

fn fail(error: &str) -> ExitCode {
    eprintln!("qminder-bridge: webhooks: {error}");
    ExitCode::from(2)
}

/// Registers `url`; the secret goes to `secret_file` (checked free before anything is
/// registered), else to standard output if asked.
async fn register(
    client: &Client,
    url: &str,
    secret_file: Option<&Path>,
    show_secret: bool,
) -> Result<ExitCode, String> {
    if let Some(file) = secret_file {
        free(file)?;
    }
    let (id, secret) = create(client, url).await?;
    if let Some(file) = secret_file {
        write_private(file, secret.as_bytes()).map_err(|e| {
            format!(
                "registered webhook {id} for {url}, but cannot write its secret to {}: {e}; remove it with `webhooks remove {id}`",
                file.display()
            )
        })?;
    }
    println!("{id}");
    if show_secret {
        println!("{secret}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `file` does not exist yet and its directory does: checked before registering, so that
/// a registration is never left without a place for its secret.
pub(super) fn free(file: &Path) -> Result<(), String> {
    if file.exists() {
        return Err(format!(
            "{} exists; a secret is never overwritten",
            file.display()
        ));
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(dir) if !dir.is_dir() => Err(format!("{} is not a directory", dir.display())),
        _ => Ok(()),
    }
}

/// `POST /v1/webhooks`: the new webhook's id and secret.
pub(super) async fn create(client: &Client, url: &str) -> Result<(String, String), String> {
    let body = serde_json::json!({ "url": url });
    let registered: Registered = client.post("/v1/webhooks", &body).await.map_err(|e| {
        // A 5xx or a broken connection may come after Qminder registered it.
        let maybe = matches!(&e, ApiError::Transport { .. })
            || matches!(&e, ApiError::Status { status, .. } if *status >= 500);
        let hint = if maybe {
            "; Qminder may have registered it all the same, and its API cannot list \
             webhooks: check the account's webhooks in Qminder before trying again"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    let id = match &registered.id {
        serde_json::Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    Ok((id, registered.secret))
}

/// `DELETE /v1/webhooks/{id}`; `gone_is_done`: a 404 (removed already, by an earlier
/// attempt whose answer was lost) counts as removed.
pub(super) async fn delete(client: &Client, id: &str, gone_is_done: bool) -> Result<(), String> {
    let path = format!("/v1/webhooks/{id}");
    match client.delete::<serde_json::Value>(&path).await {
        Ok(_) => Ok(()),
        Err(ApiError::Status { status: 404, .. }) if gone_is_done => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

async fn remove(client: &Client, id: &str) -> Result<ExitCode, String> {
    delete(client, id, false).await?;
    println!("removed {id}");
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a new file of mode 0600, fsynced; an existing file is an error.
pub(super) fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    out.write_all(bytes)?;
    out.sync_all()
}
