//! The worst case of the memory the configured limits allow, term by term, and the
//! warnings `check-config` and `serve` give about the configuration (a worst case above
//! `server.memory_limit_bytes`, TLS to the brokers weakened, a per-address connection cap
//! low enough to close Qminder's own connections). Warnings never refuse: an
//! upgrade must not stop a bridge that ran before.
//!
//! The terms and how their constants were measured: docs/reliability.md, "How much memory".

use super::Settings;

/// The process itself: code, the allocator's arenas, actix's workers, Tokio, librdkafka's
/// threads and buffers (measured: 13 MiB idle, 15–22 MiB under load; rounded up).
pub const BASE_BYTES: u64 = 48 * 1024 * 1024;

/// What start-up recovery of the spool reads at a time (`delivery/spool/scan.rs`).
pub const RECOVERY_WINDOW_BYTES: u64 = 1024 * 1024;

/// The largest frame recovery may read beside its window: a frame's largest payload
/// (`delivery::spool::frame::MAX_PAYLOAD`, 64 MiB, pinned by a test there) and its header.
/// Only a damaged length field can claim more than the largest record written.
pub const RECOVERY_FRAME_BYTES: u64 = 64 * 1024 * 1024 + 8;
/// One open connection whose request is being read: actix's 8 KiB read and 8 KiB write
/// buffers, the request head, the handler's state (measured: 10 KiB a connection dripping
/// its body), plus the body a request may hold unverified outside the shared budget (its
/// allowance, `ingress::ALLOWANCE_BYTES`, 16 KiB; measured with it: 37 KiB).
pub const PER_CONNECTION_BYTES: u64 = 24 * 1024 + 16 * 1024;
/// Copies of an authenticated body while it is delivered: the body, the encoded record
/// value (structured mode), librdkafka's copy of it.
pub const IN_FLIGHT_COPIES: u64 = 3;
/// Bytes the spool's forwarder reads into one batch at most, beyond one record
/// (`delivery/spool/read.rs`).
pub const FORWARD_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// One `[dedupe]` entry: the id, the remembered answer, the map's and the queue's share.
pub const DEDUPE_ENTRY_BYTES: u64 = 256;
/// One ended span waiting for export (`[telemetry]`): its ids, name, times and a dozen
/// short attributes, as the OpenTelemetry SDK holds them (a generous estimate).
pub const QUEUED_SPAN_BYTES: u64 = 2 * 1024;

/// Below this, `server.max_connections_per_address` may close Qminder's own connections.
pub const MIN_CONNECTIONS_PER_ADDRESS: usize = 16;

/// One term of the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// What it is and the keys it comes from.
    pub what: String,
    pub bytes: u64,
}

/// The sum of the worst cases of everything that holds memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBound {
    pub terms: Vec<Term>,
}

impl MemoryBound {
    pub fn total(&self) -> u64 {
        self.terms.iter().map(|t| t.bytes).sum()
    }
}

impl Settings {
    /// The most memory these limits allow the bridge to use.
    pub fn memory_bound(&self) -> MemoryBound {
        self.memory_bound_in(|name| std::env::var(name).ok())
    }

