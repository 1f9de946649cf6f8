//! Reading the log for the forwarder: committed frames from a sequence number on, across
//! segments, never past a segment's committed length (the writer publishes a length only
//! after its fsync); and deleting segments the cursor has passed.

use std::fs::{self, File};
use std::io::{BufReader, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;

use super::frame::{self, Outcome, Spooled};
use super::log::{Segment, Shared};
use super::recover::park_holes;

const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Where the forwarder reads: a segment, a byte offset in it, the sequence number there.
pub(super) struct Position {
    first: u64,
    reader: BufReader<File>,
    offset: u64,
}

/// Reads up to `max` committed records with sequence numbers from `next` on.
pub(super) fn read_batch(
    shared: &Shared,
    position: &mut Option<Position>,
    next: u64,
    max: usize,
) -> std::io::Result<Vec<Spooled>> {
    let mut batch = Batch {
        out: Vec::new(),
        bytes: 0,
        next,
        max,
    };
    let mut segment: Option<u64> = None;
    loop {
        let Some(located) = locate(shared, segment, batch.want()) else {
            return Ok(batch.out);
        };
        if position.as_ref().is_none_or(|p| p.first != located.first) {
            *position = Some(Position {
                first: located.first,
                reader: BufReader::new(File::open(&located.path)?),
                offset: 0,
            });
        }
        let Some(pos) = position.as_mut() else {
            return Ok(batch.out);
        };
        read_frames(pos, &located, &mut batch)?;
        match located.following {
            // A sealed segment, read to its end: go on with the next one.
            Some(f) if !batch.full() && pos.offset >= located.len => segment = Some(f),
            _ => return Ok(batch.out),
        }
    }
}

/// The records read so far, and how many more may be.
struct Batch {
    out: Vec<Spooled>,
    bytes: u64,
    next: u64,
    max: usize,
}

impl Batch {
    /// The sequence number wanted next.
    fn want(&self) -> u64 {
        self.next + self.out.len() as u64
    }

    fn full(&self) -> bool {
        self.out.len() >= self.max || self.bytes >= MAX_BATCH_BYTES
    }
}

/// Reads frames of the segment `at` from `pos` on, until the batch is full or the
/// segment's committed length is reached, stepping over the holes recovery left.
fn read_frames(pos: &mut Position, at: &Located, batch: &mut Batch) -> std::io::Result<()> {
    // Seeking empties the read buffer, which may hold bytes of a frame that was still
    // being written when it was filled.
    pos.reader.seek(SeekFrom::Start(pos.offset))?;
    while !batch.full() {
        if let Some(hole) = at.holes.iter().find(|h| h.start == pos.offset) {
            pos.offset = hole.end;
            pos.reader.seek(SeekFrom::Start(pos.offset))?;
            continue;
        }
        match frame::read(&mut pos.reader, at.len.saturating_sub(pos.offset))? {
            Outcome::Frame(record, size) => {
                pos.offset += size;
                if record.seq >= batch.want() {
                    batch.bytes += size;
                    batch.out.push(record);
                }
            }
            Outcome::End => return Ok(()),
            // Within the committed length a frame can only be torn by corruption (the
            // writer publishes a length only after its fsync).
            Outcome::Torn => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "a damaged record in {} at byte {} of {} committed",
                        at.path.display(),
                        pos.offset,
                        at.len
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The segment to read, how far it is committed, and the one after it, if any.
struct Located {
    first: u64,
    len: u64,
    following: Option<u64>,
    path: PathBuf,
    holes: Vec<Range<u64>>,
}

/// `segment` if given, else the one holding `want` (or the oldest, if `want` is older).
fn locate(shared: &Shared, segment: Option<u64>, want: u64) -> Option<Located> {
    let state = shared.lock();
    let segments = state.segments();
    let found = match segment {
        Some(f) => segments.get_key_value(&f),
        None => segments
            .range(..=want)
            .next_back()
            .or_else(|| segments.iter().next()),
    };
    let (&first, s) = found?;
    let following = segments.range(first + 1..).next().map(|(&f, _)| f);
    Some(Located {
        first,
        len: s.len,
        following,
        path: s.path.clone(),
        holes: s.holes.clone(),
    })
}

/// Deletes sealed segments whose every record is below `next`; one with damage not yet
/// copied to `parked/` only once the copy is made.
pub(super) fn reclaim(shared: &Shared, next: u64) -> std::io::Result<()> {
    let doomed: Vec<(u64, Segment)> = {
        let state = shared.lock();
        let last_first = state.segments().keys().next_back().copied();
        state
            .segments()
            .iter()
            .filter(|(first, s)| Some(**first) != last_first && s.last_seq.is_none_or(|l| l < next))
            .map(|(first, s)| (*first, s.clone()))
            .collect()
    };
    for (first, segment) in doomed {
        if segment.unparked {
            let parked = park_holes(&shared.dir, first, &segment.path, &segment.holes);
            shared.metrics.parked.inc_by(parked.newly);
            if parked.unparked {
                continue;
            }
        }
        fs::remove_file(&segment.path)?;
        shared.lock().reclaimed(first);
    }
    Ok(())
}
