//! Whether the spool's filesystem has the room `spool.max_bytes` promises, asked of the
//! filesystem itself (`statvfs`) at start: the room is what is free plus what the spool
//! already uses (segments, held and parked records), so a full disk at restart is not
//! mistaken for a small one. More promised than the filesystem holds is a warning — the
//! disk fills before the spool does, and webhooks get 503 `spool_unavailable` rather than
//! `spool_full` — and less room than one segment is refused: no segment could be rolled.

use std::io;
use std::path::Path;

/// What the filesystem can give the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// At least `spool.max_bytes`.
    Enough,
    /// Less than `spool.max_bytes`, at least one segment.
    Short { room_bytes: u64 },
    /// Less than one segment.
    TooSmall { room_bytes: u64 },
}

/// The room for a spool in `dir` (which exists) that uses `used_bytes` now.
pub fn check(dir: &Path, max_bytes: u64, segment_bytes: u64, used_bytes: u64) -> io::Result<Room> {
    let stat = rustix::fs::statvfs(dir)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let room_bytes = free.saturating_add(used_bytes);
    Ok(if room_bytes < segment_bytes {
        Room::TooSmall { room_bytes }
    } else if room_bytes < max_bytes {
        Room::Short { room_bytes }
    } else {
        Room::Enough
    })
}

/// Checks the room at start: a warning when short, an error saying what to change when
/// too small.
pub(super) fn require(
    dir: &Path,
    max_bytes: u64,
    segment_bytes: u64,
    used_bytes: u64,
) -> io::Result<()> {
    match check(dir, max_bytes, segment_bytes, used_bytes)? {
        Room::Enough => Ok(()),
        Room::Short { room_bytes } => {
            tracing::warn!(
                dir = %dir.display(),
                room_bytes,
                max_bytes,
                "The spool's filesystem can hold less than spool.max_bytes: the disk fills first, and webhooks then get 503 spool_unavailable. Lower spool.max_bytes or give the volume more room."
            );
            Ok(())
        }
        Room::TooSmall { room_bytes } => Err(io::Error::other(format!(
            "the filesystem of {} has room for less than one segment ({room_bytes} bytes \
             free or used by the spool, spool.segment_bytes is {segment_bytes}): free \
             space, give the volume more room, or lower spool.segment_bytes",
            dir.display()
        ))),
    }
}
