//! The bridge as a real process (`qminder-bridge serve`), for what only a process shows:
//! signals, exit status, logs, the embedded broker.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qminder_bridge::config::Settings;
use qminder_bridge::secret::SecretSpec;
use serde_json::Value;

use super::app::{PATH, SECRET, sign, test_settings};
use super::broker::free_port;

pub struct BridgeProcess {
    child: Child,
    pub address: String,
    pub settings: Settings,
    pub dir: tempfile::TempDir,
}

impl BridgeProcess {
    /// Starts `qminder-bridge serve` with the test settings plus `tweak`, logging to a file.
    pub fn start(bootstrap: &str, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_with_env(bootstrap, tweak, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(
        bootstrap: &str,
        tweak: impl FnOnce(&mut Settings),
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch_with_env(process_settings(bootstrap, tweak), env)
    }

    /// Starts `qminder-bridge serve` with exactly `settings` (e.g. another's, to restart it).
    pub fn launch(settings: Settings) -> Self {
        Self::launch_with_env(settings, &[])
    }

    fn launch_with_env(settings: Settings, env: &[(&str, &str)]) -> Self {
        Self::launch_under(&[], settings, env)
    }

    /// Like [`start`](Self::start), run by the command `wrapper` (e.g. `prlimit …`), which
    /// is given the bridge's command line after its own.
    pub fn start_under(
        wrapper: &[&str],
        bootstrap: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::launch_under(wrapper, process_settings(bootstrap, tweak), &[])
    }

    fn launch_under(wrapper: &[&str], settings: Settings, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let config = dir.path().join("bridge.toml");
        std::fs::write(&config, toml::to_string(&settings).expect("TOML")).expect("write config");
        let log = std::fs::File::create(dir.path().join("bridge.log")).expect("log file");
        let bridge = env!("CARGO_BIN_EXE_qminder-bridge");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bridge);
                c
            }
            None => Command::new(bridge),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config)
            .env("QMINDER_BRIDGE_TEST_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the bridge starts");
        let scheme = if settings.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Self {
            address: format!("{scheme}://{}", settings.server.listen),
            child,
            settings,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default()
    }

    pub async fn readyz(&self) -> u16 {
        match http().get(format!("{}/readyz", self.address)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.readyz().await != 200 {
            assert!(
                Instant::now() < deadline,
                "not ready within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/metrics` shows `n` requests in flight.
    pub async fn wait_in_flight(&self, n: u32, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics().await;
            if text.contains(&format!("qminder_bridge_requests_in_flight {n}\n")) {
                return;
            }
            assert!(Instant::now() < deadline, "never {n} in flight");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A signed POST, as a future that owns everything it needs.
    pub fn post_signed(&self, body: &str) -> impl Future<Output = (u16, Value)> + Send + use<> {
        let url = format!("{}{PATH}", self.address);
        let signature = sign(SECRET, &self.settings.endpoints[0].url, body.as_bytes());
        let body = body.to_owned();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("X-Qminder-Signature", signature)
                .body(body)
                .send()
                .await
                .expect("an answer");
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
    }

    /// Replaces its configuration file with `settings` in one `rename` (a reload never
    /// reads half a file).
    pub fn rewrite_config(&self, settings: &Settings) {
        let staged = self.dir.path().join("bridge.toml.new");
        std::fs::write(&staged, toml::to_string(settings).expect("TOML")).expect("write");
        std::fs::rename(&staged, self.dir.path().join("bridge.toml")).expect("rename");
    }

    /// Whether the process still runs (it was not restarted, it did not die).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// The process's peak resident set size so far (`VmHWM` in `/proc/PID/status`).
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the bridge's /proc status");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    /// Its resident set size now (`VmRSS`) and its open file descriptors.
    pub fn rss_and_fds(&self) -> (u64, usize) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .count();
        (kib * 1024, fds)
    }

    /// Its RSS and fds once its open descriptors are back to `fds` (connections close once
    /// the bridge has read their end), or as they are after 10 s: a leak never comes back.
    pub async fn settled_rss_and_fds(&self, fds: usize) -> (u64, usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.rss_and_fds();
            if now.1 <= fds || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `HUP`).
    pub fn signal(&self, signal: &str) {
        super::signal(self.child.id(), signal);
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// One sample of `/metrics` (NaN if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(f64::NAN, |v| v.parse().expect("a number"))
    }

    /// Kills the process at once (SIGKILL): no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to end; its exit code, or `None` if it did not end in time.
    pub fn wait_exit(mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for the bridge's own endpoints, plain or TLS (its certificate is the test's).
/// The test settings for a bridge process: its own port, the secret from its environment.
fn process_settings(bootstrap: &str, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = test_settings(bootstrap);
    settings.server.listen = format!("127.0.0.1:{}", free_port());
    settings.endpoints[0].secrets = vec![SecretSpec::parse("env:QMINDER_BRIDGE_TEST_SECRET")];
    tweak(&mut settings);
    settings
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}
