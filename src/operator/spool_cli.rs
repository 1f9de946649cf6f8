//! `qminder-bridge spool …`: an operator's tools for the spool directory (`spool.dir`) of a
//! configuration. `status`, `parked list` and `parked export` only read (a running bridge's
//! directory is shown as a snapshot); `parked replay` sends parked records to Kafka with the
//! bridge's own producer settings and removes each only after Kafka's acknowledgement, so it
//! takes the directory's exclusive lock first and refuses while a bridge (or another
//! replay) holds it. Output is for people, except `export` (JSON lines).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::config::Settings;
use crate::delivery::kafka;
use crate::delivery::spool::frame;
use crate::delivery::spool::inspect::{self, ParkedItem, ParkedKind};
use crate::delivery::spool::lock::DirLock;
use crate::delivery::{Deliver, Delivered};

#[derive(Debug, clap::Args)]
pub struct SpoolArgs {
    /// TOML configuration file (its `spool.dir`, and `[kafka]` for `replay`); as for `serve`.
    #[arg(long, short, env = "QMINDER_BRIDGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: SpoolCommand,
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Backlog (events, bytes, oldest), cursor, segments and parked items of the spool.
    Status,
    /// Records Kafka refused outright, and damaged bytes, kept in `<spool.dir>/parked/`.
    #[command(subcommand)]
    Parked(ParkedCommand),
}

#[derive(Debug, Subcommand)]
pub enum ParkedCommand {
    /// One line per parked item: id, kind, event id, topic, size, reason.
    List,
    /// Every parked item as a JSON line (values as text, or hex when not UTF-8).
    Export,
    /// Send parked records to Kafka again; each is removed after Kafka acknowledges it.
    /// Refuses while a bridge runs on the same spool directory.
    Replay {
        /// Ids from `parked list`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every parked record.
        #[arg(long)]
        all: bool,
    },
}

/// `spool …`
pub fn run(args: &SpoolArgs) -> ExitCode {
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qminder-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = settings.spool.dir.clone();
    let done = match &args.command {
        SpoolCommand::Status => status(&dir),
        SpoolCommand::Parked(ParkedCommand::List) => list(&dir),
        SpoolCommand::Parked(ParkedCommand::Export) => export(&dir),
        SpoolCommand::Parked(ParkedCommand::Replay { ids, all }) => {
            replay(&settings, &dir, ids, *all)
        }
    };
    done.unwrap_or_else(|message| {
        eprintln!("qminder-bridge: {message}");
        ExitCode::from(2)
    })
}

fn held_note(dir: &Path) -> &'static str {
    match DirLock::is_held(dir) {
        Ok(true) => "a bridge holds it now: this is a snapshot",
        Ok(false) => "no bridge holds it",
        Err(_) => "cannot tell whether a bridge holds it",
    }
}

