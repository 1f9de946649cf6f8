//! How far this replica's spool is drained, by acceptance time, for `backfill`: every
//! event the spool accepted before [`Spool::drained_through_ms`](super::Spool) is in Kafka.
//!
//! The writer notes, per committed batch, its first sequence number and the commit time
//! (at most one note per 100 ms). The oldest event not yet in Kafka is at or after the
//! lower of the forwarder's cursor and the oldest held record; its acceptance time is at
//! least the commit time noted at or before its number, less the longest a request may take
//! between acceptance and commit (`slack`). With nothing unforwarded, the spool is drained
//! through now less `slack`: a request accepted since may still wait for the writer. After a restart nothing is noted for the records recovered: until they are
//! forwarded the answer is 0 ("not drained through anything"), which only makes a backfill
//! wait. Conservative by construction: an answer may be early, never late.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The closest two notes may be, in ms.
const SPACING_MS: u64 = 100;

/// (first sequence number of a batch, its commit time in ms), oldest first.
#[derive(Debug, Default)]
pub struct Checkpoints {
    notes: Mutex<VecDeque<(u64, u64)>>,
}

impl Checkpoints {
    /// A batch numbered from `first_seq` was committed at `committed_ms`.
    pub fn note(&self, first_seq: u64, committed_ms: u64) {
        let mut notes = self.lock();
        if notes
            .back()
            .is_none_or(|&(_, ms)| committed_ms >= ms + SPACING_MS)
        {
            notes.push_back((first_seq, committed_ms));
        }
    }

    /// The commit time noted at or before `seq` (a lower bound for the commit of `seq`),
    /// forgetting the notes before that one: `seq` only grows.
    pub fn committed_at_or_after(&self, seq: u64) -> Option<u64> {
        let mut notes = self.lock();
        let at = notes.partition_point(|&(first, _)| first <= seq);
        if at == 0 {
            return None;
        }
        notes.drain(..at - 1);
        notes.front().map(|&(_, ms)| ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64)>> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The time through which the spool is drained: `now_ms − slack_ms` when nothing numbered
/// below `next_seq` is unforwarded (`oldest_unforwarded >= next_seq`; a request accepted
/// in the last `slack_ms` may not be numbered yet), else the lower bound above less
/// `slack_ms`, or 0 when there is none.
pub fn drained_through_ms(
    checkpoints: &Checkpoints,
    oldest_unforwarded: u64,
    next_seq: u64,
    now_ms: u64,
    slack_ms: u64,
) -> u64 {
    if oldest_unforwarded >= next_seq {
        return now_ms.saturating_sub(slack_ms);
    }
    checkpoints
        .committed_at_or_after(oldest_unforwarded)
        .map_or(0, |ms| ms.saturating_sub(slack_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_is_drained_through_the_commit_before_its_oldest_unforwarded_event() {
        let c = Checkpoints::default();
        c.note(0, 1_000);
        c.note(10, 1_050); // too close to the last note: not kept
        c.note(20, 2_000);
        c.note(30, 3_000);
        let cases = [
            // (oldest unforwarded, next_seq, want)
            (40, 40, 9_999 - 5), // nothing unforwarded: through now, less what may be queued
            (25, 40, 2_000 - 5), // between notes: the earlier one
            (30, 40, 3_000 - 5), // on a note
            (10, 40, 1_000 - 5), // the 1_050 batch was not noted: the earlier note, early is safe
        ];
        for (oldest, next, want) in cases {
            let c2 = Checkpoints::default();
            for &(s, ms) in c.lock().iter() {
                c2.note(s, ms);
            }
            assert_eq!(
                drained_through_ms(&c2, oldest, next, 9_999, 5),
                want,
                "{oldest}"
            );
        }
    }

    #[test]
    fn with_nothing_noted_below_the_oldest_unforwarded_event_the_answer_is_zero() {
        let c = Checkpoints::default();
        c.note(100, 5_000);
        assert_eq!(drained_through_ms(&c, 50, 120, 9_999, 5), 0);
        assert_eq!(
            drained_through_ms(&Checkpoints::default(), 0, 1, 9_999, 5),
            0
        );
    }

    #[test]
    fn notes_before_the_one_in_use_are_forgotten() {
        let c = Checkpoints::default();
        for i in 0..10 {
            c.note(i * 10, 1_000 * (i + 1));
        }
        assert_eq!(c.committed_at_or_after(55), Some(6_000));
        assert_eq!(c.lock().len(), 5);
        assert_eq!(c.committed_at_or_after(55), Some(6_000));
    }
}