    /// [`Settings::memory_bound`], with the OpenTelemetry variables read from `env`.
    fn memory_bound_in(&self, env: impl Fn(&str) -> Option<String> + Copy) -> MemoryBound {
        let s = &self.server;
        let mut terms = vec![
            Term {
                what: "the process itself, idle".into(),
                bytes: BASE_BYTES,
            },
            Term {
                what: "open connections: server.max_connections × 40 KiB".into(),
                bytes: self.connections() as u64 * PER_CONNECTION_BYTES,
            },
            Term {
                what: "unauthenticated bodies: server.max_unverified_body_bytes".into(),
                bytes: s.max_unverified_body_bytes as u64,
            },
            Term {
                what: "authenticated requests: 3 × server.max_in_flight_body_bytes".into(),
                bytes: IN_FLIGHT_COPIES * s.max_in_flight_body_bytes as u64,
            },
        ];
        if self.spool.enabled {
            terms.push(Term {
                what: "the spool's forward batch: 2 × (4 MiB + server.max_body_bytes)".into(),
                bytes: 2 * (FORWARD_BATCH_BYTES + s.max_body_bytes as u64),
            });
        }
        if self.dedupe.enabled {
            terms.push(Term {
                what: "remembered ids: dedupe.max_entries × 256 bytes".into(),
                bytes: self.dedupe.max_entries as u64 * DEDUPE_ENTRY_BYTES,
            });
        }
        if self.telemetry.enabled(env) {
            let queued = self.telemetry.queued_spans(env);
            terms.push(Term {
                what: "spans waiting for export: telemetry.max_queued_spans × 2 KiB".into(),
                bytes: queued as u64 * QUEUED_SPAN_BYTES,
            });
        }
        MemoryBound { terms }
    }

