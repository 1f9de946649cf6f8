//! The forwarder's durable cursor: the first sequence number Kafka has not acknowledged,
//! in one small file replaced atomically (`durable.rs`), so a crash leaves either the old
//! cursor or the new one.

use std::fs;
use std::path::{Path, PathBuf};

/// The durable cursor file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("cursor"),
        }
    }

    /// The first sequence number not yet forwarded (0 when there is no cursor yet).
    pub fn load(&self) -> std::io::Result<u64> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold a number", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Durably replaces the cursor.
    pub fn store(&self, next: u64) -> std::io::Result<()> {
        super::durable::replace(&self.path, &[format!("{next}\n").as_bytes()])
    }
}
