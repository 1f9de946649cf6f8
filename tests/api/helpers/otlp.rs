//! An OTLP/HTTP trace receiver nobody on this project wrote the decoder of
//! (`tests/clients/otlp_receiver.py`, the official protobuf definitions), as a process the
//! tests can stop (SIGSTOP) and read the spans of.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct OtlpReceiver {
    child: Child,
    pub port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl OtlpReceiver {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let out = dir.path().join("spans.jsonl");
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/otlp_receiver.py"
            ))
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/setup installs its packages)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the receiver prints its port");
        let port = line.trim().parse().expect("a port");
        Self {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    /// The base URL, for `telemetry.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON span"))
            .collect()
    }

    /// Waits until the spans received include one that `found` accepts; all spans then.
    pub async fn wait_for(&self, what: &str, found: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if spans.iter().any(&found) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "never received {what}: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends it `signal` (`STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        super::signal(self.child.id(), signal);
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
