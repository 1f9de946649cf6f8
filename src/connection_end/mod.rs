//! How a connection ended, for the refusals no handler of the bridge sees. actix-http
//! answers a request head that does not parse (400), one that outgrows its head buffer
//! or has more than 96 headers (431) and one not complete within
//! `server.client_request_timeout_ms` (408) itself, and logs the first two at ERROR per
//! connection (`actix_http::h1::dispatcher`, "stream error"), so a client could both go
//! uncounted and flood the log. The bridge reads each connection's end instead
//! (`http_server::limited`): [`Watch::refusal`] says which refusal it was, counted in
//! `connections_refused_total{reason}` with a DEBUG line; `telemetry` turns the
//! per-connection log lines off.
//!
//! Relies on actix-http 3.11: a 400 or 431 it sent ends the connection's service future
//! with `DispatchError::Parse`; a TLS handshake that fails ends it with actix-tls's
//! `TlsError::Tls` (an I/O error: a client that left is one too, and is not counted) or
//! `Timeout`. A 408 for a slow head ends it with `Ok`, no error kept: it is told by the
//! status line written first on the plaintext stream (`watched.rs`) on a connection whose
//! requests never reached the app. "Reached the app" is marked by [`request_arrived`],
//! which the app's wrapper calls: actix calls the app within the connection future's
//! poll (h1 and h2), which [`Watch::serve`] marks as this connection's on the thread.

mod watched;

use watched::Seen;
pub use watched::Watched;

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_http::error::{DispatchError, ParseError};
use actix_tls::accept::TlsError;

use crate::errors::IngressError;

/// The reason label of a TLS handshake that failed or timed out.
pub const TLS_HANDSHAKE_FAILED: &str = "tls_handshake_failed";

/// The reason label of an HTTP/2 connection h2 closed for what the client sent (a
/// protocol error, too many resets).
pub const H2_PROTOCOL_ERROR: &str = "h2_protocol_error";

/// A connection the HTTP layer refused before any request reached the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request head that does not parse: actix answered 400.
    Unreadable,
    /// A request head larger than actix's head buffer: 431.
    HeadTooLarge,
    /// No complete request head within `client_request_timeout_ms`: 408 (h1), or the h2
    /// preface not received in that time (closed, no answer); or no request for
    /// [`stall_after`] (closed, no answer).
    HeadTimeout,
    /// A TLS handshake that failed or did not finish in time.
    TlsHandshake,
    /// An HTTP/2 connection closed by h2 for what the client sent; requests of it may
    /// have been served.
    H2Protocol,
}

impl Refusal {
    pub const ALL: [Self; 5] = [
        Self::Unreadable,
        Self::HeadTooLarge,
        Self::HeadTimeout,
        Self::TlsHandshake,
        Self::H2Protocol,
    ];

    /// Its place in [`ALL`](Self::ALL).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label: the code of the same refusal made by the bridge itself
    /// (`errors.rs`), so that a 400, 431 or 408 has one name wherever it was made.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unreadable => IngressError::BadRequest(None).code(),
            Self::HeadTooLarge => IngressError::HeadersTooLarge.code(),
            Self::HeadTimeout => IngressError::RequestTimeout.code(),
            Self::TlsHandshake => TLS_HANDSHAKE_FAILED,
            Self::H2Protocol => H2_PROTOCOL_ERROR,
        }
    }
}

/// An error a connection's service future can end with.
pub trait ConnectionEnd: std::fmt::Display {
    /// The refusal it stands for; `None` when the client went away or the error was ours.
    fn refusal(&self) -> Option<Refusal>;
}

impl ConnectionEnd for DispatchError {
    fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Parse(ParseError::Io(_)) => None,
            Self::Parse(ParseError::TooLarge) => Some(Refusal::HeadTooLarge),
            Self::Parse(_) => Some(Refusal::Unreadable),
            Self::SlowRequestTimeout => Some(Refusal::HeadTimeout),
            // A protocol error h2 found in what the client sent, not the client leaving.
            Self::H2(e) if !e.is_io() && !e.is_remote() => Some(Refusal::H2Protocol),
            _ => None,
        }
    }
}

impl<S: ConnectionEnd> ConnectionEnd for TlsError<std::io::Error, S> {
    fn refusal(&self) -> Option<Refusal> {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        match self {
            // A TCP probe, or a client that hung up: it left, nothing was refused.
            Self::Tls(e)
                if matches!(
                    e.kind(),
                    UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
                ) =>
            {
                None
            }
            Self::Timeout | Self::Tls(_) => Some(Refusal::TlsHandshake),
            Self::Service(e) => e.refusal(),
        }
    }
}

thread_local! {
    /// The connection whose future this worker thread is polling now.
    static CURRENT: RefCell<Option<Rc<Seen>>> = const { RefCell::new(None) };
}

/// The connection being polled on this thread, if any.
fn current() -> Option<Rc<Seen>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Marks the connection being polled on this thread as having served a request.
pub fn request_arrived() {
    CURRENT.with(|c| {
        if let Some(seen) = c.borrow().as_ref() {
            seen.last_request.set(Some(Instant::now()));
        }
    });
}

/// `io`, the plaintext stream of the connection being set up on this thread, watched for
/// the first status it is answered with.
pub fn watched<IO>(io: IO) -> Watched<IO> {
    Watched::new(io, current().unwrap_or_default())
}

