//! `qminder-bridge webhooks`: the bridge's webhook registrations in Qminder, through the
//! API key of `[endpoints.qminder]` (`POST /v1/webhooks`, `DELETE /v1/webhooks/{id}`).
//!
//! Qminder has no "rotate secret" call and its API cannot list webhooks, so a rotation is
//! an overlap, walked by `rotate`: register the new URL (the endpoint's with another query
//! string, since the signature covers the URL), save its id and secret at once (a state
//! file, and the secret in a file of mode 0600: a crash then leaves no registration whose
//! secret is lost), wait until every replica's `/metrics` shows deliveries signed by the
//! new registration (`qminder_bridge_webhooks_verified_total{registration}`), then remove
//! the old one. Run again after a crash or a time-out, it resumes from the state file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config_arg::{self, ConfigArg};
use super::qminder_api::Client;

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
    Remove { id: String },
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
    #[arg(long)]
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

/// A rotation's progress.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    new_id: String,
    new_url: String,
    old_id: String,
    old_removed: bool,
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
            Action::Rotate(rotate_args) => rotate(&client, &endpoint.path, rotate_args).await,
        }
    });
    done.unwrap_or_else(|error| fail(&error))
}

fn fail(error: &str) -> ExitCode {
    eprintln!("qminder-bridge: webhooks: {error}");
    ExitCode::from(2)
}

/// Registers `url`; the secret goes to `secret_file` first (so it is never lost), else to
/// standard output if asked.
async fn register(
    client: &Client,
    url: &str,
    secret_file: Option<&Path>,
    show_secret: bool,
) -> Result<ExitCode, String> {
    let registered = create(client, url, secret_file).await?;
    println!("{}", registered.0);
    if show_secret {
        println!("{}", registered.1);
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/webhooks`; the secret written to `secret_file` before anything else.
async fn create(
    client: &Client,
    url: &str,
    secret_file: Option<&Path>,
) -> Result<(String, String), String> {
    let body = serde_json::json!({ "url": url });
    let registered: Registered = client
        .post("/v1/webhooks", &body)
        .await
        .map_err(|e| e.to_string())?;
    let id = match &registered.id {
        serde_json::Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    if let Some(file) = secret_file {
        write_private(file, registered.secret.as_bytes()).map_err(|e| {
            format!(
                "registered webhook {id} for {url}, but cannot write its secret to {}: {e}; remove it with `webhooks remove {id}`",
                file.display()
            )
        })?;
    }
    Ok((id, registered.secret))
}

async fn remove(client: &Client, id: &str) -> Result<ExitCode, String> {
    let path = format!("/v1/webhooks/{id}");
    let _: serde_json::Value = client.delete(&path).await.map_err(|e| e.to_string())?;
    println!("removed {id}");
    Ok(ExitCode::SUCCESS)
}

/// The overlap, step by step; resumes from `state_file`.
async fn rotate(client: &Client, path: &str, args: &RotateArgs) -> Result<ExitCode, String> {
    let mut state = match read_state(&args.state_file)? {
        Some(state) if state.new_url != args.new_url || state.old_id != args.old_id => {
            return Err(format!(
                "{} holds another rotation (to {}, removing {}): finish it or remove the file",
                args.state_file.display(),
                state.new_url,
                state.old_id
            ));
        }
        Some(state) => state,
        None => {
            let (new_id, _) = create(client, &args.new_url, Some(&args.secret_file)).await?;
            let state = State {
                new_id,
                new_url: args.new_url.clone(),
                old_id: args.old_id.clone(),
                old_removed: false,
            };
            write_state(&args.state_file, &state)?;
            println!(
                "registered {} as {}; its secret is in {}",
                state.new_url,
                state.new_id,
                args.secret_file.display()
            );
            state
        }
    };
    if !state.old_removed {
        println!(
            "waiting for every bridge to verify a webhook from {} (add it to the endpoint {path} as [[endpoints.registrations]] url = {:?}, secrets = [\"file:…\"]; docs/operations.md)",
            state.new_url, state.new_url
        );
        if !every_bridge_verified(path, &state.new_url, args).await {
            println!(
                "timed out: both registrations remain ({} and {}); run the same command again to resume",
                state.old_id, state.new_id
            );
            return Ok(ExitCode::from(1));
        }
        remove(client, &state.old_id).await?;
        state.old_removed = true;
        write_state(&args.state_file, &state)?;
    }
    println!(
        "rotated: {} delivers; remove the old registration's URL and secret from the configuration",
        state.new_id
    );
    Ok(ExitCode::SUCCESS)
}

/// Polls every bridge's `/metrics` until each has verified a webhook signed by `url`.
async fn every_bridge_verified(path: &str, url: &str, args: &RotateArgs) -> bool {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client with a timeout builds");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut waiting: Vec<&String> = args.bridges.iter().collect();
    while Instant::now() < deadline {
        let mut still = Vec::new();
        for bridge in waiting {
            let text = match http.get(bridge.as_str()).send().await {
                Ok(answer) => answer.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if verified(&text, path, url) == 0 {
                still.push(bridge);
            }
        }
        if still.is_empty() {
            return true;
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    false
}

/// `qminder_bridge_webhooks_verified_total{endpoint=path, registration=url}` in `text`.
fn verified(text: &str, path: &str, url: &str) -> u64 {
    let (endpoint, registration) = (
        format!("endpoint=\"{path}\""),
        format!("registration=\"{url}\""),
    );
    text.lines()
        .filter(|l| l.starts_with("qminder_bridge_webhooks_verified_total{"))
        .filter(|l| l.contains(&endpoint) && l.contains(&registration))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn read_state(file: &Path) -> Result<Option<State>, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a rotation's state: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Replaces `file` with `state` (written beside it, then renamed: never half a file).
fn write_state(file: &Path, state: &State) -> Result<(), String> {
    let staged = file.with_extension("tmp");
    let _ = std::fs::remove_file(&staged);
    let json = serde_json::to_vec_pretty(state).expect("a state serialises");
    write_private(&staged, &json)
        .and_then(|()| std::fs::rename(&staged, file))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Writes `bytes` to a new file of mode 0600, fsynced; an existing file is an error.
fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    out.write_all(bytes)?;
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_verified_count_of_one_registration_of_one_endpoint() {
        let text = "qminder_bridge_webhooks_verified_total{endpoint=\"/a\",registration=\"https://b/a?r=2\"} 3\n\
                    qminder_bridge_webhooks_verified_total{endpoint=\"/a\",registration=\"https://b/a\"} 9\n";
        assert_eq!(verified(text, "/a", "https://b/a?r=2"), 3);
        assert_eq!(verified(text, "/a", "https://b/a?r=3"), 0);
        assert_eq!(verified("", "/a", "https://b/a"), 0);
    }
}
