//! qminder-bridge: Qminder's signed webhooks in, one Kafka topic per event type out,
//! 2xx only after Kafka's acknowledgement.
//!
//! The data path, one module per stage, numbered as `ingress` calls them: 1 [`ingress`] →
//! 2 [`signature`] → 3 [`event`] → 4 [`routing`] → 5 [`record`] → 6 [`delivery`] (Kafka's
//! producer, or the spool) → 7 back to [`ingress`] for the answer. Around it: [`config`],
//! [`metrics`], [`health`], [`shutdown`], [`reload`] (SIGHUP and the watch), [`traces`]
//! (OpenTelemetry spans and the context records carry), [`connection_limit`] (connections
//! per client address), [`connection_end`] (refusals actix-http makes itself, counted), and [`startup`], the composition root. The
//! operator tools (command line, `send`, `spool`, Qminder's API for `backfill`) live apart,
//! in [`operator`].

pub mod access;
pub mod config;
pub mod connection_end;
pub mod connection_limit;
pub mod dedupe;
pub mod delivery;
pub mod errors;
pub mod event;
pub mod hardening;
pub mod health;
pub mod http_server;
pub mod ingress;
pub mod metrics;
pub mod operator;
pub mod privacy;
pub mod record;
pub mod reload;
pub mod routing;
pub mod secret;
pub mod shutdown;
pub mod signature;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod traces;
