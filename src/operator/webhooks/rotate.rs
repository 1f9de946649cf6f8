//! `webhooks rotate`: the overlap of two registrations, walked step by step and resumable
//! from its state file (the module above says why it is done this way).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Client, RotateArgs, create, delete, free, write_private};

/// A rotation's progress, written (0600) before anything else once the new webhook is
/// registered: its id and secret are never lost, whatever happens next.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct State {
    new_id: String,
    new_url: String,
    /// The new registration's secret (so the secret file can be written again).
    secret: String,
    old_id: String,
    /// Each bridge's count of webhooks verified for `new_url` when the rotation began
    /// (that URL may have delivered before, under a registration since removed): only
    /// deliveries beyond it count.
    baselines: BTreeMap<String, u64>,
    old_removed: bool,
}

/// The overlap, step by step; resumes from `state_file`.
pub(super) async fn rotate(
    client: &Client,
    path: &str,
    args: &RotateArgs,
) -> Result<ExitCode, String> {
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
        None => begin(client, path, args).await?,
    };
    if !args.secret_file.exists() {
        write_private(&args.secret_file, state.secret.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", args.secret_file.display()))?;
    }
    if !state.old_removed {
        println!(
            "waiting for every bridge to verify a webhook from {} (add it to the endpoint {path} as [[endpoints.registrations]] url = {:?}, secrets = [\"file:…\"]; docs/operations.md)",
            state.new_url, state.new_url
        );
        if !every_bridge_verified(path, &mut state, args).await {
            println!(
                "timed out: both registrations remain ({} and {}); run the same command again to resume",
                state.old_id, state.new_id
            );
            return Ok(ExitCode::from(1));
        }
        delete(client, &state.old_id, true).await?;
        state.old_removed = true;
        write_state(&args.state_file, &state)?;
    }
    println!(
        "rotated: {} delivers; remove the old registration's URL and secret from the configuration",
        state.new_id
    );
    Ok(ExitCode::SUCCESS)
}

/// Registers the new URL and writes the state (id and secret) before anything else.
async fn begin(client: &Client, path: &str, args: &RotateArgs) -> Result<State, String> {
    free(&args.state_file)?;
    free(&args.secret_file)?;
    let (new_id, secret) = create(client, &args.new_url).await?;
    let mut state = State {
        new_id,
        new_url: args.new_url.clone(),
        secret,
        old_id: args.old_id.clone(),
        baselines: BTreeMap::new(),
        old_removed: false,
    };
    let new_id = state.new_id.clone();
    write_state(&args.state_file, &state).map_err(|e| {
        format!("registered webhook {new_id} for {}, but {e}; remove it with `webhooks remove {new_id}`", args.new_url)
    })?;
    for bridge in &args.bridges {
        if let Some(count) = count_at(bridge, path, &args.new_url).await {
            state.baselines.insert(bridge.clone(), count);
        }
    }
    write_state(&args.state_file, &state)?;
    println!(
        "registered {} as {}; its secret is in {}",
        state.new_url,
        state.new_id,
        args.secret_file.display()
    );
    Ok(state)
}

/// The bridge's count of webhooks verified for `url` on `path`, if it answered.
async fn count_at(bridge: &str, path: &str, url: &str) -> Option<u64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let answer = http.get(bridge).send().await.ok()?;
    let text = answer.error_for_status().ok()?.text().await.ok()?;
    Some(verified(&text, path, url))
}

/// Polls every bridge until each has verified a webhook signed by the new registration
/// beyond its baseline (a bridge that did not answer when the rotation began takes its
/// first answer as its baseline).
async fn every_bridge_verified(path: &str, state: &mut State, args: &RotateArgs) -> bool {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    loop {
        let mut all = true;
        for bridge in &args.bridges {
            let Some(count) = count_at(bridge, path, &state.new_url).await else {
                all = false;
                continue;
            };
            let baseline = *state.baselines.entry(bridge.clone()).or_insert(count);
            all &= count > baseline;
        }
        let _ = write_state(&args.state_file, state);
        if all {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
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
