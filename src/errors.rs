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
    #[error("the body did not arrive within server.request_timeout_ms - kafka.delivery_timeout_ms")]
    RequestTimeout,
    #[error("server.max_in_flight requests are already being handled")]
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
    /// The fixed `error` code of the response body; for rejections also the metric reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden => "ip_not_allowed",
            Self::MissingSignature => "missing_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::BodyTooLarge => "body_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BadRequest(_) => "bad_request",
            Self::RequestTimeout => "request_timeout",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Delivery(error) => error.failure().code,
        }
    }

    /// Every rejection: the errors a request can get before its event is accepted (all but
    /// [`Delivery`](Self::Delivery)). Their codes are the `reason` label of
    /// `events_rejected_total`.
    pub const REJECTIONS: [Self; 11] = [
        Self::Forbidden,
        Self::MissingSignature,
        Self::InvalidSignature,
        Self::BodyTooLarge,
        Self::HeadersTooLarge,
        Self::BadRequest(None),
        Self::RequestTimeout,
        Self::Overloaded,
        Self::ShuttingDown,
        Self::MethodNotAllowed,
        Self::NotFound,
    ];

    /// The rejection codes, for pre-creating `events_rejected_total` series.
    pub fn reject_codes() -> Vec<&'static str> {
        Self::REJECTIONS.iter().map(Self::code).collect()
    }

    /// Every code an error answer can carry: the rejections', then the delivery
    /// failures' (several failures share `kafka_unavailable`), without duplicates.
    pub fn all_codes() -> Vec<&'static str> {
        let mut codes = Self::reject_codes();
        for failure in crate::delivery::FAILURES {
            if !codes.contains(&failure.code) {
                codes.push(failure.code);
            }
        }
        codes
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::MissingSignature | Self::InvalidSignature => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::ShuttingDown | Self::Delivery(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whether the request body may be left unread: then the connection is closed, and the
    /// response says so (`Connection: close`), so the sender does not reuse it.
    fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            Self::Overloaded
                | Self::ShuttingDown
                | Self::Forbidden
                | Self::MissingSignature
                | Self::BodyTooLarge
                | Self::HeadersTooLarge
                | Self::BadRequest(_)
                | Self::RequestTimeout
        )
    }

    /// The response: fixed JSON, `Retry-After` on 503, `Allow` on 405.
    pub fn response(&self, retry_after_s: u32) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        if self.leaves_body_unread() {
            response.force_close();
        }
        match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(retry_after_s)));
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                response.insert_header((header::ALLOW, HeaderValue::from_static("POST")));
            }
            _ => {}
        }
        response
            .content_type("application/json")
            .body(format!(r#"{{"error":"{}"}}"#, self.code()))
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
            (IngressError::Overloaded, 503, "overloaded"),
            (IngressError::ShuttingDown, 503, "shutting_down"),
            (DeliveryError::Timeout.into(), 503, "kafka_timeout"),
            (
                DeliveryError::Refused("secret detail".into()).into(),
                503,
                "kafka_unavailable",
            ),
            (DeliveryError::SpoolFull.into(), 503, "spool_full"),
            (
                DeliveryError::SpoolUnavailable("disk".into()).into(),
                503,
                "spool_unavailable",
            ),
        ];
        for (error, status, code) in cases {
            let response = error.response(7);
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code);
            let retry = response.headers().get(header::RETRY_AFTER);
            assert_eq!(
                response.head().connection_type() == actix_web::http::ConnectionType::Close,
                matches!(
                    code,
                    "missing_signature"
                        | "ip_not_allowed"
                        | "body_too_large"
                        | "headers_too_large"
                        | "bad_request"
                        | "request_timeout"
                        | "overloaded"
                        | "shutting_down"
                ),
                "{error:?}"
            );
            assert_eq!(retry.is_some(), status == 503, "{error:?}");
            if let Some(retry) = retry {
                assert_eq!(retry, "7");
            }
        }
    }

    /// The codes in backticks in the first cell of the README's answer table, for the rows
    /// whose status is 4xx or 5xx.
    fn readme_error_codes() -> Vec<String> {
        let readme = include_str!("../README.md");
        let mut codes = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| **")) {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            let is_error = first_cell.contains("**4") || first_cell.contains("**5");
            if !is_error {
                continue;
            }
            let mut parts = first_cell.split('`');
            parts.next();
            while let (Some(code), _) = (parts.next(), parts.next()) {
                if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    codes.push(code.to_owned());
                }
            }
        }
        codes.sort();
        codes
    }

    #[test]
    fn the_readme_answer_table_lists_exactly_the_codes_the_bridge_answers_with() {
        let mut ours: Vec<String> = IngressError::all_codes()
            .into_iter()
            .map(String::from)
            .collect();
        ours.sort();
        assert_eq!(readme_error_codes(), ours);
    }

    #[test]
    fn every_rejection_code_is_distinct_and_the_readme_maps_every_failure_as_the_code_does() {
        let mut codes = IngressError::reject_codes();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), IngressError::REJECTIONS.len());
        let readme = include_str!("../README.md");
        let mut documented: Vec<(&str, &str)> = readme
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let (reason, code) = (cells.get(1)?, cells.get(2)?);
                let unquote = |c: &&str| c.strip_prefix('`')?.strip_suffix('`').map(str::to_owned);
                let known = crate::delivery::FAILURES
                    .iter()
                    .any(|f| Some(f.reason.to_owned()) == unquote(reason));
                known.then_some((*reason, *code))
            })
            .collect();
        documented.sort_unstable();
        let mut ours: Vec<(String, String)> = crate::delivery::FAILURES
            .iter()
            .map(|f| (format!("`{}`", f.reason), format!("`{}`", f.code)))
            .collect();
        ours.sort_unstable();
        let documented: Vec<(String, String)> = documented
            .into_iter()
            .map(|(r, c)| (r.to_owned(), c.to_owned()))
            .collect();
        assert_eq!(documented, ours);
    }
}
