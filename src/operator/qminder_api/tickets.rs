//! Tickets from `GET /v1/tickets/search`, and every ticket created in a time window.
//!
//! The API has no cursor: [`created_between`] pages by narrowing the window. It asks for
//! the tickets created in it, oldest first (`order=created ASC`, always with `limit`: the
//! API has no default, and Qminder's SDK says a search returns at most 10,000), and when a
//! page comes back full asks again from the last page's newest creation time. Bounds are
//! sent in whole Unix seconds, widened by a second each way, because the document does not
//! say whether they are inclusive; tickets are then kept by their exact creation time and
//! de-duplicated by id. A ticket keeps its JSON exactly as the API returned it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::{ApiError, Client};

/// The most tickets one search answers (Qminder's SDK), and the page size asked for.
pub const PAGE_LIMIT: usize = 10_000;

/// One ticket, as the API returned it.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// `id`, as a string (the API sends a string; a number is accepted too).
    pub id: String,
    /// `status`: NEW, CALLED, SERVED, CANCELLED_BY_CLERK, NOSHOW, or another value.
    pub status: String,
    /// `created.date`, `called.date`, `served.date` as sent, with their times in ms.
    pub created: Option<Stamp>,
    pub called: Option<Stamp>,
    pub served: Option<Stamp>,
    /// The ticket's JSON, byte for byte.
    pub raw: Box<RawValue>,
}

/// A date as Qminder wrote it, and the instant it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub text: String,
    pub unix_ms: i64,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Fields {
    id: serde_json::Value,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    created: Option<DateField>,
    #[serde(default)]
    called: Option<DateField>,
    #[serde(default)]
    served: Option<DateField>,
}

#[derive(Deserialize)]
struct DateField {
    #[serde(default)]
    date: Option<String>,
}

impl Ticket {
    /// Reads one ticket of a search answer; an error names what is missing or malformed.
    pub fn from_raw(raw: Box<RawValue>) -> Result<Self, String> {
        let fields: Fields = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let id = match fields.id {
            serde_json::Value::String(s) if !s.is_empty() => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(format!("a ticket's id is {other}, not a string or number")),
        };
        let stamp = |f: Option<DateField>| -> Result<Option<Stamp>, String> {
            match f.and_then(|f| f.date) {
                None => Ok(None),
                Some(text) => {
                    let at = OffsetDateTime::parse(&text, &Rfc3339)
                        .map_err(|e| format!("ticket {id}: date {text:?}: {e}"))?;
                    let unix_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
                    Ok(Some(Stamp { text, unix_ms }))
                }
            }
        };
        Ok(Self {
            status: fields.status.unwrap_or_default(),
            created: stamp(fields.created)?,
            called: stamp(fields.called)?,
            served: stamp(fields.served)?,
            id,
            raw,
        })
    }
}

/// A search's location and window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub location: u64,
    /// Created at or after, ms since the Unix epoch.
    pub from_ms: i64,
    /// Created at or before, ms since the Unix epoch.
    pub to_ms: i64,
}

/// Every ticket of `window.location` created within the window, oldest first.
/// `page_limit` is the page size (at most [`PAGE_LIMIT`]; smaller in tests).
pub async fn created_between(
    client: &Client,
    window: Window,
    page_limit: usize,
) -> Result<Vec<Ticket>, ApiError> {
    let what = "GET /v1/tickets/search".to_owned();
    let mut found: BTreeMap<(i64, String), Ticket> = BTreeMap::new();
    let mut min_s = window.from_ms.div_euclid(1000) - 1;
    let max_s = window.to_ms.div_euclid(1000) + 2;
    loop {
        let query = [
            ("location", window.location.to_string()),
            ("minCreated", min_s.to_string()),
            ("maxCreated", max_s.to_string()),
            ("limit", page_limit.to_string()),
            ("order", "created ASC".to_owned()),
        ];
        let page: Page = client.get("/v1/tickets/search", &query).await?;
        let full = page.data.len() >= page_limit;
        let mut newest_ms = i64::MIN;
        for raw in page.data {
            let ticket = Ticket::from_raw(raw).map_err(|detail| ApiError::Decode {
                what: what.clone(),
                detail,
            })?;
            let Some(created) = ticket.created.as_ref().map(|c| c.unix_ms) else {
                return Err(ApiError::Decode {
                    what,
                    detail: format!("ticket {} has no created.date", ticket.id),
                });
            };
            newest_ms = newest_ms.max(created);
            if (window.from_ms..=window.to_ms).contains(&created) {
                found.insert((created, ticket.id.clone()), ticket);
            }
        }
        if !full {
            break;
        }
        // Ask again from a second before the newest: the overlap is found twice and kept once.
        let next_min_s = newest_ms.div_euclid(1000) - 1;
        if next_min_s <= min_s {
            return Err(ApiError::Decode {
                what,
                detail: format!(
                    "more than {page_limit} tickets were created within two seconds of \
                     {newest_ms} ms, or the answers are not in the order asked for"
                ),
            });
        }
        min_s = next_min_s;
    }
    let mut seen = std::collections::HashSet::new();
    Ok(found
        .into_values()
        .filter(|t| seen.insert(t.id.clone()))
        .collect())
}

#[derive(Deserialize)]
struct Locations {
    data: Vec<LocationId>,
}

#[derive(Deserialize)]
struct LocationId {
    id: u64,
}

/// The account's location ids (`GET /v1/locations`).
pub async fn locations(client: &Client) -> Result<Vec<u64>, ApiError> {
    let answer: Locations = client.get("/v1/locations", &[]).await?;
    Ok(answer.data.into_iter().map(|l| l.id).collect())
}