/// How long a connection may go without a request reaching the app before it is closed:
/// the longest a request may take, then the longest a kept-alive connection may idle, then
/// the longest its next head may take. Longer, and a head was begun and never finished.
/// Saturating: an operator's huge timeouts make a bound that never comes, not a panic.
pub fn stall_after(request_timeout: Duration, keep_alive: Duration, head: Duration) -> Duration {
    request_timeout
        .saturating_add(keep_alive)
        .saturating_add(head)
}

/// One connection: whether a request of it reached the app, and what was written first.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Rc<Seen>,
}

impl Watch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` as this connection's code: [`request_arrived`] and [`watched`] within it
    /// are about this one.
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        /// Puts back the connection polled before, even if `f` panics.
        struct Restore(Option<Rc<Seen>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(Some(Rc::clone(&self.seen)))));
        f()
    }

    /// Awaits `served` (the connection's service future), each poll as this connection's;
    /// `None` if no request of it reached the app for `stall_after` (since it began, or
    /// since the last one), when it is dropped, which closes it. actix-http times out
    /// only a connection's first head: a later head begun and never finished (its
    /// keep-alive timer stops at the first byte) would hold the connection for good.
    pub async fn serve<F: Future>(&self, served: F, stall_after: Duration) -> Option<F::Output> {
        let began = Instant::now();
        let mut served = std::pin::pin!(served);
        let mut deadline = std::pin::pin!(tokio::time::sleep(stall_after));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = self.during(|| served.as_mut().poll(cx)) {
                return Poll::Ready(Some(out));
            }
            while deadline.as_mut().poll(cx).is_ready() {
                let since = self.seen.last_request.get().unwrap_or(began);
                let Some(due) = since.checked_add(stall_after) else {
                    return Poll::Pending; // beyond any clock: never
                };
                if Instant::now() >= due {
                    self.seen.stalled.set(true);
                    return Poll::Ready(None);
                }
                deadline.as_mut().reset(due.into());
            }
            Poll::Pending
        })
        .await
    }

    /// The refusal that ended the connection with `result`, if one did: its error's, a stall
    /// ([`serve`](Self::serve)), or actix's 408 for a first head never finished.
    pub fn refusal<E: ConnectionEnd>(&self, result: &Result<(), E>) -> Option<Refusal> {
        match result {
            Err(e) => e.refusal(),
            Ok(()) => (self.seen.stalled.get()
                || self.seen.last_request.get().is_none() && self.seen.first_status() == Some(408))
            .then_some(Refusal::HeadTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_is_named_like_the_bridge_s_own_answer_with_that_status() {
        for (i, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(refusal.index(), i);
        }
        let reasons: Vec<_> = Refusal::ALL.iter().map(|r| r.reason()).collect();
        assert_eq!(
            reasons,
            [
                "bad_request",
                "headers_too_large",
                "request_timeout",
                TLS_HANDSHAKE_FAILED,
                H2_PROTOCOL_ERROR
            ]
        );
    }

    #[test]
    fn an_operator_s_huge_timeouts_make_a_long_stall_bound_not_a_panic() {
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            stall_after(huge, huge, Duration::from_secs(5)),
            Duration::MAX
        );
    }

    #[test]
    fn a_clean_end_is_a_head_timeout_only_after_a_408_written_before_any_request() {
        use tokio::io::AsyncWriteExt;
        let ok: Result<(), DispatchError> = Ok(());
        let write = |watch: &Watch, bytes: &'static [u8]| {
            let mut io = watch.during(|| watched(Vec::new()));
            futures_util::FutureExt::now_or_never(io.write_all(bytes))
                .expect("ready")
                .expect("written");
        };
        let silent = Watch::new();
        assert_eq!(silent.refusal(&ok), None, "a client that left");
        let timed_out = Watch::new();
        write(&timed_out, b"HTTP/1.1 408 Request Timeout\r\n");
        assert_eq!(timed_out.refusal(&ok), Some(Refusal::HeadTimeout));
        let answered = Watch::new();
        answered.during(request_arrived);
        write(&answered, b"HTTP/1.1 408 Request Timeout\r\n");
        assert_eq!(
            answered.refusal(&ok),
            None,
            "the app's own 408, counted by the app"
        );
        request_arrived();
        assert!(
            silent.seen.last_request.get().is_none(),
            "marked outside any connection"
        );
    }

    #[test]
    fn errors_map_to_refusals_and_a_client_leaving_is_none() {
        let cases: [(DispatchError, Option<Refusal>); 5] = [
            (ParseError::Method.into(), Some(Refusal::Unreadable)),
            (ParseError::TooLarge.into(), Some(Refusal::HeadTooLarge)),
            (
                DispatchError::SlowRequestTimeout,
                Some(Refusal::HeadTimeout),
            ),
            (
                ParseError::Io(std::io::ErrorKind::ConnectionReset.into()).into(),
                None,
            ),
            (DispatchError::DisconnectTimeout, None),
        ];
        for (error, want) in cases {
            assert_eq!(error.refusal(), want, "{error}");
        }
        let tls: TlsError<std::io::Error, DispatchError> = TlsError::Timeout;
        assert_eq!(tls.refusal(), Some(Refusal::TlsHandshake));
        let left = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        let tls: TlsError<std::io::Error, DispatchError> = TlsError::Tls(left);
        assert_eq!(tls.refusal(), None, "a TCP probe");
        let bad = std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt message");
        let tls: TlsError<std::io::Error, DispatchError> = TlsError::Tls(bad);
        assert_eq!(tls.refusal(), Some(Refusal::TlsHandshake));
        let tls: TlsError<std::io::Error, DispatchError> =
            TlsError::Service(ParseError::Header.into());
        assert_eq!(tls.refusal(), Some(Refusal::Unreadable));
    }
}
