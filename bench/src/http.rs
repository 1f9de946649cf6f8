//! One lean HTTP/1.1 keep-alive client connection: hyper's `client::conn::http1` over a
//! tokio `TcpStream` (no pool, no TLS, no redirects), so the generator spends little CPU.
//!
//! [`Conn::post`] sends one signed webhook and returns its status and, for a 2xx answer, the
//! event id the bridge acknowledged (`{"id":"<64 hex>",…}`).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// Any failure of a connection or an exchange.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The header the bridge authenticates.
pub const SIGNATURE_HEADER: &str = "x-qminder-signature";

/// The answer to one webhook.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    /// The acknowledged event id of a 2xx answer (absent from the baseline's empty answer).
    pub id: Option<[u8; 32]>,
}

#[derive(Deserialize)]
struct Ack<'a> {
    #[serde(borrow)]
    id: &'a str,
}

/// One keep-alive connection; one request at a time.
pub struct Conn {
    post: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects (with `TCP_NODELAY`) and spawns the connection's driver task.
    ///
    /// # Errors
    /// When the TCP connection or the HTTP handshake fails.
    pub async fn open(addr: SocketAddr) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (post, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the peer closes or the sender is dropped; errors surface in `post`.
            let _ = connection.await;
        });
        Ok(Self {
            post,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Sends `body` to `path` with its signature; reads the whole answer.
    ///
    /// # Errors
    /// When the connection fails or closes before the answer is complete.
    pub async fn post(
        &mut self,
        path: &str,
        body: Bytes,
        signature: &str,
    ) -> Result<Answer, Error> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(Full::new(body))?;
        self.post.ready().await?;
        let response = self.post.send_request(request).await?;
        let status = response.status().as_u16();
        let answer = response.into_body().collect().await?.to_bytes();
        let id = if (200..300).contains(&status) {
            ack_id(&answer)
        } else {
            None
        };
        Ok(Answer { status, id })
    }
}

/// The decoded `id` of an acknowledgement, if the answer is one.
fn ack_id(answer: &[u8]) -> Option<[u8; 32]> {
    let ack: Ack<'_> = serde_json::from_slice(answer).ok()?;
    let mut id = [0u8; 32];
    hex::decode_to_slice(ack.id, &mut id).ok()?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_id_of_a_bridge_acknowledgement_and_nothing_else() {
        let id = "ab".repeat(32);
        let ack =
            format!(r#"{{"id":"{id}","topic":"qminder.ticket_created","partition":0,"offset":7}}"#);
        assert_eq!(ack_id(ack.as_bytes()), Some([0xab; 32]));
        assert_eq!(ack_id(b""), None);
        assert_eq!(ack_id(br#"{"id":"short"}"#), None);
    }
}
