//! `[endpoints.qminder]`: how to reach Qminder's REST API for the account an endpoint
//! receives webhooks from (used by `backfill`; not by the data path).

use serde::{Deserialize, Serialize};

use crate::secret::SecretSpec;

/// Qminder's REST API, as its OpenAPI document names the server.
pub const DEFAULT_API_URL: &str = "https://api.qminder.com";

/// The most requests a second Qminder allows one key (bursts of 40 aside): 5.
pub const QMINDER_RATE_LIMIT_PER_S: f64 = 5.0;

/// `[endpoints.qminder]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QminderSettings {
    /// The API's base URL. Default: Qminder's own.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The account's REST API key (header `X-Qminder-REST-API-Key`): a literal, `env:NAME`
    /// or `file:PATH`. Read-only use: ticket search and locations.
    pub api_key: SecretSpec,
    /// Location ids to search. Empty: every location of the account (`GET /v1/locations`).
    #[serde(default)]
    pub locations: Vec<u64>,
    /// Longest wait for one API answer.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most API requests a second, below Qminder's 5 a second per key so that other users
    /// of the same key keep some room. Above 0, at most 5.
    #[serde(default = "default_max_requests_per_s")]
    pub max_requests_per_s: f64,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

fn default_max_requests_per_s() -> f64 {
    2.0
}

impl QminderSettings {
    /// Everything wrong with it, each with how to fix it; `at` names the section.
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://")) {
            problems.push(format!(
                "{at}.api_url = {:?} must be an http(s):// URL, e.g. {DEFAULT_API_URL:?}",
                self.api_url
            ));
        }
        if let Err(e) = self.api_key.resolve() {
            problems.push(format!("{at}.api_key: {e}"));
        }
        if self.request_timeout_ms == 0 {
            problems.push(format!("{at}.request_timeout_ms must be above 0"));
        }
        if !(self.max_requests_per_s > 0.0 && self.max_requests_per_s <= QMINDER_RATE_LIMIT_PER_S) {
            problems.push(format!(
                "{at}.max_requests_per_s = {} must be above 0 and at most \
                 {QMINDER_RATE_LIMIT_PER_S} (Qminder's limit per API key)",
                self.max_requests_per_s
            ));
        }
        problems
    }
}
