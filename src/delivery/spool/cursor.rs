//! The forwarder's durable cursor: the first sequence number Kafka has not acknowledged.
//!
//! Kept in place, so that moving it needs no free block (a full disk must not stop the
//! spool from recording its progress): `<spool dir>/cursor` is 64 bytes, two slots of 32,
//! `[magic "QBC2"][generation: u64][next: u64][CRC-32 of those 20 bytes: u32][8 zero
//! bytes]`, little-endian. A store writes the slot the last one did not (`pwrite`, then
//! `fdatasync`), with the next generation: a write torn by a crash leaves the other slot
//! whole, so a crash leaves either the old cursor or the new one. A load takes the valid
//! slot with the higher generation. The file is made once (written beside and renamed,
//! `durable.rs`), also from the one-number text file earlier releases wrote, which is still
//! read.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"QBC2";
const SLOT: usize = 32;

/// The durable cursor file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
}

/// One slot's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    generation: u64,
    next: u64,
}

impl Slot {
    fn encode(self) -> [u8; SLOT] {
        let mut bytes = [0u8; SLOT];
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4..12].copy_from_slice(&self.generation.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.next.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes(bytes.get(20..24)?.try_into().ok()?);
        (bytes.get(..4)? == MAGIC && crc32fast::hash(&bytes[..20]) == crc).then(|| Self {
            generation: word(4),
            next: word(12),
        })
    }
}

/// What the file holds.
enum Stored {
    Nothing,
    /// An earlier release's text cursor.
    Text(u64),
    Slots(Slot),
}

impl Cursor {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("cursor"),
        }
    }

    /// The first sequence number not yet forwarded (0 when there is no cursor yet).
    pub fn load(&self) -> io::Result<u64> {
        Ok(match self.read()? {
            Stored::Nothing => 0,
            Stored::Text(next) => next,
            Stored::Slots(slot) => slot.next,
        })
    }

    fn read(&self) -> io::Result<Stored> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::Nothing),
            Err(e) => return Err(e),
        };
        let slotted = bytes.len() == 2 * SLOT
            && (bytes[..4] == MAGIC[..] || bytes[SLOT..SLOT + 4] == MAGIC[..]);
        if slotted {
            let newest = [&bytes[..SLOT], &bytes[SLOT..]]
                .into_iter()
                .filter_map(Slot::decode)
                .max_by_key(|s| s.generation);
            if let Some(slot) = newest {
                return Ok(Stored::Slots(slot));
            }
        } else if let Some(next) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(Stored::Text(next));
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds no cursor (neither slot is whole); with the bridge stopped, delete it \
                 to forward what the segments hold from the oldest on",
                self.path.display()
            ),
        ))
    }

    /// Durably moves the cursor to `next`: in place, once the file exists.
    pub fn store(&self, next: u64) -> io::Result<()> {
        match self.read() {
            Ok(Stored::Slots(last)) => {
                let slot = Slot {
                    generation: last.generation + 1,
                    next,
                };
                let file = File::options().write(true).open(&self.path)?;
                let offset = (slot.generation % 2) * SLOT as u64;
                file.write_all_at(&slot.encode(), offset)?;
                file.sync_data()
            }
            _ => {
                let first = Slot {
                    generation: 0,
                    next,
                };
                super::durable::replace(&self.path, &[&first.encode(), &[0u8; SLOT]])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_in_place_alternating_slots_and_keeps_the_older_when_a_write_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = Cursor::new(dir.path());
        assert_eq!(cursor.load().unwrap(), 0);
        cursor.store(5).unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let first = inode(&cursor.path);
        for next in [6, 7, 8] {
            cursor.store(next).unwrap();
            assert_eq!(cursor.load().unwrap(), next);
        }
        assert_eq!(inode(&cursor.path), first, "moved in place, not replaced");
        assert_eq!(fs::metadata(&cursor.path).unwrap().len(), 2 * SLOT as u64);
        // Generations 0..=3 went to slots 0, 1, 0, 1: slot 1 holds 8, slot 0 holds 7. A crash
        // in the middle of writing 8 leaves slot 1 garbage: the cursor is 7, not lost.
        let mut bytes = fs::read(&cursor.path).unwrap();
        bytes[SLOT + 13] ^= 0xff;
        fs::write(&cursor.path, &bytes).unwrap();
        assert_eq!(cursor.load().unwrap(), 7);
        cursor.store(9).unwrap();
        assert_eq!(cursor.load().unwrap(), 9);
    }

    #[test]
    fn reads_an_earlier_releases_text_cursor_and_refuses_garbage_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = Cursor::new(dir.path());
        fs::write(&cursor.path, "42\n").unwrap();
        assert_eq!(cursor.load().unwrap(), 42);
        cursor.store(43).unwrap();
        assert_eq!(cursor.load().unwrap(), 43);
        fs::write(&cursor.path, "not a cursor").unwrap();
        let error = cursor.load().unwrap_err();
        assert!(error.to_string().contains("delete it"), "{error}");
    }
}
