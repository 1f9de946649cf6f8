//! The operator tools, apart from the data path: the command line ([`cli`]), `send`,
//! `spool` inspection and re-sending, and Qminder's REST API ([`qminder_api`]) for
//! `backfill` and `webhooks`. The data path never calls into this wing; this wing uses the data path's
//! stages (configuration, routing, record encoding, the producer's settings).

pub mod backfill;
pub mod cli;
pub mod config_arg;
pub mod qminder_api;
pub mod reconcile;
pub mod send;
pub mod spool_cli;
pub mod webhooks;
