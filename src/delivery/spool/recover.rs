//! Start-up recovery: scan every segment, rebuild the log's state, and repair what is
//! broken without dropping anything that may have been acknowledged.
//!
//! A frame that is cut short *at the end of the last* segment was being written when the
//! process died: it was never acknowledged (acknowledgement waits for the fsync), so it is
//! cut off and counted as torn. A last frame that arrived whole (its header's length is
//! exactly what is left) but fails its checksum may have been acknowledged (a bit flipped
//! after the fsync): it is kept as damaged, like the ones below. Sequence numbers never go
//! below a segment's name, even with the cursor gone. A damaged frame *followed by intact
//! ones*, or at the end of an earlier (sealed) segment, is corruption of acknowledged data (a bad block, a flipped bit): recovery finds the next
//! intact frame (its checksum and a higher sequence number than the last good one), keeps
//! every intact frame, copies the damaged bytes to `parked/damaged-<segment>-<offset>.bin`
//! for an operator (counted with the parked events, logged at ERROR), and rewrites the
//! segment without them (`durable.rs`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::ops::Range;
use std::path::Path;

use super::durable;
use super::frame::{self, Outcome};
use super::log::{LogState, Segment, parked_dir, segment_firsts, segment_path};

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Intact records on disk.
    pub records: u64,
    /// Torn last frames cut off (never acknowledged).
    pub torn: u64,
    /// Damaged stretches inside segments, moved to `parked/`.
    pub damaged: u64,
}

/// Scans `dir` (creating it if needed), repairs its segments, and returns the log's state.
/// `floor` is the forwarder's cursor: the next record gets at least that number.
pub fn recover(dir: &Path, floor: u64) -> std::io::Result<(LogState, Recovered)> {
    durable::create_dir(dir)?;
    let firsts = segment_firsts(dir)?;
    let mut recovered = Recovered::default();
    let mut segments = BTreeMap::new();
    let last = firsts.last().copied();
    for first in firsts {
        let path = segment_path(dir, first);
        durable::make_private(&path, 0o600);
        let mut scan = scan(&fs::read(&path)?, first);
        if Some(first) != last {
            // Only the segment being written when the process died can have a torn tail.
            if let Some(tail) = scan.torn.take() {
                scan.damaged.push(tail);
            }
        }
        recovered.records += scan.records;
        let len = settle(dir, first, &path, &scan, &mut recovered)?;
        segments.insert(
            first,
            Segment {
                path,
                len,
                last_seq: scan.last_seq,
            },
        );
    }
    // Numbering goes on from the cursor, and above every segment's name and record, even
    // when the cursor is gone and the last segment empty (`LogState::recovered`).
    Ok((LogState::recovered(segments, floor), recovered))
}

/// Cuts a segment's torn tail, or repairs it around damage; its length after.
fn settle(
    dir: &Path,
    first: u64,
    path: &Path,
    scan: &Scan,
    recovered: &mut Recovered,
) -> std::io::Result<u64> {
    if scan.damaged.is_empty() {
        if let Some(torn) = &scan.torn {
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = torn.start,
                discarded_bytes = torn.end - torn.start,
                "Discarding a torn record at the end of a spool segment; it was never acknowledged."
            );
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(torn.start as u64)?;
            recovered.torn += 1;
        }
    } else {
        repair(dir, first, path, scan)?;
        recovered.damaged += scan.damaged.len() as u64;
        recovered.torn += u64::from(scan.torn.is_some());
    }
    Ok(scan.kept.iter().map(ExactSizeIterator::len).sum::<usize>() as u64)
}

/// One segment's bytes, sorted into intact frames, damaged stretches and a torn tail.
#[derive(Debug, Default)]
struct Scan {
    /// Byte ranges of intact frames, in order.
    kept: Vec<Range<usize>>,
    damaged: Vec<Range<usize>>,
    torn: Option<Range<usize>>,
    records: u64,
    last_seq: Option<u64>,
}

