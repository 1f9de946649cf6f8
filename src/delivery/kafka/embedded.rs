//! The embedded try-out broker: librdkafka's in-process mock cluster.
//!
//! With `kafka.bootstrap_servers = "embedded"` the bridge starts a mock cluster
//! (`rdkafka::mocking::MockCluster`) that speaks the Kafka protocol on a loopback port, so
//! other clients (`kcat -b ADDR -C -t qminder.ticket_created`) can read what the bridge
//! publishes. Nothing persists: it lives in memory and dies with the process.
//! The mock cluster is not `Send`, so it lives on a thread of its own until dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

/// A running mock cluster; stops when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` created (`partitions` each).
    pub fn start(topics: Vec<String>, partitions: i32) -> Result<Self, String> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for topic in &topics {
                    if let Err(e) = cluster.create_topic(topic, partitions, 1) {
                        let _ = ready_tx.send(Err(format!("creating {topic}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Sender dropped or a stop sent: either way, shut the cluster down.
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| e.to_string())?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| "the embedded broker's thread ended early".to_owned())??;
        Ok(Self {
            bootstrap_servers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `host:port` to give Kafka clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
