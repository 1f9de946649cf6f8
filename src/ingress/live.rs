//! The part of the configuration a reload swaps in (`config/reload.rs`, the keys marked
//! live): the endpoints (paths, URLs, secrets), the privacy rules, the IP allow-list.
//!
//! A webhook request takes the snapshot once, as it starts, and finishes under it however
//! many reloads happen meanwhile (an `Arc` it holds). The swap is `arc-swap`'s: a load is
//! a few atomic operations and never waits for a writer, so the request path pays no lock.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Endpoint;
use crate::access::AccessPolicy;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::privacy::Privacy;
use crate::routing::Router;
use crate::secret::SecretError;

/// Why the live part of a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("server.allow_cidrs / trusted_proxies: {0}")]
    Access(String),
}

/// One version of the live configuration.
#[derive(Debug)]
pub struct Live {
    /// By path.
    endpoints: HashMap<String, Arc<Endpoint>>,
    pub(super) privacy: Option<Privacy>,
    pub(super) access: AccessPolicy,
}

impl Live {
    /// Resolves the secrets (re-reading `file:` ones) and parses the rules of `settings`.
    pub fn build(
        settings: &Settings,
        metrics: &Metrics,
        router: &Router,
    ) -> Result<Self, LiveError> {
        let endpoints = settings
            .endpoints
            .iter()
            .map(|e| Ok((e.path.clone(), Arc::new(Endpoint::new(e, metrics, router)?))))
            .collect::<Result<_, SecretError>>()?;
        let cidrs = |list: &[String]| {
            list.iter()
                .map(|c| crate::access::parse_cidr(c).map_err(LiveError::Access))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            endpoints,
            privacy: settings.privacy.rules()?,
            access: AccessPolicy::new(
                cidrs(&settings.server.allow_cidrs)?,
                cidrs(&settings.server.trusted_proxies)?,
            ),
        })
    }

    /// The endpoint served on `path`, if any.
    pub fn endpoint(&self, path: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(path)
    }
}

/// The current [`Live`], swapped whole.
#[derive(Debug)]
pub struct Current(ArcSwap<Live>);

impl Current {
    pub fn new(live: Live) -> Self {
        Self(ArcSwap::from_pointee(live))
    }

    /// The snapshot a request runs under, to its end.
    pub fn load(&self) -> Arc<Live> {
        self.0.load_full()
    }

    /// From the next request on, `live`.
    pub fn swap(&self, live: Live) {
        self.0.store(Arc::new(live));
    }
}
