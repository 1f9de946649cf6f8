//! Reading a webhook's body, before anyone has checked who sent it: within
//! `server.max_body_bytes` (the declared Content-Length is checked before anything is read,
//! the running total while chunks arrive: a chunked body declares no length) and within
//! the request's allowance and the unverified budget of `admission.rs` (what goes beyond
//! the allowance is reserved before the bytes are kept). The
//! deadline is the caller's. A body that arrives in one chunk, the usual case, is kept as
//! actix's `Bytes` without a copy.

use actix_web::{HttpRequest, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::admission::{ALLOWANCE_BYTES, Reservation};
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

/// The whole body, or 413 as soon as it exceeds `max`, or 503 `body_budget_exhausted` as
/// soon as what exceeds the request's allowance finds no room in the unverified budget;
/// each chunk reserved in `reservation` as it arrives (so a client that sends slowly holds
/// only what it sent).
pub(super) async fn read_capped(
    mut payload: web::Payload,
    max: usize,
    length: Option<usize>,
    reservation: &mut Reservation,
) -> Result<Bytes, IngressError> {
    let mut body = BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| IngressError::BadRequest(Some(e)))?;
        let total = first.as_ref().map_or(0, Bytes::len) + body.len() + chunk.len();
        if total > max {
            return Err(IngressError::BodyTooLarge);
        }
        if !reservation.cover(total) {
            return Err(IngressError::BodyBudgetExhausted);
        }
        match first.take() {
            // The usual case for a webhook: the whole body in one chunk, kept without a copy.
            None if body.is_empty() => first = Some(chunk),
            held => {
                if let Some(held) = held {
                    // The declared length only as far as the allowance: memory beyond it
                    // follows the bytes that arrive, as the budget does.
                    let declared = length.unwrap_or(total).min(max).min(ALLOWANCE_BYTES);
                    body.reserve(declared.max(total));
                    body.extend_from_slice(&held);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    let whole = first.unwrap_or_else(|| body.freeze());
    // actix ends the payload without an error when the client closes its side early:
    // fewer bytes than declared is a truncated body, not a body with a wrong signature.
    if length.is_some_and(|declared| whole.len() < declared) {
        return Err(IngressError::BadRequest(Some(
            actix_web::error::PayloadError::Incomplete(None),
        )));
    }
    Ok(whole)
}
