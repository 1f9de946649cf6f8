//! One HTTP client for Qminder's REST API: the key, the pace, the retries, the errors.
//!
//! Every request (GET, POST, DELETE) waits for its turn ([`Pacer`]), sends the key in
//! `X-Qminder-REST-API-Key` (never in a URL, a log line or an error), and retries a 429, a
//! 5xx or a broken connection after a [`Backoff`], up to [`MAX_ATTEMPTS`]; a POST only a
//! 429, since one that may have been taken must not create a second webhook. The
//! OpenAPI document declares no error answers and shows several error shapes
//! (`{statusCode, message, developerMessage}`, `{statusCode, errors}`, `{code, message}`),
//! so errors go by the HTTP status and their message is read leniently. HTTP is reqwest
//! (rustls, Mozilla roots).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::pace::{Backoff, Pacer, parse_retry_after};
use crate::config::QminderSettings;

/// The header Qminder reads the API key from.
pub const KEY_HEADER: &str = "X-Qminder-REST-API-Key";
/// Attempts of one request before its error is final.
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest error message kept from an answer.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a request to Qminder's API failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Qminder refused the API key ({status}): check [endpoints.qminder] api_key, and that \
         the key belongs to this account"
    )]
    Unauthorized { status: u16 },
    #[error("Qminder kept answering 429 (rate limited) after {attempts} attempts; try later")]
    RateLimited { attempts: u32 },
    #[error("Qminder answered {status} to {what}: {message}")]
    Status {
        status: u16,
        what: String,
        message: String,
    },
    #[error("cannot reach Qminder's API for {what} after {attempts} attempts: {source}")]
    Transport {
        what: String,
        attempts: u32,
        source: reqwest::Error,
    },
    #[error("Qminder's answer to {what} is not what its API document describes: {detail}")]
    Decode { what: String, detail: String },
    #[error("cannot build the API client: {0}")]
    Setup(String),
}

/// What the client has done, for the summary and the metrics.
#[derive(Debug, Default)]
pub struct Usage {
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Answers that were 429.
    pub rate_limited: AtomicU64,
}

/// A client for one account's API.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    pacer: Pacer,
    first_backoff: Duration,
    pub usage: Usage,
}

impl Client {
    pub fn new(settings: &QminderSettings) -> Result<Self, ApiError> {
        let key = settings
            .api_key
            .resolve()
            .map_err(|e| ApiError::Setup(format!("api_key: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .user_agent(concat!("qminder-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Setup(e.to_string()))?;
        Ok(Self {
            http,
            base: settings.api_url.trim_end_matches('/').to_owned(),
            key,
            pacer: Pacer::new(settings.max_requests_per_s),
            first_backoff: Duration::from_secs(1),
            usage: Usage::default(),
        })
    }

    /// Waits `first` instead of 1 s before the first retry (tests).
    pub fn with_first_backoff(mut self, first: Duration) -> Self {
        self.first_backoff = first;
        self
    }

    /// `GET path?query`, decoded as `T`, retried as the module says.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.send(reqwest::Method::GET, path, query, None).await
    }

    /// `POST path` with a JSON `body`. Retried only after a 429 (the request was not
    /// taken): a POST that may have been taken (a 5xx, a broken connection) is not sent
    /// again, as it could create a second webhook.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        self.send(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// `DELETE path`, retried as a GET is.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(reqwest::Method::DELETE, path, &[], None).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let what = format!("{method} {path}");
        let once = method == reqwest::Method::POST;
        let mut backoff = Backoff::new(self.first_backoff, Duration::from_secs(30));
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pacer.turn().await;
            self.usage.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            request = request
                .query(query)
                .header(KEY_HEADER, self.key.expose_secret());
            if let Some(body) = body {
                request = request.json(body);
            }
            let retry_after = match request.send().await {
                Ok(answer) => match self.judge(answer, &what, attempt, once).await? {
                    Judged::Done(body) => return decode(&body, &what),
                    Judged::Retry(after) => after,
                },
                Err(source) if once || attempt >= MAX_ATTEMPTS || source.is_builder() => {
                    return Err(ApiError::Transport {
                        what,
                        attempts: attempt,
                        source,
                    });
                }
                Err(_) => None,
            };
            let wait = backoff.next_wait(retry_after);
            tracing::debug!(%what, attempt, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads one answer: its body if 2xx, a wait if worth retrying, or the final error.
    async fn judge(
        &self,
        answer: reqwest::Response,
        what: &str,
        attempt: u32,
        once: bool,
    ) -> Result<Judged, ApiError> {
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = answer.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Judged::Done(body));
        }
        let last = attempt >= MAX_ATTEMPTS;
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(ApiError::Unauthorized {
                status: status.as_u16(),
            }),
            StatusCode::TOO_MANY_REQUESTS => {
                self.usage.rate_limited.fetch_add(1, Ordering::Relaxed);
                if last {
                    Err(ApiError::RateLimited { attempts: attempt })
                } else {
                    Ok(Judged::Retry(retry_after))
                }
            }
            s if s.is_server_error() && !last && !once => Ok(Judged::Retry(retry_after)),
            _ => Err(ApiError::Status {
                status: status.as_u16(),
                what: what.to_owned(),
                message: error_message(&body),
            }),
        }
    }
}

enum Judged {
    Done(bytes::Bytes),
    Retry(Option<Duration>),
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Decode {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// The message of an error answer in any of Qminder's shapes, else the start of its text.
pub fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        ["message", "developerMessage", "errors", "error"]
            .iter()
            .find_map(|k| v.get(*k))
            .map(|m| match m {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_owned();
    }
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::error_message;

    #[test]
    fn error_messages_are_read_from_each_of_qminders_shapes() {
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"statusCode":400,"message":"Bad limit","developerMessage":"x"}"#,
                "Bad limit",
            ),
            (
                br#"{"statusCode":400,"errors":{"limit":"too big"}}"#,
                r#"{"limit":"too big"}"#,
            ),
            (br#"{"code":"E1","message":"Nope"}"#, "Nope"),
            (b"<html>Bad gateway</html>", "<html>Bad gateway</html>"),
            (b"", "(no message)"),
            (br#"{"statusCode":500}"#, r#"{"statusCode":500}"#),
        ];
        for (body, want) in cases {
            assert_eq!(
                error_message(body),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
