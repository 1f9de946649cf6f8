//! Every way a webhook request can fail, grouped by what the sender should do.
//!
//! 403: not from an allowed network. 401: sign it right. 413: send less. 400/408: send it properly. 404/405: wrong address or
//! method. 503 + `Retry-After`: nothing wrong with the request, try again later (Kafka did
//! not acknowledge, or the bridge is at `max_in_flight`). Bodies are fixed JSON
//! `{"error": "<code>"}`; causes go to logs only, and never secrets or payloads.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};

use crate::delivery::DeliveryError;
use crate::signature::SignatureError;

/// How one kind of error is answered. Each variant of [`IngressError`] has one row
/// ([`IngressError::answer`]; delivery failures take theirs from `DeliveryError::failure`), and
/// the code, status, `Retry-After` and connection handling all come from it; the README's
/// answer table is held to these rows by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The fixed `error` code of the body; for rejections also the metric `reason`.
    pub code: &'static str,
    pub status: u16,
    /// `Retry-After` is sent: nothing is wrong with the request, try again later.
    pub retry: bool,
    /// The connection is closed (`Connection: close`): the body may be left unread, or the
    /// client is not Qminder (a refusal before acceptance), whose connection is a slot of
    /// `server.max_connections` it must not keep. Delivery failures keep it: the sender
    /// is Qminder and will send again.
    pub close: bool,
}

const fn row(code: &'static str, status: u16, retry: bool, close: bool) -> Answer {
    Answer {
        code,
        status,
        retry,
        close,
    }
}

/// Why a webhook request was not answered 2xx.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("the client's address is not in server.allow_cidrs")]
    Forbidden,
    #[error("no X-Qminder-Signature header")]
    MissingSignature,
    #[error("the signature does not match")]
    InvalidSignature,
    #[error("the body is larger than server.max_body_bytes")]
    BodyTooLarge,
    #[error("the headers are larger than server.max_header_bytes")]
    HeadersTooLarge,
    #[error("the request could not be read")]
    BadRequest(#[source] Option<actix_web::error::PayloadError>),
    #[error("the body did not arrive within server.body_timeout_ms")]
    RequestTimeout,
    #[error("unauthenticated bodies already fill server.max_unverified_body_bytes")]
    BodyBudgetExhausted,
    #[error(
        "server.max_in_flight requests (or max_in_flight_body_bytes) are already being handled"
    )]
    Overloaded,
    #[error("the bridge is shutting down")]
    ShuttingDown,
    #[error("no endpoint is configured at this path")]
    NotFound,
    #[error("webhooks are POSTed")]
    MethodNotAllowed,
    #[error("Kafka did not acknowledge the event")]
    Delivery(#[from] DeliveryError),
}

impl From<SignatureError> for IngressError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Missing => Self::MissingSignature,
            SignatureError::Invalid => Self::InvalidSignature,
        }
    }
}

impl IngressError {
    /// This error's row: code, status, `Retry-After`, connection handling.
    pub fn answer(&self) -> Answer {
        match self {
            Self::Forbidden => row("ip_not_allowed", 403, false, true),
            Self::MissingSignature => row("missing_signature", 401, false, true),
            Self::InvalidSignature => row("invalid_signature", 401, false, true),
            Self::BodyTooLarge => row("body_too_large", 413, false, true),
            Self::HeadersTooLarge => row("headers_too_large", 431, false, true),
            Self::BadRequest(_) => row("bad_request", 400, false, true),
            Self::RequestTimeout => row("request_timeout", 408, false, true),
            Self::BodyBudgetExhausted => row("body_budget_exhausted", 503, true, true),
            Self::Overloaded => row("overloaded", 503, true, true),
            Self::ShuttingDown => row("shutting_down", 503, true, true),
            Self::NotFound => row("not_found", 404, false, true),
            Self::MethodNotAllowed => row("method_not_allowed", 405, false, true),
            Self::Delivery(error) => {
                let failure = error.failure();
                row(failure.code, failure.status, failure.retry, false)
            }
        }
    }

