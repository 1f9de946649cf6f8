//! Shared test machinery: a real broker, the bridge on port 0, independent readers.

pub mod app;
pub mod broker;
pub mod kafka;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod qminder_sim;
pub mod schema;
pub mod traffic;
pub mod volume;

pub use app::{
    PATH, SECRET, TestApp, sign, spawn_app, spawn_app_unready, spawn_app_with, test_settings,
};

/// Tests that load the machine heavily (the attacks) take this for writing; tests whose
/// bounds are about time (the cluster faults, the slow link, the full disk) take it for
/// reading: they run together, but never while an attack eats the CPU they are timed on.
pub static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// `text` in a temporary `.toml` file that lives as long as the value.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

/// Sends `signal` (`STOP`, `CONT`, `HUP`, …) to process `pid`, with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(sent.success(), "kill -{signal} {pid}");
}
