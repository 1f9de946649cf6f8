//! Process hardening, done first thing in `serve` and the spool tool: what a bridge
//! holds in memory (webhook secrets, Kafka credentials, personal data in payloads) must
//! not end up in a core file, and what it writes (spool segments, parked records, the
//! cursor) is readable by its own user only.
//! - `RLIMIT_CORE` 0 (soft and hard) and `PR_SET_DUMPABLE` 0: no core dump, also where the
//!   kernel pipes cores to a collector (which ignores `RLIMIT_CORE`), and no `ptrace` by
//!   other processes of the same user.
//! - umask 077: files 0600, directories 0700, whatever umask the bridge was started with.
//! - [`open_files_for`]: the soft `RLIMIT_NOFILE` raised toward the hard one, so that
//!   `server.max_connections` fit (a common soft limit is 1024, under the default 2048).
//!   Past the limit `accept` fails: connections wait in the backlog unseen, and the
//!   spool's and librdkafka's own opens fail too.
//!
//! Through rustix's safe wrappers (the crate denies `unsafe`). Linux only; elsewhere a
//! no-op.

/// What [`harden`] could not do (the bridge runs on, and says so).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct HardeningError {
    what: &'static str,
    source: std::io::Error,
}

/// Turns core dumps off and makes new files private. Each step is tried; the first
/// failure is returned after all were.
pub fn harden() -> Result<(), HardeningError> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, Resource, Rlimit};
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let no_core = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        let limit =
            rustix::process::setrlimit(Resource::Core, no_core).map_err(|e| HardeningError {
                what: "cannot set RLIMIT_CORE to 0",
                source: e.into(),
            });
        let dumpable = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)
            .map_err(|e| HardeningError {
                what: "cannot clear the process's dumpable flag",
                source: e.into(),
            });
        limit.and(dumpable)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

/// Descriptors the bridge needs besides its connections: the listener, epoll and wake-up
/// descriptors, librdkafka's sockets and pipes, the spool's files, the OTLP client.
pub const OTHER_DESCRIPTORS: u64 = 256;

/// The open-files limit, against what `connections` need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFiles {
    /// The soft limit already allows them.
    Enough { limit: u64 },
    /// The soft limit was raised (to the hard limit, or to what is needed if that is
    /// unlimited).
    Raised { from: u64, to: u64 },
    /// Even the hard limit (or an unprivileged raise) leaves fewer than needed.
    TooFew { limit: u64, needed: u64 },
}

/// Raises the soft `RLIMIT_NOFILE` so that `connections` plus [`OTHER_DESCRIPTORS`] fit,
/// as far as the hard limit allows.
pub fn open_files_for(connections: u64) -> OpenFiles {
    let needed = connections.saturating_add(OTHER_DESCRIPTORS);
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let now = getrlimit(Resource::Nofile);
        let soft = now.current.unwrap_or(u64::MAX);
        if soft >= needed {
            return OpenFiles::Enough { limit: soft };
        }
        let to = now.maximum.unwrap_or(needed);
        let raised = Rlimit {
            current: Some(to),
            maximum: now.maximum,
        };
        if to > soft && setrlimit(Resource::Nofile, raised).is_ok() {
            if to >= needed {
                return OpenFiles::Raised { from: soft, to };
            }
            return OpenFiles::TooFew { limit: to, needed };
        }
        OpenFiles::TooFew {
            limit: soft,
            needed,
        }
    }
    #[cfg(not(target_os = "linux"))]
    OpenFiles::Enough { limit: needed }
}

/// [`open_files_for`] `connections` (`Settings::connections`), saying what it did: INFO
/// when it raised the limit, WARN when it could not raise it far enough.
pub fn open_files_for_connections(connections: usize) {
    match open_files_for(u64::try_from(connections).unwrap_or(u64::MAX)) {
        OpenFiles::Enough { .. } => {}
        OpenFiles::Raised { from, to } => {
            tracing::info!(from, to, "Raised the open-files limit (RLIMIT_NOFILE).");
        }
        OpenFiles::TooFew { limit, needed } => tracing::warn!(
            limit,
            needed,
            "The open-files limit (RLIMIT_NOFILE) is below server.max_connections plus what \
             the bridge needs besides: past it connections wait unaccepted and the spool's \
             and Kafka's own files fail to open. Raise the hard limit (LimitNOFILE=, \
             ulimit -Hn, the container runtime's nofile) or lower server.max_connections."
        ),
    }
}

/// Tests that set the process's umask take this first: it is one for the whole process.
#[cfg(test)]
pub static UMASK_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn leaves_the_process_unable_to_dump_core_and_its_new_files_private() {
        let _umask = UMASK_TESTS.blocking_lock();
        harden().expect("hardening works for an unprivileged process too");
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
