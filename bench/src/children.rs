//! The processes a benchmark suite runs: tansu, the bridge, the baseline.
//!
//! Each is started with its output in a log file of the scratch directory, waited for
//! (a TCP accept, or an HTTP status), and stopped on drop: SIGTERM, a grace period, then
//! SIGKILL, so that nothing outlives the suite even when it fails half-way.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Result of the suite's steps; messages say what failed and where its log is.
pub type Result<T> = std::result::Result<T, String>;

/// A free loopback port (bound, read, released).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A running child process, stopped on drop.
#[derive(Debug)]
pub struct Running {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

impl Running {
    /// Starts `command` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot start.
    pub fn start(name: &str, mut command: Command, log: &Path, grace: Duration) -> Result<Self> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({command:?}): {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            grace,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited, pointing at its log.
    ///
    /// # Errors
    /// When it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Waits until `ready()` holds, failing if the process exits or `within` passes.
    ///
    /// # Errors
    /// When the process exits or the condition does not hold in time.
    pub fn wait_for(&mut self, within: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not ready within {within:?}; see {}",
                    self.name,
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, up to the grace period, then SIGKILL; the exit status, if it exited.
    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// True once something accepts TCP connections at `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The status of `GET path` at `addr` (blocking, one connection, 2 s bound), or `None`.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// `GET path` at `addr` (blocking, `Connection: close`, 2 s bound): status and raw answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    // "HTTP/1.1 200 OK"
    let status = answer.get(9..12)?.parse().ok()?;
    Some((status, answer))
}
