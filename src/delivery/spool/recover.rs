//! Start-up recovery: scan every segment (`scan.rs`, through a bounded window), rebuild the
//! log's state, and settle what is broken without dropping anything that may have been
//! acknowledged, and without needing a free block on the disk.
//!
//! A frame that is cut short *at the end of the last* segment was being written when the
//! process died: it was never acknowledged (acknowledgement waits for the fsync), so it is
//! cut off (truncating frees space, never takes it) and counted as torn. A last frame that
//! arrived whole (its header's length is exactly what is left) but fails its checksum may
//! have been acknowledged (a bit flipped after the fsync): it is damage, like the ones
//! below. Sequence numbers never go below a segment's name, even with the cursor gone.
//!
//! A damaged frame *followed by intact ones*, or at the end of an earlier (sealed) segment,
//! is corruption of acknowledged data (a bad block, a flipped bit). It stays where it is,
//! a hole the readers step over (`read.rs`), so the intact frames around it are forwarded at
//! once, and its bytes are copied to `parked/damaged-<segment>-<offset>.bin` for an operator
//! (counted with the parked events, logged at ERROR). On a full disk the copy waits: the
//! segment is then not deleted until the copy is made (`read.rs` `reclaim`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::durable;
use super::log::{LogState, Segment, parked_dir, segment_firsts, segment_path};
use super::scan::{Scan, scan};

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Intact records on disk.
    pub records: u64,
    /// Torn last frames cut off (never acknowledged).
    pub torn: u64,
    /// Damaged stretches inside segments newly copied to `parked/`.
    pub damaged: u64,
}

/// Scans `dir` (creating it if needed), settles its segments, and returns the log's state.
/// `floor` is the forwarder's cursor: the next record gets at least that number.
pub fn recover(dir: &Path, floor: u64) -> io::Result<(LogState, Recovered)> {
    durable::create_dir(dir)?;
    let firsts = segment_firsts(dir)?;
    let mut recovered = Recovered::default();
    let mut segments = BTreeMap::new();
    let mut floor = floor;
    let last = firsts.last().copied();
    for first in firsts {
        let path = segment_path(dir, first);
        durable::make_private(&path, 0o600);
        if fs::metadata(&path)?.len() == 0 {
            // Holds no record, and its name may lie: a rotation that failed after creating
            // the file left it while records of its number went on into the segment before
            // (`writer.rs`). Read as a segment, it would hide those. Its name stays a floor.
            // Removing it is tidiness: if that fails it is passed over all the same.
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(%error, segment = %path.display(), "Cannot remove an empty spool segment; passing over it.");
            }
            floor = floor.max(first);
            continue;
        }
        let mut scan = scan(&path, first, |_, _| {})?;
        if Some(first) != last {
            // Only the segment being written when the process died can have a torn tail.
            if let Some(tail) = scan.torn.take() {
                scan.damaged.push(tail);
            }
        }
        recovered.records += scan.records;
        segments.insert(first, settle(dir, first, path, scan, &mut recovered)?);
    }
    // Numbering goes on from the cursor, and above every segment's name and record, even
    // when the cursor is gone and the last segment was empty (`LogState::recovered`).
    Ok((LogState::recovered(segments, floor), recovered))
}

/// Cuts a segment's torn tail, keeps its damaged stretches in place and parks their bytes
/// if it can; the segment as the log will know it.
fn settle(
    dir: &Path,
    first: u64,
    path: PathBuf,
    scan: Scan,
    recovered: &mut Recovered,
) -> io::Result<Segment> {
    let mut len = scan.len;
    if let Some(torn) = &scan.torn {
        tracing::warn!(
            segment = %path.display(),
            kept_bytes = torn.start,
            discarded_bytes = torn.end - torn.start,
            "Discarding a torn record at the end of a spool segment; it was never acknowledged."
        );
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(torn.start)?;
        recovered.torn += 1;
        len = torn.start;
    }
    let parked = park_holes(dir, first, &path, &scan.damaged);
    recovered.damaged += parked.newly;
    Ok(Segment {
        path,
        len,
        last_seq: scan.last_seq,
        holes: scan.damaged,
        unparked: parked.unparked,
    })
}

/// What [`park_holes`] did.
#[derive(Debug, Default)]
pub(super) struct ParkedHoles {
    /// Stretches copied to `parked/` now.
    pub newly: u64,
    /// Whether any is not in `parked/` (it could not be written: the disk is full).
    pub unparked: bool,
}

/// Copies each damaged stretch of the segment `first` at `path` to `parked/`, unless it is
/// there already (a segment keeps its holes until it is deleted, so a restart meets them
/// again). Never fails: what cannot be copied now is reported, and copied later.
pub(super) fn park_holes(dir: &Path, first: u64, path: &Path, holes: &[Range<u64>]) -> ParkedHoles {
    let mut out = ParkedHoles::default();
    for hole in holes {
        let file = parked_dir(dir).join(format!("damaged-{first:020}-{}.bin", hole.start));
        if fs::metadata(&file).is_ok_and(|m| m.len() == hole.end - hole.start) {
            continue;
        }
        match copy_out(path, hole, &file) {
            Ok(()) => {
                out.newly += 1;
                tracing::error!(
                    segment = %path.display(),
                    offset = hole.start,
                    damaged_bytes = hole.end - hole.start,
                    parked = %file.display(),
                    "A spooled record is damaged on disk; forwarding the intact ones around it and parked its bytes for an operator."
                );
            }
            Err(error) => {
                out.unparked = true;
                tracing::error!(
                    %error,
                    segment = %path.display(),
                    offset = hole.start,
                    damaged_bytes = hole.end - hole.start,
                    "A spooled record is damaged on disk and its bytes cannot be parked yet; they stay in the segment, which is kept until they are."
                );
            }
        }
    }
    out
}

/// Durably copies `range` of the file at `from` to a new file `to`, streaming.
fn copy_out(from: &Path, range: &Range<u64>, to: &Path) -> io::Result<()> {
    durable::create_dir(to.parent().unwrap_or(Path::new(".")))?;
    let mut source = File::open(from)?;
    source.seek(SeekFrom::Start(range.start))?;
    durable::replace_with(to, |file| {
        let want = range.end - range.start;
        let copied = io::copy(&mut io::Read::take(&mut source, want), file)?;
        if copied == want {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the segment got shorter",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::delivery::spool::scan::tests::frame;

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
        // The sealed segment keeps its damage in place, as a hole; the torn tail is cut.
        let sizes: Vec<u64> = state.segments().values().map(|s| s.len).collect();
        assert_eq!(sizes, [sealed.len() as u64, f2.len() as u64]);
        let holes: Vec<_> = state.segments().values().map(|s| s.holes.clone()).collect();
        let broken = frame(0).len() as u64..sealed.len() as u64;
        assert_eq!(holes, [vec![broken], vec![]]);
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
