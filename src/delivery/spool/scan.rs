//! Reading a whole segment file through a bounded window, sorting its bytes into intact
//! frames, damaged stretches and a torn tail: for start-up recovery (`recover.rs`) and for
//! `spool status` (`inspect.rs`).
//!
//! Memory stays bounded whatever `segment_bytes` is: the file is read through a window of
//! [`WINDOW`] bytes with positioned reads (`pread`), never whole; only a frame larger than
//! the window is read on its own (at most `frame::MAX_PAYLOAD`).
//!
//! A frame is intact when its checksum matches, it decodes, and its sequence number lies
//! between the last intact one (exclusive) and what the segment could hold: a stray copy of
//! an older frame is not taken for this segment's. After damage, the next intact frame is
//! searched for byte by byte.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::frame::{self, Outcome, Spooled};

/// Bytes read from the file at a time (declared with the memory bound it is part of).
const WINDOW: u64 = crate::config::memory::RECOVERY_WINDOW_BYTES;

/// One segment's bytes, sorted.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// The file's length when scanned.
    pub len: u64,
    /// Byte ranges that are not intact frames, with an intact frame after them or
    /// arrived whole (by their header's length) at the end.
    pub damaged: Vec<Range<u64>>,
    /// A frame cut short at the end: it was being written when the process died.
    pub torn: Option<Range<u64>>,
    /// Intact records.
    pub records: u64,
    pub last_seq: Option<u64>,
}

/// Scans the segment at `path`, whose first sequence number is `first`, handing every
/// intact record and its size on disk to `each`.
pub(super) fn scan(
    path: &Path,
    first: u64,
    mut each: impl FnMut(&Spooled, u64),
) -> io::Result<Scan> {
    let mut window = Window::open(path)?;
    let len = window.len;
    let mut out = Scan {
        len,
        ..Scan::default()
    };
    let highest = first.saturating_add(len / frame::MIN_FRAME);
    let mut at = 0;
    while at < len {
        let lowest = out.last_seq.map_or(first, |l| l.saturating_add(1));
        if let Some((record, size)) = window.intact(at, lowest, highest)? {
            each(&record, size);
            out.records += 1;
            out.last_seq = Some(record.seq);
            at += size;
            continue;
        }
        let mut next = None;
        for o in at + 1..len {
            if window.intact(o, lowest, highest)?.is_some() {
                next = Some(o);
                break;
            }
        }
        match next {
            Some(next) => {
                out.damaged.push(at..next);
                at = next;
            }
            // Nothing intact after it: a frame cut short was being written when the process
            // died (never acknowledged: torn); one that arrived whole but fails its checksum
            // may have been acknowledged, so it is damaged, not torn.
            None if window.complete_frame(at)? => {
                out.damaged.push(at..len);
                break;
            }
            None => {
                out.torn = Some(at..len);
                break;
            }
        }
    }
    Ok(out)
}

