//! The simulator's answers, one function per operation of the OpenAPI document.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Fault, SEARCH_CAP, SimTicket, State};

fn error(status: u16, shape: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).json(shape)
}

pub(super) fn route(
    state: &mut State,
    req: &HttpRequest,
    query: &[(String, String)],
    body: &[u8],
) -> HttpResponse {
    let key = req
        .headers()
        .get("X-Qminder-REST-API-Key")
        .and_then(|v| v.to_str().ok());
    if key != Some(state.key.as_str()) {
        return error(
            401,
            json!({"statusCode": 401, "message": "Invalid API key"}),
        );
    }
    if let Some(limited) = take_token(state) {
        return limited;
    }
    let fault = state.faults.pop_front();
    let lost = matches!(fault, Some(Fault::LostAnswer));
    match fault {
        Some(Fault::RateLimited(after)) => {
            let mut r = HttpResponse::TooManyRequests();
            r.insert_header(("X-Ratelimit-Remaining", "0"));
            if let Some(s) = after {
                r.insert_header(("Retry-After", s.to_string()));
            }
            return r.json(json!({"statusCode": 429, "message": "Too many requests"}));
        }
        Some(Fault::ServerError) => {
            return error(
                500,
                json!({"code": "internal", "message": "Something went wrong"}),
            );
        }
        Some(Fault::LostAnswer) | None => {}
    }
    let method = req.method().as_str();
    // Qminder's SDK asks for /v1/locations/ (with the slash); the API answers either.
    let path = req.path().trim_end_matches('/');
    let answer = match (method, path) {
        ("GET", "/v1/tickets/search") => search(state, query),
        // The document says POST; Qminder's SDK sends GET: the API takes either.
        ("POST" | "GET", "/v1/tickets/count") => count(state, query),
        ("GET", "/v1/locations") => locations(state),
        ("POST", "/v1/webhooks") => add_webhook(state, body),
        ("DELETE", p) if p.starts_with("/v1/webhooks/") => remove_webhook(state, &p[13..]),
        _ => error(
            404,
            json!({"statusCode": 404, "message": format!("No route {method} {path}")}),
        ),
    };
    if lost {
        return error(
            500,
            json!({"code": "internal", "message": "Something went wrong"}),
        );
    }
    answer
}

/// Qminder's limit per key: 5 a second, bursts of 40.
fn take_token(state: &mut State) -> Option<HttpResponse> {
    let (tokens, since) = state.bucket;
    let now = Instant::now();
    let tokens = (tokens + now.duration_since(since).as_secs_f64() * 5.0).min(40.0);
    if tokens < 1.0 {
        state.bucket = (tokens, now);
        return Some(
            HttpResponse::TooManyRequests()
                .insert_header(("X-Ratelimit-Remaining", "0"))
                .json(json!({"statusCode": 429, "message": "Rate limit exceeded"})),
        );
    }
    state.bucket = (tokens - 1.0, now);
    None
}

