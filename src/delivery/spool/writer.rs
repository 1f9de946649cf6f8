//! The spool's one writer thread, with group commit: it takes every append request
//! waiting, writes them all, calls `fsync` (`File::sync_data`) once, and only then answers
//! each request — so many concurrent webhooks share one fsync, and none is answered before
//! its bytes are durable. A new segment's directory entry is fsynced too. Between appends
//! it looks after the log every [`TICK`]: it tries a disk that failed again, and rolls an
//! active segment Kafka has taken everything of.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::frame;
use super::log::{Append, Cut, Limits, LogState, Shared, segment_path};
use crate::delivery::DeliveryError;

/// Starts the writer thread. It ends when every sender of `requests` is dropped.
pub(crate) fn spawn_writer(
    shared: Arc<Shared>,
    limits: Limits,
    requests: mpsc::Receiver<Append>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut active = open_active(&shared, limits)?;
    std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || {
            // The log is looked after every TICK whatever the traffic: a full spool that
            // refuses every append must still free itself while appends keep coming.
            let mut looked_after = std::time::Instant::now();
            loop {
                match requests.recv_timeout(TICK) {
                    Ok(first) => {
                        let mut batch = vec![first];
                        while batch.len() < 4096 {
                            match requests.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        commit(&shared, limits, &mut active, batch);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if looked_after.elapsed() >= TICK {
                    idle(&shared, &mut active);
                    looked_after = std::time::Instant::now();
                }
            }
            let _ = active.1.sync_all();
        })
}

/// How often the writer looks after the log, between appends or not: it tries a disk that
/// failed a write again, and rolls an active segment Kafka has taken everything of.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The writer's work besides appending. While the last write failed it tries the disk again
/// (a pod that is not ready gets no appends to prove it well), so health and `/readyz`
/// come back by themselves. An active segment all of whose records Kafka has acknowledged
/// is rolled, so the forwarder can delete it: with large segments on a small disk, the
/// one segment in use would otherwise hold the space for good.
fn idle(shared: &Shared, active: &mut Active) {
    if !shared.lock().healthy() {
        reprobe(shared);
    }
    let mut state = shared.lock();
    let forwarded = shared.forwarded_to.load(Ordering::Acquire) >= state.next_seq();
    let len = state.len_of(active.0);
    let pressed = state.full() || !state.healthy() || len >= ROLL_WHEN_FORWARDED;
    if forwarded && len > 0 && pressed {
        match new_segment(&shared.dir, &mut state) {
            Ok(next) => {
                *active = next;
                drop(state);
                shared.committed.notify_one();
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot roll the forwarded spool segment yet; will retry.");
            }
        }
    }
}

/// A forwarded active segment at least this long is rolled (smaller ones wait for space
/// pressure, so a trickle of events does not make a file each).
const ROLL_WHEN_FORWARDED: u64 = 64 * 1024;

/// Writes and fsyncs a small file in the spool directory; healthy again if that worked.
fn reprobe(shared: &Shared) {
    let path = shared.dir.join("probe");
    let written = shared.injected_fault().and_then(|()| {
        let mut file = super::durable::private()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(b"probe")?;
        file.sync_data()?;
        std::fs::remove_file(&path)
    });
    if written.is_ok() {
        shared.lock().disk_works();
        tracing::info!("The spool's disk can be written again; ready for webhooks.");
    }
}

/// The segment being appended to: (first sequence number, file).
type Active = (u64, File);

fn open_active(shared: &Shared, limits: Limits) -> std::io::Result<Active> {
    let mut state = shared.lock();
    if let Some((&first, segment)) = state.segments().iter().next_back()
        && segment.len < limits.segment_bytes
    {
        let file = OpenOptions::new().append(true).open(&segment.path)?;
        return Ok((first, file));
    }
    new_segment(&shared.dir, &mut state)
}

fn new_segment(dir: &Path, state: &mut LogState) -> std::io::Result<Active> {
    let path = segment_path(dir, state.next_seq());
    let file = super::durable::private()
        .create(true)
        .append(true)
        .open(&path)?;
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        // The writer goes on in the current segment, numbering on from it: a file named
        // for the next number must not stay (recovery also drops empty segments).
        let _ = std::fs::remove_file(&path);
        return Err(error);
    }
    Ok((state.start_segment(path), file))
}

fn commit(shared: &Shared, limits: Limits, active: &mut Active, batch: Vec<Append>) {
    let mut state = shared.lock();
    if state.active_damaged() {
        // Appending after bytes that were never acknowledged would put them inside the
        // segment's readable length: only a fresh segment will do.
        match new_segment(&shared.dir, &mut state) {
            Ok(next) => *active = next,
            Err(error) => {
                drop(state);
                tracing::error!(%error, "Cannot start a new spool segment after a failed write; answering 503.");
                refuse(batch.into_iter().map(|a| a.reply), &error);
                return;
            }
        }
    }
    let framed = frame_batch(&mut state, limits, active.0, batch);
    if framed.accepted.is_empty() {
        return;
    }
    // The lock is released for the write and fsync: readers only look at committed lengths.
    drop(state);
    let written = shared
        .injected_fault()
        .and_then(|()| active.1.write_all(&framed.buffer))
        .and_then(|()| active.1.sync_data());
    match written {
        Ok(()) => publish(shared, limits, active, framed),
        Err(error) => cut_off(shared, active, framed, &error),
    }
}

/// A batch framed and numbered, not yet written.
struct Framed {
    /// The frames, back to back.
    buffer: Vec<u8>,
    /// Each accepted append's number and where to answer it.
    accepted: Vec<(u64, oneshot::Sender<Result<u64, DeliveryError>>)>,
    /// The number after the last accepted one.
    next_seq: u64,
    /// The active segment's committed length before this batch.
    start_len: u64,
}

/// Numbers and frames every append that fits; refuses the others at once (larger than a
/// frame may be, or beyond `max_bytes`), marking the spool full.
fn frame_batch(state: &mut LogState, limits: Limits, active: u64, batch: Vec<Append>) -> Framed {
    let mut framed = Framed {
        buffer: Vec::new(),
        accepted: Vec::with_capacity(batch.len()),
        next_seq: state.next_seq(),
        start_len: state.len_of(active),
    };
    let mut bytes = state.used();
    let mut refused = false;
    for mut append in batch {
        if append.payload.len() > frame::MAX_PAYLOAD as usize {
            // It could never be read back; refuse it rather than acknowledge it.
            let _ = append.reply.send(Err(DeliveryError::TooLarge(
                "the record is larger than a spool frame may be".into(),
            )));
            continue;
        }
        let size = frame::HEADER_LEN + append.payload.len() as u64;
        if bytes + size > limits.max_bytes {
            let _ = append.reply.send(Err(DeliveryError::SpoolFull));
            refused = true;
            continue;
        }
        frame::set_seq(&mut append.payload, framed.next_seq);
        framed
            .buffer
            .extend_from_slice(&frame::header(&append.payload));
        framed.buffer.extend_from_slice(&append.payload);
        framed.accepted.push((framed.next_seq, append.reply));
        framed.next_seq += 1;
        bytes += size;
    }
    if refused && state.refused_for_room() {
        tracing::warn!(
            max_bytes = limits.max_bytes,
            "The spool is full; answering 503 until forwarding to Kafka frees room."
        );
    }
    framed
}

/// The batch is durable: publish its length to readers, start a new segment if this one
/// is full, then answer every append with its number.
fn publish(shared: &Shared, limits: Limits, active: &mut Active, framed: Framed) {
    let mut state = shared.lock();
    let written = framed.buffer.len() as u64;
    state.committed(active.0, framed.start_len, written, framed.next_seq);
    if framed.start_len + written >= limits.segment_bytes {
        match new_segment(&shared.dir, &mut state) {
            Ok(next) => *active = next,
            Err(error) => {
                tracing::error!(%error, "Cannot start a new spool segment; keeping the current one.");
            }
        }
    }
    drop(state);
    if let Some(&(first, _)) = framed.accepted.first() {
        shared.checkpoints.note(first, frame::now_ms());
    }
    shared.update_gauges();
    shared.committed.notify_one();
    for (seq, reply) in framed.accepted {
        let _ = reply.send(Ok(seq));
    }
}

/// The write or fsync failed: cut off whatever part of the batch reached the file (none
/// of it is acknowledged) and answer every append 503.
fn cut_off(shared: &Shared, active: &mut Active, framed: Framed, error: &std::io::Error) {
    let cut = match active.1.set_len(framed.start_len) {
        Ok(()) => Cut::Done,
        Err(cut) => {
            tracing::error!(error = %cut, "Cannot cut a failed write off the spool segment; no more appends go to it.");
            Cut::Failed
        }
    };
    // Frames not cut off may still be on disk, numbered: those numbers are never given
    // again (and so the next segment gets a name of its own).
    shared.lock().write_failed(cut, framed.next_seq);
    tracing::error!(%error, "Cannot write the spool; answering 503.");
    refuse(framed.accepted.into_iter().map(|(_, reply)| reply), error);
}

/// Answers each of `replies` 503 `spool_unavailable` with `error`.
fn refuse(
    replies: impl Iterator<Item = oneshot::Sender<Result<u64, DeliveryError>>>,
    error: &std::io::Error,
) {
    for reply in replies {
        let _ = reply.send(Err(DeliveryError::SpoolUnavailable(error.to_string())));
    }
}
