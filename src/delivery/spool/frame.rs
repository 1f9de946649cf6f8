//! One spooled record on disk, and how to read it back or notice it is torn.
//!
//! A frame is `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. The payload
//! holds the sequence number, the receive time and the whole Kafka record (topic, metric
//! label, id, key, value, headers), length-prefixed. A frame whose length runs past the end
//! of the file, or whose checksum does not match, was being written when the process died:
//! it was never acknowledged (acknowledgement waits for its fsync), so it is discarded.

use std::borrow::Cow;
use std::io::{self, Read};

use crate::record::Record;

/// Bytes before the payload.
pub const HEADER_LEN: u64 = 8;
/// The smallest payload: sequence number, receive time, three empty strings (id, topic,
/// label), no key, an empty value, no headers. See [`encode_payload`].
pub const MIN_PAYLOAD: u64 = 8 + 8 + 4 + 4 + 4 + 1 + 4 + 4;
/// The smallest frame on disk.
pub const MIN_FRAME: u64 = HEADER_LEN + MIN_PAYLOAD;
/// No frame is larger; a larger length field means a torn or corrupt frame.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

/// A record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub seq: u64,
    pub received_ms: u64,
    pub id: String,
    pub topic: String,
    pub label: String,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Spooled {
    /// The Kafka record to forward.
    pub fn record(&self) -> Record<'_> {
        Record {
            topic: &self.topic,
            key: self.key.as_deref(),
            value: Cow::Borrowed(&self.value),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                .collect(),
            id: &self.id,
            label: &self.label,
            accepted_ms: self.received_ms,
        }
    }
}

