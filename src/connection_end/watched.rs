//! The connection's plaintext stream, watched: the status of the first response written
//! on it. actix-http answers a head that is not complete in time with `HTTP/1.1 408`
//! and ends the connection without an error, so that status line, on a connection whose
//! requests never reached the app, is how the 408 is told apart from a client leaving.
//! Every read and write is passed through unchanged.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first bytes of a status line kept: `HTTP/1.1 408` is 12.
const KEPT: usize = 12;

/// What one connection showed: when a request of it last reached the app (never: `None`),
/// whether the bridge closed it for going too long without one, and the start of the
/// first thing written on it. One per connection, on its worker thread.
#[derive(Debug, Default)]
pub struct Seen {
    pub(super) last_request: Cell<Option<std::time::Instant>>,
    pub(super) stalled: Cell<bool>,
    first: Cell<([u8; KEPT], usize)>,
}

impl Seen {
    fn wrote(&self, bytes: &[u8]) {
        let (mut kept, len) = self.first.get();
        if len == KEPT || bytes.is_empty() {
            return;
        }
        let take = bytes.len().min(KEPT - len);
        kept[len..len + take].copy_from_slice(&bytes[..take]);
        self.first.set((kept, len + take));
    }

    /// The status of the first HTTP/1 response written, once its line has begun.
    pub(super) fn first_status(&self) -> Option<u16> {
        let (kept, len) = self.first.get();
        let line = std::str::from_utf8(&kept[..len]).ok()?;
        line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
    }
}

/// `io`, with what is written on it noted in `seen`.
#[derive(Debug)]
pub struct Watched<IO> {
    io: IO,
    seen: Rc<Seen>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, seen: Rc<Seen>) -> Self {
        Self { io, seen }
    }

    /// The stream watched.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.seen.wrote(&buf[..n]);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            for buf in bufs {
                let take = n.min(buf.len());
                self.seen.wrote(&buf[..take]);
                n -= take;
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_status_is_read_across_writes_and_later_writes_change_nothing() {
        let seen = Seen::default();
        assert_eq!(seen.first_status(), None);
        seen.wrote(b"HTTP/1.1 4");
        assert_eq!(seen.first_status(), None, "not all of it yet");
        seen.wrote(b"08 Request Timeout\r\n");
        assert_eq!(seen.first_status(), Some(408));
        seen.wrote(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(seen.first_status(), Some(408));
        let h2 = Seen::default();
        h2.wrote(&[0, 0, 18, 4, 0, 0, 0, 0, 0, 0, 3, 0]);
        assert_eq!(
            h2.first_status(),
            None,
            "an h2 SETTINGS frame has no status line"
        );
    }
}