/// A time parameter: ISO 8601 or Unix seconds, in ms.
fn time_param(value: &str) -> Option<i64> {
    if let Ok(secs) = value.parse::<i64>() {
        return Some(secs * 1000);
    }
    let at = OffsetDateTime::parse(value, &Rfc3339).ok()?;
    Some((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The tickets matching the filters, or the 400 that says which parameter is wrong.
fn matching<'a>(
    state: &'a State,
    query: &[(String, String)],
) -> Result<Vec<&'a SimTicket>, HttpResponse> {
    let bad = |name: &str, v: &str| {
        error(
            400,
            json!({"statusCode": 400, "message": format!("Invalid value for {name}: {v}"),
            "developerMessage": format!("{name} could not be parsed")}),
        )
    };
    let mut out: Vec<&SimTicket> = state.tickets.iter().collect();
    for (name, v) in query {
        let keep: Box<dyn Fn(&SimTicket) -> bool> = match name.as_str() {
            "location" | "line" => {
                let id: u64 = v.parse().map_err(|_| bad(name, v))?;
                if name == "location" {
                    Box::new(move |t| t.location == id)
                } else {
                    Box::new(move |t| t.line == id)
                }
            }
            "status" => {
                let wanted: Vec<String> = v.split(',').map(str::to_owned).collect();
                Box::new(move |t| wanted.iter().any(|s| s == t.status()))
            }
            "caller" => {
                let caller: Option<u64> = v.parse().ok();
                Box::new(move |t| caller.is_some() && t.json["called"]["caller"].as_u64() == caller)
            }
            "minCreated" | "maxCreated" | "minCalled" | "maxCalled" => {
                let at = time_param(v).ok_or_else(|| bad(name, v))?;
                let stage = if name.ends_with("Created") {
                    "created"
                } else {
                    "called"
                };
                let min = name.starts_with("min");
                Box::new(move |t| {
                    t.time_ms(stage)
                        .is_some_and(|x| if min { x > at } else { x < at })
                })
            }
            _ => continue,
        };
        out.retain(|t| keep(t));
    }
    Ok(out)
}

fn search(state: &State, query: &[(String, String)]) -> HttpResponse {
    let mut found = match matching(state, query) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let param = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let limit = match param("limit").map(str::parse::<usize>) {
        None => SEARCH_CAP,
        Some(Ok(l)) if (1..=20_000).contains(&l) => l.min(SEARCH_CAP),
        Some(_) => {
            return error(
                400,
                json!({"statusCode": 400,
                "errors": {"limit": "The limit has to be between 1 and 20000"}}),
            );
        }
    };
    if let Some(order) = param("order") {
        let mut words = order.split(' ');
        let (field, dir) = (words.next().unwrap_or(""), words.next().unwrap_or("ASC"));
        if !["id", "created", "called", "served"].contains(&field)
            || !["ASC", "DESC"].contains(&dir)
        {
            return error(
                400,
                json!({"statusCode": 400, "message": format!("Invalid order: {order}")}),
            );
        }
        found.sort_by_key(|t| match field {
            "id" => t.id().parse::<i64>().unwrap_or(0),
            stage => t.time_ms(stage).unwrap_or(i64::MAX),
        });
        if dir == "DESC" {
            found.reverse();
        }
    }
    let data: Vec<&Value> = found.iter().take(limit).map(|t| &t.json).collect();
    HttpResponse::Ok().json(json!({"statusCode": 200, "data": data}))
}

fn count(state: &State, query: &[(String, String)]) -> HttpResponse {
    match matching(state, query) {
        Ok(found) => HttpResponse::Ok().json(json!({"statusCode": 200, "count": found.len()})),
        Err(answer) => answer,
    }
}

fn locations(state: &State) -> HttpResponse {
    let mut ids: Vec<u64> = state.tickets.iter().map(|t| t.location).collect();
    ids.sort_unstable();
    ids.dedup();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "name": format!("Location {id}"), "latitude": 59.43,
            "longitude": 24.75, "country": "Estonia", "address": "Tallinn",
            "selectingDeskMandatory": false, "timezoneOffset": 120})
        })
        .collect();
    HttpResponse::Ok().json(json!({"statusCode": 200, "data": data}))
}

fn add_webhook(state: &mut State, body: &[u8]) -> HttpResponse {
    let url = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["url"].as_str().map(str::to_owned))
        .or_else(|| {
            web::Query::<Vec<(String, String)>>::from_query(std::str::from_utf8(body).ok()?)
                .ok()?
                .iter()
                .find(|(k, _)| k == "url")
                .map(|(_, v)| v.clone())
        });
    let Some(url) = url else {
        return error(
            400,
            json!({"statusCode": 400, "errors": {"url": "url is required"}}),
        );
    };
    let n = state.webhooks.len() + 1;
    let id = format!("4ef258d7-e56e-4c9f-bb6e-{n:012}");
    let secret = format!("simulated-secret-{n:04}-{}", url.len());
    let (id, answered) = if state.numeric_ids {
        let number = 1000 + n as u64;
        (number.to_string(), json!(number))
    } else {
        (id.clone(), json!(id))
    };
    state.webhooks.push((id, url));
    HttpResponse::Ok().json(json!({"statusCode": 200, "id": answered, "secret": secret}))
}

fn remove_webhook(state: &mut State, id: &str) -> HttpResponse {
    let before = state.webhooks.len();
    state.webhooks.retain(|(w, _)| w != id);
    if state.webhooks.len() == before {
        return error(
            404,
            json!({"statusCode": 404, "message": "Webhook not found"}),
        );
    }
    HttpResponse::Ok().json(json!({"statusCode": 200}))
}