/// Sorts the bytes of the segment whose first sequence number is `first`.
fn scan(bytes: &[u8], first: u64) -> Scan {
    let mut out = Scan::default();
    // Every frame's number lies between the last good one and what the segment could hold;
    // checking that before the checksum keeps the search through damage cheap.
    let highest = first.saturating_add(bytes.len() as u64 / frame::MIN_FRAME);
    let mut at = 0;
    while at < bytes.len() {
        let lowest = out.last_seq.map_or(first, |l| l.saturating_add(1));
        match intact_frame(bytes, at, lowest, highest) {
            Some((seq, len)) => {
                out.kept.push(at..at + len);
                out.records += 1;
                out.last_seq = Some(seq);
                at += len;
            }
            None => match (at + 1..bytes.len())
                .find(|&o| intact_frame(bytes, o, lowest, highest).is_some())
            {
                Some(next) => {
                    out.damaged.push(at..next);
                    at = next;
                }
                // Nothing intact after it: a frame cut short was being written when the
                // process died (never acknowledged: torn); one that arrived whole but fails
                // its checksum may have been acknowledged, so it is kept as damaged.
                None if complete_frame(&bytes[at..]) => {
                    out.damaged.push(at..bytes.len());
                    break;
                }
                None => {
                    out.torn = Some(at..bytes.len());
                    break;
                }
            },
        }
    }
    out
}

