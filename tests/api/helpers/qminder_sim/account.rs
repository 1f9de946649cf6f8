//! A scripted Qminder account for the API simulator: tickets created, called, served,
//! cancelled and marked no-show over a stretch of (simulated) time, deterministically
//! from a seed, in the shape Qminder's OpenAPI document gives a ticket.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One ticket of the account and where it lives.
#[derive(Debug, Clone)]
pub struct SimTicket {
    pub location: u64,
    pub line: u64,
    pub json: Value,
}

impl SimTicket {
    pub fn id(&self) -> &str {
        self.json["id"].as_str().expect("a string id")
    }

    /// `created.date`, `called.date`, `served.date` in ms, where present.
    pub fn time_ms(&self, stage: &str) -> Option<i64> {
        let text = self.json.get(stage)?.get("date")?.as_str()?;
        let at = OffsetDateTime::parse(text, &Rfc3339).expect("RFC 3339");
        Some((at.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or("")
    }
}

/// A small deterministic generator (xorshift64*): the same seed, the same account.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn date(ms: i64, with_ms: bool) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a time in range");
    let text = at.format(&Rfc3339).expect("formats");
    if with_ms {
        // Qminder writes created.date with milliseconds, always three digits.
        let (secs, _) = text.split_once('Z').map_or((text.as_str(), ""), |p| p);
        let secs = secs.split('.').next().unwrap_or(secs);
        format!("{secs}.{:03}Z", ms.rem_euclid(1000))
    } else {
        // called.date and served.date have whole seconds.
        let secs = text.split(['.', 'Z']).next().unwrap_or(&text);
        format!("{secs}Z")
    }
}

/// `n` tickets at `location`, created evenly from `start_ms` over `span_ms`; each is then
/// called a few minutes later and served, cancelled or marked no-show, or still waiting,
/// as the seed decides. No transition lies after `now_ms`.
pub fn account(
    seed: u64,
    location: u64,
    n: usize,
    start_ms: i64,
    span_ms: i64,
    now_ms: i64,
) -> Vec<SimTicket> {
    let mut rng = Rng::new(seed);
    let step = (span_ms / n.max(1) as i64).max(1);
    (0..n)
        .map(|i| {
            let created = start_ms + i as i64 * step + rng.below(step as u64) as i64;
            let line = 100 + rng.below(3);
            let id = format!("{}", 7_000_000 + location * 100_000 + i as u64);
            let mut json = json!({
                "id": id,
                "status": "NEW",
                "source": "MANUAL",
                "line": line,
                "firstName": format!("Visitor{i}"),
                "lastName": "Example",
                "orderAfter": date(created, true),
                "created": {"date": date(created, true)},
            });
            let called = created + 60_000 + rng.below(600_000) as i64;
            let fate = rng.below(10);
            if fate == 0 && called <= now_ms {
                json["status"] = "CANCELLED_BY_CLERK".into();
            } else if called <= now_ms && fate != 1 {
                json["status"] = "CALLED".into();
                json["called"] = json!({"date": date(called, false), "caller": 15144, "desk": 3});
                let ended = called + 30_000 + rng.below(300_000) as i64;
                if ended <= now_ms {
                    json["status"] = if fate == 2 { "NOSHOW" } else { "SERVED" }.into();
                    if fate != 2 {
                        json["served"] = json!({"date": date(ended, false)});
                    }
                }
            }
            SimTicket {
                location,
                line,
                json,
            }
        })
        .collect()
}

#[test]
fn the_scripted_account_has_every_kind_of_ticket_in_qminders_date_formats() {
    let start = 1_796_115_600_000; // 2026-12-01T09:00:00Z
    let tickets = account(7, 1, 200, start, 3_600_000, start + 3_600_000);
    let statuses: std::collections::BTreeSet<&str> = tickets.iter().map(|t| t.status()).collect();
    for s in ["NEW", "CALLED", "SERVED", "CANCELLED_BY_CLERK", "NOSHOW"] {
        assert!(statuses.contains(s), "{s} missing from {statuses:?}");
    }
    let t = &tickets[0];
    let created = t.json["created"]["date"].as_str().unwrap();
    assert_eq!(created.len(), "2026-12-01T09:00:00.000Z".len(), "{created}");
    assert_eq!(
        date(t.time_ms("created").unwrap(), true),
        created,
        "round trip"
    );
    let served = tickets.iter().find(|t| t.status() == "SERVED").unwrap();
    assert!(
        !served.json["served"]["date"]
            .as_str()
            .unwrap()
            .contains('.')
    );
    assert_eq!(
        account(7, 1, 200, start, 3_600_000, start + 3_600_000)[5].json,
        tickets[5].json
    );
}
