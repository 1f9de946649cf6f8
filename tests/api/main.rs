//! Integration tests: the bridge as a platform team runs it, against a real Kafka-protocol
//! broker (tansu), read back by consumers that do not share the bridge's code.

mod helpers;

mod attacks;
mod backfill;
mod cli;
mod clients;
mod cluster;
mod connection_attacks;
mod credentials;
mod disk;
mod faults;
mod injected;
mod kafka_tls;
mod live_changes;
mod observability;
mod prometheus;
mod qminder_api;
mod rejections;
mod reload;
mod rotation;
mod routing;
mod security;
mod slow_link;
mod spool;
mod spool_held;
mod spool_tools;
mod trace_context;
mod traces;
mod unreadable;
mod upgrade;
mod webhooks;