/// A file read through a window of its bytes.
struct Window {
    file: File,
    len: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl Window {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            start: 0,
            bytes: Vec::new(),
        })
    }

    /// Up to `n` bytes from `at` (fewer at the end of the file).
    fn get(&mut self, at: u64, n: u64) -> io::Result<&[u8]> {
        let n = n.min(self.len.saturating_sub(at));
        let end = self.start + self.bytes.len() as u64;
        if at < self.start || at + n > end {
            let take = n.max(WINDOW).min(self.len - at);
            self.bytes
                .resize(usize::try_from(take).unwrap_or(usize::MAX), 0);
            self.file.read_exact_at(&mut self.bytes, at)?;
            self.start = at;
        }
        let from = usize::try_from(at - self.start).unwrap_or(usize::MAX);
        Ok(&self.bytes[from..from + usize::try_from(n).unwrap_or(usize::MAX)])
    }

    /// The intact frame at `at` numbered within `lowest..=highest`, and its size.
    fn intact(&mut self, at: u64, lowest: u64, highest: u64) -> io::Result<Option<(Spooled, u64)>> {
        let head = self.get(at, frame::HEADER_LEN + 8)?;
        // The payload starts with the sequence number: check it before reading and hashing.
        let Some(seq) = frame::peek_seq(head) else {
            return Ok(None);
        };
        let payload = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if !(lowest..=highest).contains(&seq) || payload > frame::MAX_PAYLOAD {
            return Ok(None);
        }
        let mut bytes = self.get(at, frame::HEADER_LEN + u64::from(payload))?;
        let available = bytes.len() as u64;
        Ok(match frame::read(&mut bytes, available)? {
            Outcome::Frame(record, size) => Some((record, size)),
            Outcome::End | Outcome::Torn => None,
        })
    }

    /// Whether the rest of the file from `at` is exactly one frame by its header's length
    /// (whatever its checksum says).
    fn complete_frame(&mut self, at: u64) -> io::Result<bool> {
        let rest = self.len - at;
        let head = self.get(at, frame::HEADER_LEN)?;
        if (head.len() as u64) < frame::HEADER_LEN {
            return Ok(false);
        }
        let payload = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        Ok(payload <= frame::MAX_PAYLOAD && frame::HEADER_LEN + u64::from(payload) == rest)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An encoded frame numbered `seq`.
    pub fn frame(seq: u64) -> Vec<u8> {
        framed(seq, 40)
    }

    fn framed(seq: u64, value_len: usize) -> Vec<u8> {
        let record = crate::record::Record {
            topic: "t",
            key: None,
            value: std::borrow::Cow::Owned(vec![b'x'; value_len]),
            headers: Vec::new(),
            id: "i",
            label: "l",
            accepted_ms: 0,
        };
        let mut payload = frame::encode_payload(&record, 0);
        frame::set_seq(&mut payload, seq);
        let mut out = frame::header(&payload).to_vec();
        out.extend_from_slice(&payload);
        out
    }

    fn scanned(bytes: &[u8], first: u64) -> Scan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, bytes).unwrap();
        scan(&path, first, |_, _| {}).unwrap()
    }

    #[test]
    fn keeps_the_intact_frames_around_a_damaged_one_and_calls_only_the_tail_torn() {
        let (a, mut b, c) = (frame(1), frame(2), frame(3));
        b[20] ^= 0xff;
        let torn = &frame(4)[..10];
        let bytes = [&a[..], &b[..], &c[..], torn].concat();
        let scan = scanned(&bytes, 1);
        assert_eq!(scan.records, 2);
        assert_eq!(scan.last_seq, Some(3));
        let (a, ab, abc) = (
            a.len() as u64,
            (a.len() + b.len()) as u64,
            (a.len() + b.len() + c.len()) as u64,
        );
        assert_eq!(scan.damaged, vec![a..ab]);
        assert_eq!(scan.torn, Some(abc..bytes.len() as u64));
    }

    #[test]
    fn an_intact_segment_is_all_kept() {
        let bytes = [frame(7), frame(8)].concat();
        let scan = scanned(&bytes, 7);
        assert_eq!(scan.records, 2);
        assert!(scan.damaged.is_empty() && scan.torn.is_none());
    }

    #[test]
    fn does_not_take_a_frame_numbered_out_of_place_for_an_intact_one() {
        // Intact by checksum, but numbered below the segment's first: not this segment's.
        let bytes = [frame(10), frame(3), frame(11)].concat();
        let scan = scanned(&bytes, 10);
        assert_eq!(scan.records, 2);
        assert_eq!(scan.damaged.len(), 1);
    }

    #[test]
    fn the_memory_bound_knows_the_largest_frame() {
        let largest = frame::HEADER_LEN + u64::from(frame::MAX_PAYLOAD);
        assert_eq!(crate::config::memory::RECOVERY_FRAME_BYTES, largest);
    }

    #[test]
    fn reads_a_segment_larger_than_its_window_and_finds_damage_beyond_it() {
        // Issue 20, item 7: recovery reads through a window, not the whole file. Frames of
        // 40 KiB straddle the window's edge; one past it is damaged.
        let mut frames: Vec<Vec<u8>> = (0..40).map(|seq| framed(seq, 40 * 1024)).collect();
        frames[30][100] ^= 0x01;
        let damaged_at: u64 = frames[..30].iter().map(|f| f.len() as u64).sum();
        assert!(
            damaged_at > WINDOW,
            "the damage lies beyond the first window"
        );
        let scan = scanned(&frames.concat(), 0);
        assert_eq!(scan.records, 39);
        assert_eq!(scan.last_seq, Some(39));
        let end = damaged_at + frames[30].len() as u64;
        assert_eq!(scan.damaged, vec![damaged_at..end]);
        assert!(scan.torn.is_none());
    }
}
