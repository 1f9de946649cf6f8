//! The ingress's successful answers: `{"id","topic","partition","offset"}` once Kafka has
//! acknowledged the record (200), or with `spooled`/`sequence` (spool mode) or
//! `dead_letter_reason` (a body that is not an event) as 202. Errors are `errors.rs`'s.

use actix_web::HttpResponse;
use serde::Serialize;

use crate::delivery::Delivered;

/// A successful answer: where Kafka put the record, or that it is spooled.
#[derive(Debug, Serialize)]
struct Ack<'a> {
    id: &'a str,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spooled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// 200 for an event Kafka acknowledged; 202 for a dead letter or a spooled event (accepted,
/// durable, not yet in Kafka). A duplicate gets the answer its first delivery got.
pub(super) fn answer(
    id: &str,
    topic: &str,
    delivered: Delivered,
    dead_letter_reason: Option<&'static str>,
    duplicate: bool,
) -> HttpResponse {
    let mut ack = Ack {
        id,
        topic,
        partition: None,
        offset: None,
        spooled: None,
        sequence: None,
        dead_letter_reason,
        duplicate,
    };
    match delivered {
        Delivered::Kafka { partition, offset } => {
            ack.partition = Some(partition);
            ack.offset = Some(offset);
        }
        Delivered::Spooled { sequence } => {
            ack.spooled = Some(true);
            ack.sequence = Some(sequence);
        }
    }
    if dead_letter_reason.is_none() && matches!(delivered, Delivered::Kafka { .. }) {
        HttpResponse::Ok().json(ack)
    } else {
        HttpResponse::Accepted().json(ack)
    }
}
