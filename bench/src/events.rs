//! Realistic Qminder ticket webhooks, each unique, and their signatures.
//!
//! A body is `{"type":"ticket_<…>","data":{…}}` shaped like Qminder's ticket object (status,
//! line, names, phone, e-mail, `created` / `called` / `served` stamps, labels, `extra`
//! fields), padded by a free-text note to a size drawn uniformly from a range (0.5–2 KiB by
//! default). Ticket ids are drawn from a large range so that Kafka keys spread over the
//! partitions, and the body carries its sequence number, so no two bodies (and no two event
//! ids) are equal. Everything is derived from the sequence number: deterministic, no I/O.
//!
//! [`Signer`] computes what Qminder sends in `X-Qminder-Signature`:
//! `hex(HMAC-SHA256(secret, url ‖ body))`, with `url` the endpoint URL configured in the
//! bridge — not the address the generator connects to.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Ticket event types and how often each is sent, out of 100.
const EVENT_MIX: [(&str, u64); 6] = [
    ("ticket_created", 30),
    ("ticket_called", 20),
    ("ticket_served", 20),
    ("ticket_changed", 12),
    ("ticket_cancelled", 10),
    ("ticket_recalled", 8),
];

const FIRST_NAMES: [&str; 8] = [
    "Jane", "Mari", "Oskar", "Zoë", "Ahmed", "Liisa", "Kenji", "Ana",
];
const LAST_NAMES: [&str; 8] = [
    "Doe", "Tamm", "Saar", "Åström", "Haddad", "Kask", "Sato", "Silva",
];
const NOTE_WORDS: [&str; 12] = [
    "customer",
    "asked",
    "about",
    "passport",
    "renewal",
    "and",
    "needs",
    "a",
    "translator",
    "for",
    "the",
    "appointment",
];

/// Signs bodies for one endpoint URL with one secret.
#[derive(Clone)]
pub struct Signer {
    /// HMAC already keyed with the secret and fed the URL bytes.
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// `url` is the endpoint's URL as configured in the bridge (as registered in Qminder).
    ///
    /// # Panics
    /// Never: HMAC accepts keys of any length.
    pub fn new(url: &str, secret: &str) -> Self {
        let mut keyed =
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
        keyed.update(url.as_bytes());
        Self { keyed }
    }

    /// The `X-Qminder-Signature` value for `body`: 64 lowercase hex digits.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Body sizes to draw from, in bytes (inclusive).
#[derive(Debug, Clone, Copy)]
pub struct SizeRange {
    pub min: usize,
    pub max: usize,
}

impl Default for SizeRange {
    fn default() -> Self {
        Self {
            min: 512,
            max: 2048,
        }
    }
}

/// `SplitMix64`: a tiny, good-enough PRNG step, so that each body follows from its sequence.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic stream of pseudo-random numbers for one body.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// `2026-11-26T<hh:mm:ss>.<ms>Z`, a valid RFC 3339 time derived from `secs` and `ms`.
fn stamp(out: &mut String, secs: u64, ms: u64) {
    let _ = write!(
        out,
        "\"2026-11-26T{:02}:{:02}:{:02}.{:03}Z\"",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    );
}

/// The body of webhook number `seq`, its size drawn from `sizes`.
pub fn body(seq: u64, sizes: SizeRange) -> String {
    let mut draw = Draws(seq);
    let mut roll = draw.below(100);
    let event_type = EVENT_MIX
        .iter()
        .find(|(_, weight)| {
            let hit = roll < *weight;
            roll = roll.saturating_sub(*weight);
            hit
        })
        .map_or("ticket_changed", |(t, _)| t);
    let target = sizes.min + draw.below((sizes.max - sizes.min + 1) as u64) as usize;
    // 2 million ticket ids over ~100k live ones: keys repeat a little, like real traffic.
    let ticket = 7_000_000 + draw.below(100_000) * 20 + seq % 20;
    let line = 12_340 + draw.below(40);
    let created = 8 * 3600 + draw.below(8 * 3600);
    let status = match event_type {
        "ticket_called" | "ticket_recalled" => "CALLED",
        "ticket_served" => "SERVED",
        "ticket_cancelled" => "CANCELLED_BY_CLERK",
        _ => "NEW",
    };

    let mut out = String::with_capacity(target + 64);
    let _ = write!(
        out,
        "{{\"type\":\"{event_type}\",\"data\":{{\"id\":\"{ticket}\",\"status\":\"{status}\",\
         \"source\":\"{}\",\"line\":{line},\"firstName\":\"{}\",\"lastName\":\"{}\",\
         \"phoneNumber\":{},\"email\":\"visitor{}@example.com\",\"created\":{{\"date\":",
        draw.pick(&["MANUAL", "NAME", "PRINTER", "REMOTE"]),
        draw.pick(&FIRST_NAMES),
        draw.pick(&LAST_NAMES),
        37_250_000_000 + draw.below(100_000_000),
        draw.below(1_000_000),
    );
    stamp(&mut out, created, seq);
    out.push('}');
    if matches!(
        event_type,
        "ticket_called" | "ticket_recalled" | "ticket_served"
    ) {
        out.push_str(",\"called\":{\"date\":");
        stamp(&mut out, created + 60 + draw.below(1800), seq + 1);
        let _ = write!(
            out,
            ",\"caller\":{},\"desk\":{}}}",
            90_000 + draw.below(500),
            1 + draw.below(12)
        );
    }
    if event_type == "ticket_served" {
        out.push_str(",\"served\":{\"date\":");
        stamp(&mut out, created + 1900 + draw.below(1800), seq + 2);
        out.push('}');
    }
    let _ = write!(
        out,
        ",\"orderAfter\":null,\"labels\":[{{\"color\":\"#ffd700\",\"value\":\"{}\"}}],\
         \"extra\":[{{\"title\":\"Bench sequence\",\"value\":\"{seq}\"}},\
         {{\"title\":\"Notes\",\"value\":\"",
        draw.pick(&["VIP", "Passport", "Residence permit", "Pickup"]),
    );
    // Pad with words to the drawn size (bodies above the range's top only if the fixed
    // part alone is larger, which it is not for the default range).
    let closing = "\"}]}}";
    while out.len() + closing.len() < target {
        let word = draw.pick(&NOTE_WORDS);
        let room = target - closing.len() - out.len();
        if room <= word.len() {
            out.push_str(&"x".repeat(room));
        } else {
            out.push_str(word);
            out.push(' ');
        }
    }
    out.push_str(closing);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_envelopes_within_the_size_range_and_unique() {
        let sizes = SizeRange::default();
        let mut seen = std::collections::HashSet::new();
        let mut types = std::collections::HashSet::new();
        for seq in 0..2000 {
            let b = body(seq, sizes);
            assert!(b.len() >= sizes.min && b.len() <= sizes.max, "{}", b.len());
            let v: serde_json::Value = serde_json::from_str(&b).expect("valid JSON");
            assert!(v["data"]["id"].is_string());
            types.insert(v["type"].as_str().expect("a type").to_owned());
            assert!(seen.insert(b));
        }
        assert_eq!(types.len(), EVENT_MIX.len());
    }

    #[test]
    fn signs_like_the_qminder_seed_example() {
        let signer = Signer::new(
            "https://example.com/webhooks",
            "71dX4IUKcJMDOaMHeA5IACBSHJkS4LzYNXlZPleg",
        );
        assert_eq!(
            signer.sign(b"{ \"statusCode\": 200 }"),
            "cc316996bed6b481bfe539a643159a25bc8db08be2402e89be25b48e4935fde4"
        );
    }
}
