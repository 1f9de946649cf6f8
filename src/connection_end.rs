//! How a connection ended, for the refusals no handler of the bridge sees. actix-http
//! answers a request head that does not parse (400), one that outgrows its head buffer
//! (431) and one that has not arrived within `server.client_request_timeout_ms` (408)
//! itself, and logs the first two per connection at ERROR (`actix_http::h1::dispatcher`,
//! "stream error"), so a client could both go uncounted and flood the log. The bridge
//! reads each connection's end instead (`http_server::limited`): [`ConnectionEnd::refusal`]
//! says which refusal it was, counted in `connections_refused_total{reason}` with a DEBUG
//! line; `telemetry` turns actix's per-connection lines off.
//!
//! Relies on actix-http 3.11: a 400 or 431 it sent ends the connection's service future
//! with `DispatchError::Parse`; a failed TLS handshake with `TlsError::Tls` or `Timeout`
//! (actix-tls). A 408 for a slow head ends it with `Ok` (no error is kept), so
//! [`Watch`] tells it apart: the head timer runs only until the first request head, so a
//! connection that served no request, ended cleanly and lasted at least the head timeout
//! was ended by that timer. actix sets that timer from a clock it updates every 500 ms
//! ([`ACTIX_CLOCK_LAG`]), so it can fire up to that much early: a client that leaves
//! without a complete head in that last half second is counted as timed out too (and
//! with a head timeout of 500 ms or less, any client that leaves without one). "Served a request" is marked by [`request_arrived`], called by
//! the app's wrapper on the worker thread while that connection's future is polled (actix
//! calls the app within the dispatcher's poll, h2 included).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_http::error::{DispatchError, ParseError};
use actix_tls::accept::TlsError;

use crate::errors::IngressError;

/// How far behind actix-http's clock can be (its date service updates it every 500 ms),
/// and so how early its head timer can fire.
pub const ACTIX_CLOCK_LAG: Duration = Duration::from_millis(500);

/// The reason label of a TLS handshake that failed or timed out.
pub const TLS_HANDSHAKE_FAILED: &str = "tls_handshake_failed";

/// A connection the HTTP layer refused before any request reached the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request head that does not parse: actix answered 400.
    Unreadable,
    /// A request head larger than actix's head buffer: 431.
    HeadTooLarge,
    /// No complete request head within `client_request_timeout_ms`: 408 (h1), or the h2
    /// handshake not done in that time.
    HeadTimeout,
    /// A TLS handshake that failed or did not finish in time.
    TlsHandshake,
}

impl Refusal {
    pub const ALL: [Self; 4] = [
        Self::Unreadable,
        Self::HeadTooLarge,
        Self::HeadTimeout,
        Self::TlsHandshake,
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
            Self::H2(e) if !e.is_io() && !e.is_remote() => Some(Refusal::Unreadable),
            _ => None,
        }
    }
}

impl<E, S: ConnectionEnd> ConnectionEnd for TlsError<E, S> {
    fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Timeout | Self::Tls(_) => Some(Refusal::TlsHandshake),
            Self::Service(e) => e.refusal(),
        }
    }
}

thread_local! {
    /// The connection whose future this worker thread is polling now.
    static CURRENT: RefCell<Option<Rc<Cell<bool>>>> = const { RefCell::new(None) };
}

/// Marks the connection being polled on this thread as having served a request.
pub fn request_arrived() {
    CURRENT.with(|c| {
        if let Some(served) = c.borrow().as_ref() {
            served.set(true);
        }
    });
}

/// Marks the connection being set up on this thread as HTTP/2, which has no head timer:
/// a clean end of it is never a head timeout.
pub fn h2_negotiated() {
    request_arrived();
}

/// One connection: when it began, and whether a request of it reached the app.
#[derive(Debug)]
pub struct Watch {
    began: Instant,
    served: Rc<Cell<bool>>,
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

impl Watch {
    pub fn new() -> Self {
        Self {
            began: Instant::now(),
            served: Rc::default(),
        }
    }

    /// Runs `f` as this connection's code: [`request_arrived`] within it marks this one.
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = CURRENT.with(|c| c.replace(Some(Rc::clone(&self.served))));
        let out = f();
        CURRENT.with(|c| *c.borrow_mut() = before);
        out
    }

    /// Awaits `served` (the connection's service future), each poll as this connection's.
    pub async fn serve<F: Future>(&self, served: F) -> F::Output {
        let mut served = std::pin::pin!(served);
        std::future::poll_fn(|cx| match self.during(|| served.as_mut().poll(cx)) {
            Poll::Ready(out) => Poll::Ready(out),
            Poll::Pending => Poll::Pending,
        })
        .await
    }

    /// The refusal that ended the connection with `result`, if one did; `head_timeout` is
    /// `client_request_timeout_ms` (zero: actix has no head timer).
    pub fn refusal<E: ConnectionEnd>(
        &self,
        result: &Result<(), E>,
        head_timeout: Duration,
    ) -> Option<Refusal> {
        match result {
            Err(e) => e.refusal(),
            Ok(()) => (!head_timeout.is_zero()
                && !self.served.get()
                && self.began.elapsed() + ACTIX_CLOCK_LAG >= head_timeout)
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
                TLS_HANDSHAKE_FAILED
            ]
        );
    }

    #[test]
    fn a_clean_end_is_a_head_timeout_only_without_a_request_and_after_the_timer() {
        let timeout = ACTIX_CLOCK_LAG + Duration::from_millis(100);
        let ok: Result<(), DispatchError> = Ok(());
        let young = Watch::new();
        assert_eq!(young.refusal(&ok, timeout), None, "ended before the timer");
        let old = Watch {
            began: Instant::now() - Duration::from_millis(100),
            served: Rc::default(),
        };
        assert_eq!(old.refusal(&ok, timeout), Some(Refusal::HeadTimeout));
        assert_eq!(old.refusal(&ok, Duration::ZERO), None, "no head timer");
        old.during(request_arrived);
        assert_eq!(old.refusal(&ok, timeout), None, "served a request");
        request_arrived();
        assert!(!young.served.get(), "marked outside any connection");
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
        let tls: TlsError<std::io::Error, DispatchError> =
            TlsError::Service(ParseError::Header.into());
        assert_eq!(tls.refusal(), Some(Refusal::Unreadable));
    }
}