    /// What an operator should know before running this configuration; not errors.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.memory_warnings();
        let per_address = self.server.max_connections_per_address;
        if (1..MIN_CONNECTIONS_PER_ADDRESS).contains(&per_address) {
            warnings.push(format!(
                "server.max_connections_per_address = {per_address}: Qminder opens connections \
                 of its own accord, and those beyond {per_address} from one of its addresses \
                 would be closed unanswered; keep it at {MIN_CONNECTIONS_PER_ADDRESS} or more \
                 (default 256), or 0 for no cap"
            ));
        }
        warnings.extend(
            self.telemetry
                .environment_warnings(|name| std::env::var(name).ok()),
        );
        if self.server.max_connections_per_worker.is_some() {
            warnings.push(format!(
                "server.max_connections_per_worker is deprecated: it makes {} connections on \
                 {} workers here, and another number on another machine; set \
                 server.max_connections (all workers together) instead",
                self.connections(),
                self.workers()
            ));
        }
        warnings.extend(self.tls_warnings());
        warnings
    }

    /// A worst case above `server.memory_limit_bytes`, in running or in spool recovery.
    fn memory_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let bound = self.memory_bound();
        let limit = self.server.memory_limit_bytes;
        if bound.total() > limit {
            let terms: Vec<String> = bound
                .terms
                .iter()
                .map(|t| format!("{} MiB for {}", t.bytes / (1024 * 1024), t.what))
                .collect();
            warnings.push(format!(
                "these limits allow up to {} MiB of memory, above server.memory_limit_bytes \
                 ({} MiB): {}; lower the largest, or raise memory_limit_bytes with the pod's \
                 limit",
                bound.total() / (1024 * 1024),
                limit / (1024 * 1024),
                terms.join(", ")
            ));
        }
        let recovery =
            BASE_BYTES + RECOVERY_WINDOW_BYTES + self.spool.segment_bytes.min(RECOVERY_FRAME_BYTES);
        if self.spool.enabled && recovery > limit {
            warnings.push(format!(
                "server.memory_limit_bytes ({} MiB) is below what spool recovery may need at \
                 start-up ({} MiB: the process, a {} MiB read window, and one frame of up to \
                 spool.segment_bytes or 64 MiB); raise the limit or lower spool.segment_bytes",
                limit / (1024 * 1024),
                recovery / (1024 * 1024),
                RECOVERY_WINDOW_BYTES / (1024 * 1024)
            ));
        }
        warnings
    }

    /// HTTP/2 on the listener, and passthrough keys that turn off a check of the brokers'
    /// certificates.
    fn tls_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.server.tls.as_ref().is_some_and(|t| t.http2) {
            warnings.push(
                "server.tls.http2 = true: HTTP/2 runs with the h2 crate's default limits \
                 (16 MiB header lists, unlimited concurrent streams per connection), which \
                 actix-http does not let the bridge lower, and each stream is a request with \
                 its own 16 KiB unverified allowance, so the memory bound does not hold for \
                 HTTP/2 clients; Qminder's deliveries need only HTTP/1.1"
                    .into(),
            );
        }
        for (key, weak) in [
            ("enable.ssl.certificate.verification", "false"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ] {
            let value = self.kafka.librdkafka.iter().find(|(k, _)| *k == key);
            if value.is_some_and(|(_, v)| v.eq_ignore_ascii_case(weak)) {
                warnings.push(format!(
                    "kafka.librdkafka.\"{key}\" = \"{weak}\" turns off a check of the brokers' \
                     TLS certificates: anyone on the path can read and forge the records; use \
                     kafka.security.ca_file instead"
                ));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_fit_the_shipped_pod_limit_with_the_spool_and_dedupe_on() {
        let mut s = Settings::default();
        s.spool.enabled = true;
        s.dedupe.enabled = true;
        let bound = s.memory_bound();
        assert!(
            bound.total() <= s.server.memory_limit_bytes,
            "{} > {}: {bound:?}",
            bound.total(),
            s.server.memory_limit_bytes
        );
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    }

    #[test]
    fn warns_when_a_limit_takes_the_bound_past_the_memory_limit_naming_each_term() {
        let mut s = Settings::default();
        s.server.max_in_flight_body_bytes = 512 * 1024 * 1024;
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("server.max_in_flight_body_bytes"));
        assert!(warnings[0].contains("server.memory_limit_bytes (256 MiB)"));
    }

    #[test]
    fn counts_the_span_queue_the_variable_sets_when_the_key_is_left_out() {
        let s = Settings::default();
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_owned()),
            "OTEL_BSP_MAX_QUEUE_SIZE" => Some("100000".to_owned()),
            _ => None,
        };
        let bound = s.memory_bound_in(env);
        let spans = bound.terms.iter().find(|t| t.what.contains("spans"));
        assert_eq!(spans.map(|t| t.bytes), Some(100_000 * QUEUED_SPAN_BYTES));
    }

    #[test]
    fn warns_when_recovering_a_spool_would_not_fit_the_memory_limit_and_only_then() {
        // Recovery streams a segment (issue 20, item 7): its largest segments fit the
        // shipped 256 MiB limit, which segments read whole (2 x 256 MiB) did not.
        let mut s = Settings::default();
        s.spool.enabled = true;
        s.spool.max_bytes = 4 * 1024 * 1024 * 1024;
        s.spool.segment_bytes = crate::config::options::MAX_SEGMENT_BYTES;
        let recovery = |w: &String| w.contains("spool recovery");
        assert!(!s.warnings().iter().any(recovery), "{:?}", s.warnings());
        s.server.memory_limit_bytes = 96 * 1024 * 1024;
        let warnings = s.warnings();
        assert!(warnings.iter().any(recovery), "{warnings:?}");
    }

    #[test]
    fn warns_of_a_per_address_connection_cap_low_enough_to_close_qminders_connections() {
        let mut s = Settings::default();
        for (cap, warned) in [(0, false), (1, true), (15, true), (16, false), (256, false)] {
            s.server.max_connections_per_address = cap;
            let warnings = s.warnings();
            assert_eq!(!warnings.is_empty(), warned, "{cap}: {warnings:?}");
        }
    }

    #[test]
    fn warns_of_each_passthrough_key_that_turns_off_a_tls_check() {
        let mut s = Settings::default();
        s.kafka
            .librdkafka
            .insert("enable.ssl.certificate.verification".into(), "FALSE".into());
        s.kafka.librdkafka.insert(
            "ssl.endpoint.identification.algorithm".into(),
            "none".into(),
        );
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        s.kafka.librdkafka.insert(
            "ssl.endpoint.identification.algorithm".into(),
            "https".into(),
        );
        assert_eq!(s.warnings().len(), 1);
    }
}
