//! The spool's frame codec on arbitrary bytes, and on arbitrary records.
//!
//! Each input is used three ways:
//! 1. as a spool segment: `frame::read` in a loop, as recovery and the forwarder do, must
//!    never panic or fail, and every frame it returns must re-encode to exactly the bytes
//!    it was read from;
//! 2. as a payload behind a correct header (the fuzzer cannot forge CRC-32s), so the
//!    payload decoder sees arbitrary bytes: same rule;
//! 3. as `arbitrary` records: encoded, framed, concatenated and read back equal, in order,
//!    then `End`; the last frame cut short or with a payload byte flipped is `Torn`,
//!    with the frames before it intact.
#![no_main]

use std::borrow::Cow;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use qminder_bridge::record::Record;
use qminder_bridge::delivery::spool::frame::{self, HEADER_LEN, Outcome, Spooled};

#[derive(Arbitrary, Debug)]
struct Rec {
    seq: u64,
    received_ms: u64,
    id: String,
    topic: String,
    label: String,
    key: Option<String>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
struct Damage {
    cut: u32,
    flip_at: u32,
    flip: u8,
}

fuzz_target!(|data: &[u8]| {
    read_segment(data);

    let mut payload_frame = frame::header(data).to_vec();
    payload_frame.extend_from_slice(data);
    let frames = read_segment(&payload_frame);
    assert!(frames <= 1);

    let mut u = Unstructured::new(data);
    if let (Ok(recs), Ok(damage)) = (Vec::<Rec>::arbitrary(&mut u), Damage::arbitrary(&mut u)) {
        round_trip(&recs, &damage);
    }
});

/// Reads frames from `bytes` until `End` or `Torn`; checks each; returns how many.
fn read_segment(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    let mut frames = 0;
    loop {
        let rest = &bytes[at..];
        let mut reader = rest;
        match frame::read(&mut reader, rest.len() as u64).expect("reading a slice cannot fail") {
            Outcome::End => {
                assert!(rest.is_empty());
                return frames;
            }
            Outcome::Torn => {
                assert!(!rest.is_empty());
                return frames;
            }
            Outcome::Frame(spooled, len) => {
                let len = usize::try_from(len).unwrap();
                assert!(
                    len as u64 >= HEADER_LEN && len <= rest.len(),
                    "{len} of {}",
                    rest.len()
                );
                assert_eq!(
                    rest.len() - reader.len(),
                    len,
                    "consumed bytes != frame length"
                );
                assert_eq!(framed(&spooled), &rest[..len], "re-encoding differs");
                at += len;
                frames += 1;
            }
        }
    }
}

/// The frame the writer would produce for `s`.
fn framed(s: &Spooled) -> Vec<u8> {
    let mut payload = frame::encode_payload(&s.record(), s.received_ms);
    frame::set_seq(&mut payload, s.seq);
    let mut out = frame::header(&payload).to_vec();
    out.extend_from_slice(&payload);
    out
}

fn round_trip(recs: &[Rec], damage: &Damage) {
    let mut segment = Vec::new();
    let mut starts = Vec::new();
    for r in recs {
        let record = Record {
            topic: &r.topic,
            key: r.key.as_deref(),
            value: Cow::Borrowed(&r.value),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                .collect(),
            label: &r.label,
            id: &r.id,
            accepted_ms: 0,
        };
        let mut payload = frame::encode_payload(&record, r.received_ms);
        frame::set_seq(&mut payload, r.seq);
        starts.push(segment.len());
        segment.extend_from_slice(&frame::header(&payload));
        segment.extend_from_slice(&payload);
    }

    let mut reader = &segment[..];
    let mut available = segment.len() as u64;
    for (i, r) in recs.iter().enumerate() {
        let Outcome::Frame(s, len) = frame::read(&mut reader, available).unwrap() else {
            panic!("record {i} of {} not read back: {r:?}", recs.len())
        };
        let end = starts.get(i + 1).copied().unwrap_or(segment.len());
        assert_eq!(len, (end - starts[i]) as u64);
        let want = Spooled {
            seq: r.seq,
            received_ms: r.received_ms,
            id: r.id.clone(),
            topic: r.topic.clone(),
            label: r.label.clone(),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
        };
        assert_eq!(s, want);
        available -= len;
    }
    assert!(matches!(
        frame::read(&mut reader, available).unwrap(),
        Outcome::End
    ));

    // Damage to the last frame: the ones before it still read back, it does not.
    let Some(&last) = starts.last() else { return };
    let whole = segment.len() - last;
    let cut = last + damage.cut as usize % whole; // at least its first byte is kept... or none
    let mut torn = segment[..cut].to_vec();
    if cut > last {
        assert_eq!(read_all(&torn), (recs.len() - 1, Some(false)));
    }
    torn = segment.clone();
    let payload_len = whole - HEADER_LEN as usize;
    if payload_len > 0 && damage.flip != 0 {
        let i = last + HEADER_LEN as usize + damage.flip_at as usize % payload_len;
        torn[i] ^= damage.flip;
        assert_eq!(
            read_all(&torn),
            (recs.len() - 1, Some(false)),
            "flip at {i}"
        );
    }
}

/// Frames read, and how reading stopped: `Some(true)` at `End`, `Some(false)` at `Torn`.
fn read_all(bytes: &[u8]) -> (usize, Option<bool>) {
    let mut reader = bytes;
    let mut available = bytes.len() as u64;
    let mut n = 0;
    loop {
        match frame::read(&mut reader, available).unwrap() {
            Outcome::Frame(_, len) => {
                n += 1;
                available -= len;
            }
            Outcome::End => return (n, Some(true)),
            Outcome::Torn => return (n, Some(false)),
        }
    }
}