/// The payload for `record`, with sequence number 0; the writer sets it ([`set_seq`]).
pub fn encode_payload(record: &Record<'_>, received_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.value.len() + 256);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&received_ms.to_le_bytes());
    put_str(&mut out, record.id);
    put_str(&mut out, record.topic);
    put_str(&mut out, record.label);
    match record.key {
        Some(key) => {
            out.push(1);
            put_str(&mut out, key);
        }
        None => out.push(0),
    }
    put_bytes(&mut out, &record.value);
    out.extend_from_slice(
        &u32::try_from(record.headers.len())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    for (k, v) in &record.headers {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out
}

/// The whole frame (header and payload) of a record read back: how a record is kept
/// outside the log (held or parked).
pub fn encode(record: &Spooled) -> Vec<u8> {
    let mut payload = encode_payload(&record.record(), record.received_ms);
    set_seq(&mut payload, record.seq);
    let mut frame = header(&payload).to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// The record in a file holding one whole frame (a held or parked record); `None` if the
/// file is not exactly an intact frame's start.
pub fn read_file(path: &std::path::Path) -> io::Result<Option<Spooled>> {
    let bytes = std::fs::read(path)?;
    Ok(match read(&mut bytes.as_slice(), bytes.len() as u64)? {
        Outcome::Frame(record, _) => Some(record),
        Outcome::End | Outcome::Torn => None,
    })
}

/// The sequence number of the frame that starts at `bytes[0]`, read without checking
/// the frame (the payload starts with it); `None` if too few bytes.
pub fn peek_seq(bytes: &[u8]) -> Option<u64> {
    let at = HEADER_LEN as usize;
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Milliseconds since the Unix epoch: the clock of `received_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes the sequence number into an encoded payload.
pub fn set_seq(payload: &mut [u8], seq: u64) {
    payload[..8].copy_from_slice(&seq.to_le_bytes());
}

/// The frame header for `payload`.
pub fn header(payload: &[u8]) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    h[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h
}

/// What reading at a position found.
#[derive(Debug)]
pub enum Outcome {
    /// A whole, intact frame.
    Frame(Spooled, u64),
    /// The clean end: no bytes left.
    End,
    /// Bytes that are not a whole intact frame (a torn write, or corruption).
    Torn,
}

/// Reads one frame from `reader`, which has `available` bytes left before the end of what
/// may be read. Returns the record and the frame's length on disk.
pub fn read(reader: &mut impl Read, available: u64) -> io::Result<Outcome> {
    if available == 0 {
        return Ok(Outcome::End);
    }
    if available < HEADER_LEN {
        return Ok(Outcome::Torn);
    }
    let mut h = [0u8; 8];
    reader.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_PAYLOAD || u64::from(len) > available - HEADER_LEN {
        return Ok(Outcome::Torn);
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Outcome::Torn);
    }
    match decode(&payload) {
        Some(record) => Ok(Outcome::Frame(record, HEADER_LEN + u64::from(len))),
        None => Ok(Outcome::Torn),
    }
}

fn decode(payload: &[u8]) -> Option<Spooled> {
    let mut r = PayloadReader {
        buf: payload,
        at: 0,
    };
    let seq = r.u64()?;
    let received_ms = r.u64()?;
    let id = r.string()?;
    let topic = r.string()?;
    let label = r.string()?;
    let key = match r.take(1)?[0] {
        0 => None,
        1 => Some(r.string()?),
        _ => return None,
    };
    let value = r.bytes()?.to_vec();
    let n = r.u32()?;
    let mut headers = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        headers.push((r.string()?, r.string()?));
    }
    (r.at == payload.len()).then_some(Spooled {
        seq,
        received_ms,
        id,
        topic,
        label,
        key,
        value,
        headers,
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Reads a payload's fields in order.
struct PayloadReader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> PayloadReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.buf.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let record = Record {
            topic: "qminder.ticket_created",
            key: Some("42"),
            value: Cow::Borrowed(b"{\"data\":1}"),
            headers: vec![("content-type", Cow::Borrowed("application/json"))],
            id: "abc",
            label: "ticket_created",
            accepted_ms: 0,
        };
        let mut payload = encode_payload(&record, 1_700_000_000_000);
        set_seq(&mut payload, 7);
        let mut frame = header(&payload).to_vec();
        frame.extend_from_slice(&payload);
        frame
    }

    #[test]
    fn the_smallest_payload_is_min_payload_long_and_starts_with_its_number() {
        let empty = Record {
            topic: "",
            key: None,
            value: Cow::Borrowed(b""),
            headers: Vec::new(),
            id: "",
            label: "",
            accepted_ms: 0,
        };
        let mut payload = encode_payload(&empty, 0);
        assert_eq!(payload.len() as u64, MIN_PAYLOAD);
        set_seq(&mut payload, 42);
        let mut frame = header(&payload).to_vec();
        frame.extend_from_slice(&payload);
        assert_eq!(frame.len() as u64, MIN_FRAME);
        assert_eq!(peek_seq(&frame), Some(42));
        assert_eq!(peek_seq(&frame[..15]), None);
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let frame = sample();
        let Outcome::Frame(r, len) = read(&mut &frame[..], frame.len() as u64).unwrap() else {
            panic!("not a frame")
        };
        assert_eq!(len, frame.len() as u64);
        assert_eq!(r.seq, 7);
        assert_eq!(r.key.as_deref(), Some("42"));
        assert_eq!(r.record().topic, "qminder.ticket_created");
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );
    }

    #[test]
    fn calls_every_cut_short_or_flipped_frame_torn() {
        let frame = sample();
        for cut in 1..frame.len() {
            let outcome = read(&mut &frame[..cut], cut as u64).unwrap();
            assert!(
                matches!(outcome, Outcome::Torn),
                "cut at {cut}: {outcome:?}"
            );
        }
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x40;
            let outcome = read(&mut &bad[..], bad.len() as u64);
            assert!(!matches!(outcome, Ok(Outcome::Frame(..))), "flip at {i}");
        }
        assert!(matches!(read(&mut &frame[..0], 0).unwrap(), Outcome::End));
    }
}