    /// The fixed `error` code of the response body; for rejections also the metric reason.
    pub fn code(&self) -> &'static str {
        self.answer().code
    }

    /// Every rejection: the errors a request can get before its event is accepted (all but
    /// [`Delivery`](Self::Delivery)). Their codes are the `reason` label of
    /// `events_rejected_total`.
    pub const REJECTIONS: [Self; 12] = [
        Self::Forbidden,
        Self::MissingSignature,
        Self::InvalidSignature,
        Self::BodyTooLarge,
        Self::HeadersTooLarge,
        Self::BadRequest(None),
        Self::RequestTimeout,
        Self::BodyBudgetExhausted,
        Self::Overloaded,
        Self::ShuttingDown,
        Self::MethodNotAllowed,
        Self::NotFound,
    ];

    /// The rejection codes, for pre-creating `events_rejected_total` series.
    pub fn reject_codes() -> Vec<&'static str> {
        Self::REJECTIONS.iter().map(Self::code).collect()
    }

    /// Every answer an error can get: the rejections', then the delivery failures' (several
    /// failures share `kafka_unavailable`), without duplicates.
    pub fn all_answers() -> Vec<Answer> {
        let mut answers: Vec<Answer> = Self::REJECTIONS.iter().map(Self::answer).collect();
        for error in DeliveryError::EXAMPLES {
            let answer = Self::Delivery(error).answer();
            if !answers.contains(&answer) {
                answers.push(answer);
            }
        }
        answers
    }

    /// The response: fixed JSON, `Retry-After` when retrying can help, `Allow` on 405,
    /// `Connection: close` when the body may be left unread.
    pub fn response(&self, retry_after_s: u32) -> HttpResponse {
        let answer = self.answer();
        let status =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        if answer.close {
            response.force_close();
        }
        if answer.retry {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(retry_after_s)));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.insert_header((header::ALLOW, HeaderValue::from_static("POST")));
        }
        response
            .content_type("application/json")
            .body(format!(r#"{{"error":"{}"}}"#, answer.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_each_failure_with_its_status_and_fixed_body() {
        let cases = [
            (IngressError::Forbidden, 403, "ip_not_allowed"),
            (IngressError::MissingSignature, 401, "missing_signature"),
            (IngressError::InvalidSignature, 401, "invalid_signature"),
            (IngressError::BodyTooLarge, 413, "body_too_large"),
            (IngressError::HeadersTooLarge, 431, "headers_too_large"),
            (IngressError::BadRequest(None), 400, "bad_request"),
            (IngressError::RequestTimeout, 408, "request_timeout"),
            (IngressError::NotFound, 404, "not_found"),
            (IngressError::MethodNotAllowed, 405, "method_not_allowed"),
            (
                IngressError::BodyBudgetExhausted,
                503,
                "body_budget_exhausted",
            ),
            (IngressError::Overloaded, 503, "overloaded"),
            (IngressError::ShuttingDown, 503, "shutting_down"),
            (DeliveryError::Timeout.into(), 503, "kafka_timeout"),
            (
                DeliveryError::Refused("secret detail".into()).into(),
                503,
                "kafka_unavailable",
            ),
            (
                DeliveryError::TooLarge("x".into()).into(),
                413,
                "record_too_large",
            ),
            (
                DeliveryError::Unacceptable("x".into()).into(),
                422,
                "record_unacceptable",
            ),
            (DeliveryError::SpoolFull.into(), 503, "spool_full"),
            (
                DeliveryError::SpoolUnavailable("disk".into()).into(),
                503,
                "spool_unavailable",
            ),
            (DeliveryError::SpoolTimeout.into(), 503, "spool_unavailable"),
        ];
        for (error, status, code) in cases {
            let response = error.response(7);
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code);
            let body = actix_web::body::to_bytes(response.into_body());
            let body = futures_util::FutureExt::now_or_never(body)
                .expect("a ready body")
                .expect("the body");
            assert_eq!(body, format!(r#"{{"error":"{code}"}}"#));
            let response = error.response(7);
            let retry = response.headers().get(header::RETRY_AFTER);
            assert_eq!(
                response.head().connection_type() == actix_web::http::ConnectionType::Close,
                error.answer().close,
                "{error:?}"
            );
            assert_eq!(retry.is_some(), status == 503, "{error:?}");
            if let Some(retry) = retry {
                assert_eq!(retry, "7");
            }
        }
    }

    /// (status, code) for every code in backticks in the first cell of the README's answer
    /// table's 4xx and 5xx rows, each code with the status written before it, and whether
    /// that row says `Retry-After`.
    fn readme_answers() -> Vec<(u16, String, bool)> {
        let readme = include_str!("../README.md");
        let mut answers = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| **")) {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            let retry = first_cell.contains("Retry-After");
            let mut status = 0;
            for (i, part) in first_cell.split('`').enumerate() {
                if i % 2 == 0 {
                    for bold in part.split("**").skip(1).step_by(2) {
                        status = bold.trim().parse().unwrap_or(status);
                    }
                } else if status >= 400 && part.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    answers.push((status, part.to_owned(), retry));
                }
            }
        }
        answers.sort();
        answers
    }

    #[test]
    fn the_readme_answer_table_lists_exactly_the_answers_the_bridge_gives() {
        let mut ours: Vec<(u16, String, bool)> = IngressError::all_answers()
            .into_iter()
            .map(|a| (a.status, a.code.to_owned(), a.retry))
            .collect();
        ours.sort();
        ours.dedup();
        assert_eq!(readme_answers(), ours);
    }

    #[test]
    fn every_rejection_code_is_distinct_and_the_readme_maps_every_failure_as_the_code_does() {
        let mut codes = IngressError::reject_codes();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), IngressError::REJECTIONS.len());
        let readme = include_str!("../README.md");
        let failures = DeliveryError::failures();
        let mut documented: Vec<(String, String)> = readme
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let (reason, code) = (cells.get(1)?, cells.get(2)?);
                let unquote = |c: &&str| c.strip_prefix('`')?.strip_suffix('`').map(str::to_owned);
                let known = failures
                    .iter()
                    .any(|f| Some(f.reason.to_owned()) == unquote(reason));
                known.then(|| ((*reason).to_owned(), (*code).to_owned()))
            })
            .collect();
        documented.sort_unstable();
        let mut ours: Vec<(String, String)> = failures
            .iter()
            .map(|f| (format!("`{}`", f.reason), format!("`{}`", f.code)))
            .collect();
        ours.sort_unstable();
        assert_eq!(documented, ours);
    }
}
