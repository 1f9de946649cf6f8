//! `qminder-bridge send`: signs files as Qminder signs a webhook and POSTs them, one after
//! another, to a running bridge — a smoke test for a deployment, not a load generator.
//!
//! Every file is read before the first request, so a typo in a path sends nothing. The
//! bytes are sent exactly as they are in the file (no JSON reformatting: the signature and
//! the bridge's byte-exact `data` both depend on it). One line per file goes to stdout:
//! `<status>\t<file>\t<answer>`; the exit code is 0 when every answer was 2xx, 1 when one
//! was not or could not be had, 2 when nothing was sent (usage, secret, unreadable file).
//! HTTP is reqwest (rustls with the Mozilla roots, plus `--ca-file` for a private CA).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use secrecy::SecretString;

use crate::signature::Signer;

/// What `send` needs, parsed by `cli`.
#[derive(Debug)]
pub struct SendRequest<'a> {
    /// Where to POST.
    pub url: &'a str,
    /// The URL the signature covers, when it is not `url` (the bridge reached through a
    /// port-forward or a proxy while Qminder knows it by its public URL).
    pub sign_url: Option<&'a str>,
    /// PEM file of an extra CA to trust (a self-signed `[server.tls]`).
    pub ca_file: Option<&'a Path>,
    /// Bound on each request, connection included.
    pub timeout: Duration,
    /// The bodies, in the order they are sent.
    pub files: &'a [PathBuf],
}

/// Longest answer printed per line; a bridge's answers are far shorter.
const MAX_ANSWER_CHARS: usize = 300;

/// Runs `send`; `secret` is the webhook secret (from `$QMINDER_SECRET`).
pub fn send(request: &SendRequest<'_>, secret: SecretString) -> ExitCode {
    let url = match reqwest::Url::parse(request.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            eprintln!(
                "qminder-bridge: --url must be an http:// or https:// URL, got {:?}",
                request.url
            );
            return ExitCode::from(2);
        }
    };
    let mut bodies = Vec::with_capacity(request.files.len());
    for path in request.files {
        match std::fs::read(path) {
            Ok(body) => bodies.push(body),
            Err(e) => {
                eprintln!(
                    "qminder-bridge: cannot read {}: {e}; nothing was sent",
                    path.display()
                );
                return ExitCode::from(2);
            }
        }
    }
    let client = match client(request) {
        Ok(client) => client,
        Err(message) => {
            eprintln!("qminder-bridge: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qminder-bridge: cannot start the async runtime: {e}; nothing was sent");
            return ExitCode::from(2);
        }
    };
    let signer = Signer::new(request.sign_url.unwrap_or(request.url), &secret);
    let refused = runtime.block_on(post_all(&client, &url, &signer, request.files, bodies));
    if refused == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "qminder-bridge: {refused} of {} webhook(s) not accepted",
            request.files.len()
        );
        ExitCode::from(1)
    }
}

/// POSTs each body, signed, printing one line per answer; how many were not 2xx.
async fn post_all(
    client: &reqwest::Client,
    url: &reqwest::Url,
    signer: &Signer,
    files: &[PathBuf],
    bodies: Vec<Vec<u8>>,
) -> usize {
    let mut refused = 0_usize;
    for (path, body) in files.iter().zip(bodies) {
        let signature = signer.sign(&body);
        let answer = client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("x-qminder-signature", signature)
            .body(body)
            .send()
            .await;
        let (status, text) = match answer {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_else(|e| e.to_string());
                if !status.is_success() {
                    refused += 1;
                }
                (status.as_u16().to_string(), text)
            }
            Err(e) => {
                refused += 1;
                ("error".to_owned(), error_chain(&e))
            }
        };
        println!("{status}\t{}\t{}", path.display(), one_line(&text));
    }
    refused
}

fn client(request: &SendRequest<'_>) -> Result<reqwest::Client, String> {
    // No redirects: a 301/302/303 would turn the POST into a GET without the body, and a
    // 2xx from wherever it led would look like success. The answer is reported as it is.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(request.timeout)
        .user_agent(concat!("qminder-bridge-send/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = request.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {} is not PEM certificates: {e}", path.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `error: cause: cause` — reqwest's top-level message alone rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The answer on one line, cut short if it is long (an HTML error page from a proxy).
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ANSWER_CHARS)
        .collect();
    if text.chars().count() > MAX_ANSWER_CHARS {
        line.push('…');
    }
    line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn answers_are_printed_on_one_bounded_line() {
        assert_eq!(one_line("{\"error\":\"x\"}\n"), "{\"error\":\"x\"}");
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
        let long = "x".repeat(1000);
        let line = one_line(&long);
        assert_eq!(line.chars().count(), 301);
        assert!(line.ends_with('…'));
    }
}
