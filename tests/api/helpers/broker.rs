//! A real Kafka-protocol broker for the tests: tansu, started by the tests themselves.
//!
//! One shared broker serves every test that does not hurt it (each test uses its own
//! topics). Tests that freeze a broker (`SIGSTOP`) start a private one. Brokers are started
//! from one long-lived thread with `PR_SET_PDEATHSIG`, so none outlives the test process.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

#[derive(Debug, Clone, Copy)]
enum Storage {
    Memory,
    /// `tansu.db` in the broker's scratch directory (its working directory).
    Sqlite,
}

impl Storage {
    fn url(self) -> &'static str {
        match self {
            Self::Memory => "memory://tansu/",
            Self::Sqlite => "sqlite://tansu.db",
        }
    }
}

/// A running tansu broker, killed on drop.
pub struct Tansu {
    child: Child,
    port: u16,
    /// Its working directory (and storage); `None` once handed to a successor.
    dir: Option<tempfile::TempDir>,
}

impl Tansu {
    /// Starts a broker on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port`.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, port)
    }

    /// Starts a broker on a free port that tells clients to connect to `advertised` (a
    /// proxy in front of it).
    pub fn start_advertising(advertised: u16) -> Self {
        Self::start_with(free_port(), advertised)
    }

    /// Starts a broker on `port` that tells clients to connect to `advertised`.
    pub fn start_with(port: u16, advertised: u16) -> Self {
        Self::start_storing(port, advertised, Storage::Memory)
    }

    /// Starts a broker on a free port with SQLite storage: its high watermarks and
    /// offset-for-time answers are right where memory storage's are not (docs/testing.md).
    pub fn start_sqlite() -> Self {
        let port = free_port();
        Self::start_storing(port, port, Storage::Sqlite)
    }

    /// Starts a broker on a free port that requires SASL/SCRAM-SHA-512 from every client,
    /// knowing one user, `user` with `password`. (tansu's own user tool cannot
    /// authenticate: the user is made on the same SQLite storage before authentication is
    /// turned on.)
    pub fn start_scram(user: &str, password: &str) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("a scratch directory");
        let open = Self::start_in(dir, port, port, Storage::Sqlite, false);
        let created = Command::new(tansu_binary())
            .args(["user", "create", user, password, "--mechanism", "scram512"])
            .args(["--broker", &format!("tcp://127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .status()
            .expect("tansu user create runs");
        assert!(created.success(), "tansu user create");
        let mut open = open;
        let dir = open.dir.take().expect("the broker's directory");
        drop(open);
        Self::start_in(dir, port, port, Storage::Sqlite, true)
    }

    fn start_storing(port: u16, advertised: u16, storage: Storage) -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory");
        Self::start_in(dir, port, advertised, storage, false)
    }

    fn start_in(
        dir: tempfile::TempDir,
        port: u16,
        advertised: u16,
        storage: Storage,
        authentication: bool,
    ) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let mut command = Command::new(tansu_binary());
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", storage.url()])
            .args(authentication.then_some("--authentication"))
            // tansu reads a .env file from its working directory: give it an empty one.
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_this_process(command);
        let mut broker = Self {
            child,
            port,
            dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = broker.child.try_wait().expect("tansu's status");
            assert!(exited.is_none(), "tansu exited ({exited:?}) on port {port}");
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the broker: connections stay open, nothing answers.
    pub fn freeze(&self) {
        signal(self.pid(), Signal::STOP).expect("SIGSTOP reaches tansu");
    }

    /// Thaws a frozen broker.
    pub fn thaw(&self) {
        signal(self.pid(), Signal::CONT).expect("SIGCONT reaches tansu");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = signal(self.pid(), Signal::CONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `settings` authenticate to a [`Tansu::start_scram`] broker (SASL_PLAINTEXT,
/// SCRAM-SHA-512) as `user` with `password`.
pub fn use_scram(
    settings: &mut qminder_bridge::config::Settings,
    user: &str,
    password: qminder_bridge::secret::SecretSpec,
) {
    use qminder_bridge::config::{SaslMechanism, SecurityProtocol};
    let security = &mut settings.kafka.security;
    security.protocol = SecurityProtocol::SaslPlaintext;
    security.sasl_mechanism = Some(SaslMechanism::ScramSha512);
    security.sasl_username = Some(user.to_owned());
    security.sasl_password = Some(password);
}

/// The broker shared by the tests that do not disturb it.
pub fn shared() -> &'static str {
    static SHARED: OnceLock<(String, Mutex<Tansu>)> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let broker = Tansu::start();
            (broker.bootstrap(), Mutex::new(broker))
        })
        .0
}

/// An address where nothing answers for as long as this test process lives: a port from
/// [`free_port`], held and never listened on, so a connection is refused at once and no
/// other test's broker, proxy or bridge can take the port. (A port that was merely free
/// once was, in a CI run, taken by another test's broker while a test counted on nothing
/// being there.)
#[derive(Debug)]
pub struct DeadAddress {
    address: String,
}

impl DeadAddress {
    pub fn new() -> Self {
        Self {
            address: format!("127.0.0.1:{}", free_port()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }
}

/// A port for this test alone, held for the rest of the test process.
///
/// The port is held by a socket bound with `SO_REUSEADDR` and never listening. Linux then
/// gives it to no `bind` to port 0 and to no outgoing connection, so no other test's
/// bridge, proxy or client can take it, while whoever is told the port (tansu, a proxy,
/// a bridge: each binds with `SO_REUSEADDR`, as Tokio's, Go's and Rust's standard
/// listeners do) can listen on it, again and again. A port that was merely free once was,
/// in CI runs, taken by another test between being chosen and being listened on: a test
/// then talked to a stranger, or counted on nothing being there.
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("a port to hold");
    let port = socket.local_addr().expect("its address").port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(socket);
    port
}

/// Sends `signal` to `pid` with kill(2) itself. (It ran the `kill` command, whose
/// failure, e.g. to spawn under load, went unnoticed: a freeze that did not happen makes a
/// fault test lie. Once, under load, a frozen broker's record was answered other than 503.)
fn signal(pid: u32, signal: Signal) -> rustix::io::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid")).expect("not 0");
    kill_process(pid, signal)
}

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return path.into();
    }
    let home_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
        .filter(|p| p.exists());
    home_bin.unwrap_or_else(|| {
        assert!(
            Command::new("tansu").arg("--version").output().is_ok(),
            "tansu is not installed: run scripts/setup (or set TANSU=/path/to/tansu)"
        );
        PathBuf::from("tansu")
    })
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from a thread that lives as long as the process, with the child set to
/// die with it (`PR_SET_PDEATHSIG` fires when the *thread* that forked it ends).
fn spawn_tied_to_this_process(command: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(spawn_with_death_signal(&mut command));
            }
        });
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .expect("spawner lock")
        .send((command, reply_tx))
        .expect("the spawner thread runs");
    reply_rx
        .recv()
        .expect("the spawner answers")
        .expect("tansu starts")
}

#[allow(unsafe_code)]
fn spawn_with_death_signal(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn()
}
