//! qminder-bridge: Qminder's signed webhooks in, one Kafka topic per event type out,
//! 2xx only after Kafka's acknowledgement.
//!
//! The data path, one module per stage: [`ingress`] → [`signature`] → [`event`] →
//! [`record`] → [`routing`] → [`publisher`] → back to [`ingress`]. Around it: [`config`],
//! [`metrics`], [`health`], and [`startup`], the composition root.

pub mod access;
pub mod cli;
pub mod config;
pub mod dedupe;
pub mod embedded;
pub mod errors;
pub mod event;
pub mod health;
pub mod http_server;
pub mod ingress;
pub mod kafka_context;
pub mod metrics;
pub mod privacy;
pub mod producer_config;
pub mod publisher;
pub mod record;
pub mod routing;
pub mod secret;
pub mod send;
pub mod signature;
pub mod spool;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod topics;
