//! Benchmark harness for qminder-bridge: a load generator of signed Qminder webhooks, a
//! baseline server, and the suite behind `scripts/bench`.
//!
//! [`events`] makes unique, realistic ticket webhooks and signs them; [`http`] sends them
//! over lean keep-alive connections; [`load`] drives closed-loop (maximum throughput) and
//! open-loop (latency at a fixed rate, without coordinated omission) runs into [`stats`];
//! [`kafka`] measures the broker's own latency floor with librdkafka alone;
//! [`delivery`] checks every acknowledged id in Kafka; [`procfs`] reads a server's CPU
//! time and peak RSS; [`suite`] runs tansu, the baseline and the bridge through
//! [`children`] and prints a [`report`].

pub mod children;
pub mod delivery;
pub mod events;
pub mod http;
pub mod kafka;
pub mod light;
pub mod load;
pub mod perfstat;
pub mod procfs;
pub mod report;
pub mod stats;
pub mod suite;
