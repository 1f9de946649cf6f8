//! Reading a webhook's body within `server.max_body_bytes`: the declared Content-Length is
//! checked before anything is read, and the running total while chunks arrive (a chunked
//! body declares no length). A body that arrives in one chunk, the usual case, is kept
//! as actix's `Bytes` without a copy.

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::errors::IngressError;

/// The Content-Length header, if any; a malformed one is a 400.
pub(super) fn content_length(request: &HttpRequest) -> Result<Option<usize>, IngressError> {
    match request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
    {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .ok_or(IngressError::BadRequest(None)),
    }
}

/// The whole body, or 413 as soon as it exceeds `max`.
pub(super) async fn read_capped(
    mut payload: web::Payload,
    max: usize,
    length: Option<usize>,
) -> Result<Bytes, IngressError> {
    let Some(first) = payload.next().await else {
        return Ok(Bytes::new());
    };
    let first = first.map_err(|e| IngressError::BadRequest(Some(e)))?;
    if first.len() > max {
        return Err(IngressError::BodyTooLarge);
    }
    let Some(second) = payload.next().await else {
        // The usual case for a webhook: the whole body in one chunk, kept without a copy.
        return Ok(first);
    };
    let mut body = BytesMut::with_capacity(length.unwrap_or(8 * 1024).min(max));
    body.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(|e| IngressError::BadRequest(Some(e)))?;
        if body.len() + chunk.len() > max {
            return Err(IngressError::BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
        next = payload.next().await;
    }
    Ok(body.freeze())
}