/// Whether `rest` is exactly one frame by its header's length (whatever its checksum says).
fn complete_frame(rest: &[u8]) -> bool {
    let Some(header) = rest.get(..frame::HEADER_LEN as usize) else {
        return false;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    len <= frame::MAX_PAYLOAD && frame::HEADER_LEN + u64::from(len) == rest.len() as u64
}

/// The sequence number and length of an intact frame starting at `at` whose number is in
/// `lowest..=highest`, if there is one.
fn intact_frame(bytes: &[u8], at: usize, lowest: u64, highest: u64) -> Option<(u64, usize)> {
    let mut rest = bytes.get(at..)?;
    let available = rest.len() as u64;
    // The payload starts with the sequence number: check it before reading and hashing.
    let seq = frame::peek_seq(rest)?;
    if !(lowest..=highest).contains(&seq) {
        return None;
    }
    match frame::read(&mut rest, available).ok()? {
        Outcome::Frame(record, len) => Some((record.seq, usize::try_from(len).ok()?)),
        Outcome::End | Outcome::Torn => None,
    }
}

/// Parks the damaged stretches and rewrites the segment with its intact frames only.
fn repair(dir: &Path, first: u64, path: &Path, scan: &Scan) -> std::io::Result<()> {
    let bytes = fs::read(path)?;
    let parked = parked_dir(dir);
    durable::create_dir(&parked)?;
    for range in &scan.damaged {
        let file = parked.join(format!("damaged-{first:020}-{}.bin", range.start));
        durable::replace(&file, &[&bytes[range.clone()]])?;
        tracing::error!(
            segment = %path.display(),
            offset = range.start,
            damaged_bytes = range.len(),
            parked = %file.display(),
            "A spooled record is damaged on disk; kept the intact ones around it and parked its bytes for an operator."
        );
    }
    let kept: Vec<&[u8]> = scan.kept.iter().map(|r| &bytes[r.clone()]).collect();
    durable::replace(path, &kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Vec<u8> {
        let record = crate::record::Record {
            topic: "t",
            key: None,
            value: std::borrow::Cow::Owned(vec![b'x'; 40]),
            headers: Vec::new(),
            id: "i",
            label: "l",
        };
        let mut payload = frame::encode_payload(&record, 0);
        frame::set_seq(&mut payload, seq);
        let mut out = frame::header(&payload).to_vec();
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn keeps_the_intact_frames_around_a_damaged_one_and_calls_only_the_tail_torn() {
        let (a, mut b, c) = (frame(1), frame(2), frame(3));
        b[20] ^= 0xff;
        let torn = &frame(4)[..10];
        let bytes = [&a[..], &b[..], &c[..], torn].concat();
        let scan = scan(&bytes, 1);
        assert_eq!(scan.records, 2);
        assert_eq!(scan.last_seq, Some(3));
        let (ab, abc) = (a.len() + b.len(), a.len() + b.len() + c.len());
        assert_eq!(scan.kept, vec![0..a.len(), ab..abc]);
        assert_eq!(scan.damaged, vec![a.len()..ab]);
        assert_eq!(scan.torn, Some(abc..bytes.len()));
    }

    #[test]
    fn an_intact_segment_is_all_kept() {
        let bytes = [frame(7), frame(8)].concat();
        let scan = scan(&bytes, 7);
        assert_eq!(scan.records, 2);
        assert!(scan.damaged.is_empty() && scan.torn.is_none());
    }

    #[test]
    fn does_not_take_a_frame_numbered_out_of_place_for_an_intact_one() {
        // Intact by checksum, but numbered below the segment's first: not this segment's.
        let bytes = [frame(10), frame(3), frame(11)].concat();
        let scan = scan(&bytes, 10);
        assert_eq!(scan.records, 2);
        assert_eq!(scan.damaged.len(), 1);
    }

    #[test]
    fn parks_a_broken_tail_of_a_sealed_segment_and_cuts_only_the_last_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (f1, f2) = (frame(1), frame(2));
        // Segment 0: frame 0 and a broken frame 1 (it was acknowledged: segment 2 follows).
        let sealed = [&frame(0)[..], &f1[..f1.len() - 5]].concat();
        std::fs::write(segment_path(dir.path(), 0), &sealed).unwrap();
        // Segment 2, the last: frame 2 and a torn frame 3 (a crash mid-write).
        let active = [&f2[..], &frame(3)[..7]].concat();
        std::fs::write(segment_path(dir.path(), 2), &active).unwrap();

        let (state, recovered) = recover(dir.path(), 0).unwrap();
        assert_eq!(
            (recovered.records, recovered.damaged, recovered.torn),
            (2, 1, 1)
        );
        assert_eq!(state.next_seq(), 3);
        let parked: Vec<_> = std::fs::read_dir(dir.path().join("parked"))
            .unwrap()
            .collect();
        assert_eq!(parked.len(), 1);
        let sizes: Vec<u64> = state.segments().values().map(|s| s.len).collect();
        assert_eq!(sizes, [frame(0).len() as u64, f2.len() as u64]);
        for (first, segment) in state.segments() {
            let on_disk = std::fs::metadata(segment_path(dir.path(), *first))
                .unwrap()
                .len();
            assert_eq!(on_disk, segment.len);
        }
    }

    #[test]
    fn a_complete_last_frame_that_fails_its_checksum_is_parked_not_cut() {
        // Issue 20, row 5: a bit flipped in the last, complete, fsynced frame is damage to an
        // acknowledged event, not a torn write: it is kept for an operator.
        let dir = tempfile::tempdir().unwrap();
        let mut last = frame(1);
        let middle = last.len() / 2;
        last[middle] ^= 0x01;
        let bytes = [&frame(0)[..], &last[..]].concat();
        std::fs::write(segment_path(dir.path(), 0), &bytes).unwrap();
        let (_, recovered) = recover(dir.path(), 0).unwrap();
        assert_eq!((recovered.damaged, recovered.torn), (1, 0));
        let parked = std::fs::read_dir(dir.path().join("parked"))
            .unwrap()
            .count();
        assert_eq!(parked, 1);
    }

    #[test]
    fn a_deleted_cursor_never_takes_the_sequence_below_a_segments_name() {
        // Issue 20, row 6: the cursor deleted while the last segment is empty. Its name is
        // the floor: numbering restarts there, not at 0 (frames numbered below their
        // segment's name were cut as torn at the next start: acknowledged events lost).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 26), b"").unwrap();
        let (state, _) = recover(dir.path(), 0).unwrap();
        assert_eq!(state.next_seq(), 26);
    }
}
