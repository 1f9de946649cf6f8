//! Logging: `tracing` to stdout (the operator tools: stderr), the level from `RUST_LOG` (default `info`), the layout from
//! `log.format` (`text` or `json`). librdkafka's own logs arrive through `delivery/kafka/context.rs`.
//! actix-http's per-connection lines are off, and rustls's below ERROR, unless `RUST_LOG`
//! names the crate: any client can make them (a malformed head is an ERROR "stream error"
//! in actix-http), and the bridge counts those connections itself (`connection_end`).

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

/// Log targets any client can make write a line per connection or frame (actix-http: a
/// malformed head, a client leaving; rustls: a handshake message of the wrong type, a
/// warning alert; h2: a PING ack never asked for, too many resets), with the directive that quiets each unless `RUST_LOG` names its crate. The
/// bridge counts those connections itself (`connection_end`). rustls keeps its ERRORs.
/// actix-http's lines that are off include a few about the bridge's own side (a response
/// body stream failing), which its in-memory answers cannot produce.
const CLIENT_MADE: [(&str, &str); 5] = [
    ("actix_http", "actix_http::h1::dispatcher=off"),
    ("actix_http", "actix_http::h1::decoder=off"),
    ("actix_http", "actix_http::h2::dispatcher=off"),
    ("rustls", "rustls=error"),
    ("h2", "h2=error"),
];

fn without_client_made_lines(filter: EnvFilter, rust_log: Option<&str>) -> EnvFilter {
    // A directive's target is the crate or one of its modules (`tokio_rustls` is not rustls).
    let names = |directive: &str, krate: &str| {
        let target = directive
            .split(['=', '['])
            .next()
            .unwrap_or_default()
            .trim();
        target == krate
            || target
                .strip_prefix(krate)
                .is_some_and(|m| m.starts_with("::"))
    };
    let named = |krate: &str| rust_log.is_some_and(|v| v.split(',').any(|d| names(d, krate)));
    CLIENT_MADE
        .iter()
        .filter(|(krate, _)| !named(krate))
        .fold(filter, |filter, (_, directive)| match directive.parse() {
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
    fn per_connection_lines_clients_can_make_are_off_unless_rust_log_names_their_crate() {
        let quiet = without_client_made_lines(EnvFilter::new("info"), Some("info")).to_string();
        for (_, directive) in CLIENT_MADE {
            assert!(quiet.contains(directive), "{quiet}");
        }
        let asked = "info,actix_http=debug";
        let kept = without_client_made_lines(EnvFilter::new(asked), Some(asked)).to_string();
        assert!(!kept.contains("=off"), "{kept}");
        assert!(kept.contains("rustls=error"), "{kept}");
        let other = "info,tokio_rustls=debug";
        let quiet = without_client_made_lines(EnvFilter::new(other), Some(other)).to_string();
        assert!(quiet.contains("rustls=error"), "{quiet}");
        let module = "info,rustls::server=debug";
        let kept = without_client_made_lines(EnvFilter::new(module), Some(module)).to_string();
        assert!(!kept.contains("rustls=error"), "{kept}");
    }
}
