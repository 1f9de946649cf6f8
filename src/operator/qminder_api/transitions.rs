//! Which webhooks a ticket's search result says were sent: the transitions a backfill can
//! rebuild, and the ones it cannot.
//!
//! From `created.date`, `called.date`, `served.date` and `status`:
//! `ticket_created`, `ticket_called`, `ticket_served`, and the end of a ticket removed from
//! the queue, `ticket_cancelled`, for both `CANCELLED_BY_CLERK` and `NOSHOW` (which webhook
//! a no-show fires is undocumented; `data.status` tells them apart). Not rebuildable, as the
//! API keeps no trace of them: `ticket_changed`, `ticket_recalled` (only the last call is
//! kept), a ticket returned to the queue and called again (only its last call), the line
//! and location events. Pure.

use super::tickets::{Stamp, Ticket};

/// The rebuildable webhook types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Created,
    Called,
    Served,
    Cancelled,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Created, Kind::Called, Kind::Served, Kind::Cancelled];

    /// The webhook's `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Created => "ticket_created",
            Kind::Called => "ticket_called",
            Kind::Served => "ticket_served",
            Kind::Cancelled => "ticket_cancelled",
        }
    }

    pub fn from_event_type(event_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.event_type() == event_type)
    }
}

/// The statuses of a ticket removed from the queue.
pub const CANCELLED_STATUSES: [&str; 2] = ["CANCELLED_BY_CLERK", "NOSHOW"];

/// One webhook the ticket's state says was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition<'t> {
    pub kind: Kind,
    pub ticket_id: &'t str,
    /// When it happened, if the API says: none for a cancellation or a no-show.
    pub at: Option<&'t Stamp>,
}

impl<'t> Transition<'t> {
    /// The time the rebuilt record carries: the transition's own, else (a cancellation)
    /// the latest time the API gives for the ticket, the earliest the cancellation can
    /// have been.
    pub fn record_time(&self, ticket: &'t Ticket) -> Option<&'t Stamp> {
        self.at.or_else(|| {
            [&ticket.served, &ticket.called, &ticket.created]
                .into_iter()
                .flatten()
                .max_by_key(|s| s.unix_ms)
        })
    }
}

/// The webhooks `ticket`'s state implies, in the order they were sent.
pub fn of(ticket: &Ticket) -> Vec<Transition<'_>> {
    let stamped = [
        (Kind::Created, ticket.created.as_ref()),
        (Kind::Called, ticket.called.as_ref()),
        (Kind::Served, ticket.served.as_ref()),
    ];
    let cancelled = CANCELLED_STATUSES
        .contains(&ticket.status.as_str())
        .then_some((Kind::Cancelled, None));
    stamped
        .into_iter()
        .filter(|(_, at)| at.is_some())
        .chain(cancelled)
        .map(|(kind, at)| Transition {
            kind,
            ticket_id: &ticket.id,
            at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn ticket(json: &str) -> Ticket {
        Ticket::from_raw(RawValue::from_string(json.to_owned()).unwrap()).unwrap()
    }

    #[test]
    fn each_stage_a_ticket_reached_is_one_webhook_and_ends_are_cancellations() {
        let c = r#""created":{"date":"2026-12-01T09:00:00.250Z"}"#;
        let k = r#""called":{"date":"2026-12-01T09:05:00Z","caller":1,"desk":2}"#;
        let s = r#""served":{"date":"2026-12-01T09:09:00Z"}"#;
        use Kind::*;
        let cases: [(String, &[Kind]); 6] = [
            (format!(r#"{{"id":"1","status":"NEW",{c}}}"#), &[Created]),
            (
                format!(r#"{{"id":"2","status":"CALLED",{c},{k}}}"#),
                &[Created, Called],
            ),
            (
                format!(r#"{{"id":"3","status":"SERVED",{c},{k},{s}}}"#),
                &[Created, Called, Served],
            ),
            (
                format!(r#"{{"id":"4","status":"CANCELLED_BY_CLERK",{c}}}"#),
                &[Created, Cancelled],
            ),
            (
                format!(r#"{{"id":"5","status":"NOSHOW",{c},{k}}}"#),
                &[Created, Called, Cancelled],
            ),
            (
                format!(r#"{{"id":6,"status":"SCHEDULED",{c}}}"#),
                &[Created],
            ),
        ];
        for (json, want) in cases {
            let t = ticket(&json);
            let kinds: Vec<Kind> = of(&t).iter().map(|t| t.kind).collect();
            assert_eq!(kinds, want, "{json}");
        }
    }

    #[test]
    fn a_cancellation_carries_the_latest_time_the_api_knows_for_its_ticket() {
        let t = ticket(
            r#"{"id":"5","status":"NOSHOW","created":{"date":"2026-12-01T09:00:00.250Z"},
                "called":{"date":"2026-12-01T09:05:00Z"}}"#,
        );
        let ts = of(&t);
        let cancelled = ts.iter().find(|t| t.kind == Kind::Cancelled).unwrap();
        assert_eq!(cancelled.at, None);
        assert_eq!(
            cancelled.record_time(&t).unwrap().text,
            "2026-12-01T09:05:00Z"
        );
        let created = &ts[0];
        assert_eq!(created.record_time(&t).unwrap().unix_ms, 1_796_115_600_250);
    }

    #[test]
    fn a_ticket_without_a_usable_id_or_with_a_bad_date_is_an_error_not_a_guess() {
        for json in [
            r#"{"status":"NEW"}"#,
            r#"{"id":"","status":"NEW"}"#,
            r#"{"id":{"x":1}}"#,
            r#"{"id":"1","created":{"date":"yesterday"}}"#,
        ] {
            let raw = RawValue::from_string(json.to_owned()).unwrap();
            assert!(Ticket::from_raw(raw).is_err(), "{json}");
        }
    }
}
