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

/// `[reconcile]`: continuous reconciliation against Qminder's API. Off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Every `interval_s`, fill the window that ended `lag_s` ago, as `backfill` would.
    pub enabled: bool,
    /// The endpoint (its path) whose account to reconcile. Default: the only endpoint with
    /// an `[endpoints.qminder]` section.
    pub endpoint: Option<String>,
    /// How often a run starts, on each replica; the one holding the lease runs, the others
    /// skip. Each run covers two intervals, so a skipped run leaves no gap.
    pub interval_s: u64,
    /// How long after the fact a transition is reconciled: longer than Qminder's delivery
    /// delay and any spool backlog, or a late webhook is published twice (under two ids).
    pub lag_s: u64,
    /// How long before its window a ticket may have been created and still change in it.
    pub lookback_hours: u64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            interval_s: 300,
            lag_s: 900,
            lookback_hours: 24,
        }
    }
}

/// The longest look-back: a ticket older than a year is not searched.
pub const MAX_LOOKBACK_HOURS: u64 = 24 * 365;
/// The longest lag and interval: a week.
pub const MAX_RECONCILE_S: u64 = 7 * 24 * 3600;

impl ReconcileSettings {
    /// Everything wrong with it, given the endpoints.
    pub fn problems(&self, endpoints: &[super::EndpointSettings]) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        if self.interval_s == 0 || self.interval_s > MAX_RECONCILE_S {
            problems.push(format!(
                "reconcile.interval_s must be above 0 and at most {MAX_RECONCILE_S} (300 is a good start)"
            ));
        }
        if self.lag_s > MAX_RECONCILE_S {
            problems.push(format!(
                "reconcile.lag_s must be at most {MAX_RECONCILE_S} (a week); 900 is a good start"
            ));
        }
        if self.lookback_hours > MAX_LOOKBACK_HOURS {
            problems.push(format!(
                "reconcile.lookback_hours must be at most {MAX_LOOKBACK_HOURS} (a year); 24 is a good start"
            ));
        }
        if let Err(e) = qminder_endpoint(endpoints, self.endpoint.as_deref()) {
            problems.push(format!("reconcile: {e}"));
        }
        problems
    }
}

/// The endpoint whose account to search: the one at `path`, or the only one with an
/// `[endpoints.qminder]` section. `backfill --endpoint` and `reconcile.endpoint` both.
pub fn qminder_endpoint<'a>(
    endpoints: &'a [super::EndpointSettings],
    path: Option<&str>,
) -> Result<(&'a super::EndpointSettings, &'a QminderSettings), String> {
    let with_api: Vec<_> = endpoints
        .iter()
        .filter_map(|e| e.qminder.as_ref().map(|q| (e, q)))
        .collect();
    let chosen: Vec<_> = with_api
        .iter()
        .filter(|(e, _)| path.is_none_or(|p| e.path == p))
        .collect();
    let paths: Vec<&str> = with_api.iter().map(|(e, _)| e.path.as_str()).collect();
    match (chosen.as_slice(), path) {
        ([one], _) => Ok(**one),
        ([], Some(p)) => Err(format!(
            "endpoint {p:?} has no [endpoints.qminder] section; endpoints with one: {paths:?}"
        )),
        ([], None) => Err(
            "no endpoint has an [endpoints.qminder] section (api_key, …): add one to the endpoint to fill"
                .into(),
        ),
        (_, _) => Err(format!(
            "several endpoints have [endpoints.qminder] ({paths:?}): name one (reconcile.endpoint, or backfill --endpoint PATH)"
        )),
    }
}
