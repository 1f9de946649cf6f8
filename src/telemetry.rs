//! Logging: `tracing` to stdout (the operator tools: stderr), the level from `RUST_LOG` (default `info`), the layout from
//! `log.format` (`text` or `json`). librdkafka's own logs arrive through `delivery/kafka/context.rs`.
//! actix-http's per-connection lines are off unless `RUST_LOG` names `actix_http`: any
//! client can make them (a malformed head is an ERROR "stream error" there), and the
//! bridge counts those connections itself (`connection_end.rs`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat) {
    let filter = without_client_made_lines(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// actix-http's targets that log once per client connection (a malformed head, a client
/// leaving), turned off on `filter` unless `rust_log` names `actix_http`.
const CLIENT_MADE: [&str; 3] = [
    "actix_http::h1::dispatcher=off",
    "actix_http::h1::decoder=off",
    "actix_http::h2::dispatcher=off",
];

fn without_client_made_lines(filter: EnvFilter, rust_log: Option<&str>) -> EnvFilter {
    if rust_log.is_some_and(|v| v.contains("actix_http")) {
        return filter;
    }
    CLIENT_MADE
        .iter()
        .fold(filter, |filter, directive| match directive.parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        })
}

/// For the operator tools (`backfill`): plain lines on stderr, so that stdout holds only the
/// command's own output; the level from `RUST_LOG` (default `info`).
pub fn init_for_tools() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actix_s_per_connection_lines_are_off_unless_rust_log_names_actix_http() {
        let quiet = without_client_made_lines(EnvFilter::new("info"), Some("info")).to_string();
        for directive in CLIENT_MADE {
            assert!(quiet.contains(directive), "{quiet}");
        }
        let asked = "info,actix_http=debug";
        let kept = without_client_made_lines(EnvFilter::new(asked), Some(asked)).to_string();
        assert!(!kept.contains("=off"), "{kept}");
    }
}