fn status(dir: &Path) -> Result<ExitCode, String> {
    let s = inspect::status(dir).map_err(|e| format!("cannot read the spool: {e}"))?;
    println!("spool directory   {} ({})", dir.display(), held_note(dir));
    println!(
        "backlog           {} events, {} bytes",
        s.backlog_events, s.backlog_bytes
    );
    match s.oldest_received_ms {
        Some(ms) => println!(
            "oldest            received {} ({:.1} s ago)",
            rfc3339(ms),
            frame::now_ms().saturating_sub(ms) as f64 / 1000.0
        ),
        None => println!("oldest            none"),
    }
    println!("cursor            {} (the next event to forward)", s.cursor);
    println!("segments          {}", s.segments);
    println!("parked            {}", s.parked);
    for (topic, events) in &s.held {
        println!("held              {events} events of {topic} (Kafka refuses the topic for now)");
    }
    if s.unreadable_tails > 0 {
        println!(
            "unreadable tails  {} (torn or damaged bytes; the bridge's recovery handles them at start-up)",
            s.unreadable_tails
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

fn parked(dir: &Path) -> Result<Vec<ParkedItem>, String> {
    inspect::parked(dir).map_err(|e| format!("cannot read {}/parked: {e}", dir.display()))
}

fn list(dir: &Path) -> Result<ExitCode, String> {
    let items = parked(dir)?;
    println!("{} parked item(s) in {}/parked", items.len(), dir.display());
    for item in &items {
        match &item.kind {
            ParkedKind::Record { record, reason } => println!(
                "{}  record   event {}  topic {}  {} bytes  reason: {}",
                item.id,
                record.id,
                record.topic,
                item.size,
                reason
                    .as_deref()
                    .unwrap_or("refused by Kafka (not recorded)")
            ),
            ParkedKind::Damaged => println!(
                "{}  damaged  {} bytes found damaged in a segment at start-up (not a readable record)",
                item.id, item.size
            ),
            ParkedKind::Unreadable => println!(
                "{}  unreadable  {} bytes: not an intact frame",
                item.id, item.size
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export(dir: &Path) -> Result<ExitCode, String> {
    for item in parked(dir)? {
        println!("{}", export_line(&item));
    }
    Ok(ExitCode::SUCCESS)
}

fn text_or_hex(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::json!({ "text": text }),
        Err(_) => serde_json::json!({ "hex": hex::encode(bytes) }),
    }
}

fn export_line(item: &ParkedItem) -> serde_json::Value {
    let file = item.path.display().to_string();
    match &item.kind {
        ParkedKind::Record { record, reason } => serde_json::json!({
            "id": item.id, "kind": "record", "file": file, "size": item.size,
            "seq": record.seq, "event_id": record.id, "topic": record.topic,
            "event_type": record.label, "key": record.key,
            "received_at": rfc3339(record.received_ms), "reason": reason,
            "headers": record.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "value": text_or_hex(&record.value),
        }),
        ParkedKind::Damaged | ParkedKind::Unreadable => {
            let bytes = std::fs::read(&item.path).unwrap_or_default();
            let kind = if matches!(item.kind, ParkedKind::Damaged) {
                "damaged"
            } else {
                "unreadable"
            };
            serde_json::json!({
                "id": item.id, "kind": kind, "file": file, "size": item.size,
                "bytes": text_or_hex(&bytes),
            })
        }
    }
}

/// The parked records `ids` name (all of them with `all`); an unknown id or one that is not
/// a record is an error before anything is sent.
fn select(items: Vec<ParkedItem>, ids: &[String], all: bool) -> Result<Vec<ParkedItem>, String> {
    if all {
        return Ok(items
            .into_iter()
            .filter(|i| matches!(i.kind, ParkedKind::Record { .. }))
            .collect());
    }
    let mut chosen: Vec<ParkedItem> = Vec::new();
    for id in ids {
        if chosen.iter().any(|c| &c.id == id) {
            continue;
        }
        match items.iter().find(|i| &i.id == id) {
            Some(item) if matches!(item.kind, ParkedKind::Record { .. }) => {
                chosen.push(item.clone());
            }
            Some(_) => {
                return Err(format!(
                    "{id} is not a readable record; see it with `spool parked export`"
                ));
            }
            None => return Err(format!("no parked item {id}; see `spool parked list`")),
        }
    }
    Ok(chosen)
}

fn replay(settings: &Settings, dir: &Path, ids: &[String], all: bool) -> Result<ExitCode, String> {
    if settings.kafka.is_embedded() {
        return Err("the embedded broker exists only inside `serve`: nothing to replay to".into());
    }
    let lock = DirLock::acquire(dir).map_err(|e| format!("cannot replay: {e}"))?;
    let chosen = select(parked(dir)?, ids, all)?;
    let publisher = kafka::operator_publisher(settings).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let failed = runtime.block_on(send_all(&publisher, &chosen));
    let flushed = publisher.flush(Duration::from_secs(10));
    drop(lock);
    if let Err(e) = flushed {
        eprintln!("qminder-bridge: the final flush failed: {e}");
    }
    println!("replayed {} of {}", chosen.len() - failed, chosen.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Sends each item in turn; removes it once Kafka acknowledged it. Returns the failures.
async fn send_all(publisher: &kafka::Publisher, items: &[ParkedItem]) -> usize {
    let mut failed = 0;
    for item in items {
        let ParkedKind::Record { record, .. } = &item.kind else {
            continue;
        };
        match publisher.deliver(&record.record()).await {
            Ok(delivered) => match inspect::remove_parked(&item.path) {
                Ok(()) => println!(
                    "replayed {}  event {}  to {}{}",
                    item.id,
                    record.id,
                    record.topic,
                    at(&delivered)
                ),
                Err(e) => {
                    failed += 1;
                    println!(
                        "replayed {} but cannot remove it ({e}): remove it by hand",
                        item.id
                    );
                }
            },
            Err(error) => {
                failed += 1;
                let maybe = if matches!(error, crate::delivery::DeliveryError::Timeout) {
                    " (Kafka may still take it: a later replay can make a duplicate, same event id)"
                } else {
                    ""
                };
                println!(
                    "failed   {}  event {}  {error}{maybe}; kept in parked/",
                    item.id, record.id
                );
            }
        }
    }
    failed
}

fn at(delivered: &Delivered) -> String {
    match delivered {
        Delivered::Kafka { partition, offset } => format!(" partition {partition} offset {offset}"),
        Delivered::Spooled { .. } => String::new(),
    }
}
