//! The forwarder's durable cursor: the first sequence number Kafka has not acknowledged,
//! in one small file replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory), so a crash leaves either the old cursor or the new one.

use std::fs::{self, File};
use std::io::Write;
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
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{next}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
