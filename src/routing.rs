//! Stage 4 of the data path: which topic an event goes to.
//!
//! Each of the 9 known types has its topic, `<topic_prefix>.<type>` unless overridden in
//! `[kafka.topics]` (which may also name types Qminder adds later). Every other type goes to
//! the unknown topic; a body that is not an event goes to the dead-letter topic. Nothing is
//! ever routed nowhere. The `label` of a route is the `event_type` metric label: always
//! from the fixed set the configuration defines, never from the request. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::event::KNOWN_EVENT_TYPES;

/// Metric label for events of a type that has no topic of its own.
pub const UNKNOWN_LABEL: &str = "unknown";
/// Metric label for authenticated bodies that are not events.
pub const MALFORMED_LABEL: &str = "malformed";

/// Where one event goes, and how metrics name its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its index in [`Router::all`]: what per-route counters are indexed by.
    pub id: usize,
    pub topic: String,
    pub label: String,
}

/// Event type → topic, built once from configuration.
#[derive(Debug, Clone)]
pub struct Router {
    /// Every route, each once, in id order: the known types (and overrides) by type
    /// name, then unknown, then dead letters.
    all: Vec<Route>,
    by_type: HashMap<String, usize>,
    unknown: usize,
    dead_letter: usize,
}

impl Router {
    /// `overrides` maps event types to topics; the known types without an override get
    /// `<prefix>.<type>`.
    pub fn new<'a>(
        prefix: &str,
        overrides: impl IntoIterator<Item = (&'a String, &'a String)>,
        unknown_topic: &str,
        dead_letter_topic: &str,
    ) -> Self {
        let mut topics: BTreeMap<String, String> = KNOWN_EVENT_TYPES
            .iter()
            .map(|t| ((*t).to_owned(), format!("{prefix}.{t}")))
            .collect();
        for (event_type, topic) in overrides {
            topics.insert(event_type.clone(), topic.clone());
        }
        let mut all: Vec<Route> = Vec::with_capacity(topics.len() + 2);
        let mut add = |label: String, topic: String| {
            all.push(Route {
                id: all.len(),
                topic,
                label,
            });
            all.len() - 1
        };
        let by_type = topics
            .into_iter()
            .map(|(event_type, topic)| (event_type.clone(), add(event_type, topic)))
            .collect();
        let unknown = add(UNKNOWN_LABEL.to_owned(), unknown_topic.to_owned());
        let dead_letter = add(MALFORMED_LABEL.to_owned(), dead_letter_topic.to_owned());
        Self {
            all,
            by_type,
            unknown,
            dead_letter,
        }
    }

    /// The route for an event of `event_type`.
    pub fn route(&self, event_type: &str) -> &Route {
        &self.all[self
            .by_type
            .get(event_type)
            .copied()
            .unwrap_or(self.unknown)]
    }

    /// The route for authenticated bodies that are not events.
    pub fn dead_letter(&self) -> &Route {
        &self.all[self.dead_letter]
    }

    /// Every route, in id order (`all()[route.id] == route`).
    pub fn all(&self) -> &[Route] {
        &self.all
    }

    /// Every topic the bridge may write to, sorted, without duplicates.
    pub fn topics(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.all.iter().map(|r| &r.topic).collect();
        all.into_iter().cloned().collect()
    }

    /// Every (label, topic) pair the router can produce, sorted, without duplicates: the
    /// known types, `[kafka.topics]` overrides (also of types only they name), unknown and
    /// dead letters. The `events_forwarded_total` series are created from these.
    pub fn routes(&self) -> Vec<(&str, &str)> {
        let all: BTreeSet<(&str, &str)> = self
            .all
            .iter()
            .map(|r| (r.label.as_str(), r.topic.as_str()))
            .collect();
        all.into_iter().collect()
    }

    /// Every `event_type` label the bridge may use, for pre-registering metrics.
    pub fn labels(&self) -> Vec<&str> {
        let all: BTreeSet<&str> = self.all.iter().map(|r| r.label.as_str()).collect();
        all.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn router(overrides: &[(&str, &str)]) -> Router {
        let overrides: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Router::new(
            "qminder",
            &overrides,
            "qminder.unknown",
            "qminder.deadletter",
        )
    }

    #[test]
    fn sends_each_known_type_to_its_own_topic() {
        let r = router(&[]);
        for t in KNOWN_EVENT_TYPES {
            assert_eq!(r.route(t).topic, format!("qminder.{t}"));
            assert_eq!(r.route(t).label, t);
        }
    }

    #[test]
    fn sends_unknown_types_to_the_unknown_topic_under_one_label() {
        let r = router(&[]);
        for t in [
            "ticket_teleported",
            "TICKET_CREATED",
            "ticket_created ",
            "x",
        ] {
            assert_eq!(r.route(t).topic, "qminder.unknown");
            assert_eq!(r.route(t).label, UNKNOWN_LABEL);
        }
    }

    #[test]
    fn honours_overrides_including_for_types_qminder_adds_later() {
        let r = router(&[
            ("ticket_created", "tickets.created"),
            ("ticket_moved", "tickets.moved"),
        ]);
        assert_eq!(r.route("ticket_created").topic, "tickets.created");
        assert_eq!(r.route("ticket_moved").topic, "tickets.moved");
        assert_eq!(r.route("ticket_moved").label, "ticket_moved");
        assert_eq!(r.route("ticket_served").topic, "qminder.ticket_served");
    }

    #[test]
    fn lists_every_topic_once() {
        let r = router(&[("ticket_created", "qminder.ticket_called")]);
        let topics = r.topics();
        assert_eq!(topics.len(), 10);
        assert!(topics.contains(&"qminder.deadletter".to_owned()));
        assert!(topics.contains(&"qminder.unknown".to_owned()));
        assert!(!topics.contains(&"qminder.ticket_created".to_owned()));
        assert_eq!(r.labels().len(), 11);
    }

    #[test]
    fn numbers_every_route_by_its_place_so_counters_can_be_indexed_by_it() {
        let r = router(&[
            ("unknown", "custom.unknown"),
            ("malformed", "custom.malformed"),
        ]);
        for (i, route) in r.all().iter().enumerate() {
            assert_eq!(route.id, i);
        }
        // An override named like the fallback labels is a route of its own, with its topic.
        assert_eq!(r.route("unknown").topic, "custom.unknown");
        assert_ne!(r.route("unknown").id, r.route("no_such_type").id);
        assert_ne!(r.route("malformed").id, r.dead_letter().id);
        assert_eq!(r.dead_letter().topic, "qminder.deadletter");
    }

    #[test]
    fn lists_a_route_for_a_type_that_only_an_override_names() {
        let r = router(&[("ticket_moved", "tickets.moved")]);
        let routes = r.routes();
        assert!(
            routes.contains(&("ticket_moved", "tickets.moved")),
            "{routes:?}"
        );
        assert!(routes.contains(&("ticket_created", "qminder.ticket_created")));
        assert!(routes.contains(&(UNKNOWN_LABEL, "qminder.unknown")));
        assert!(routes.contains(&(MALFORMED_LABEL, "qminder.deadletter")));
        assert_eq!(routes.len(), KNOWN_EVENT_TYPES.len() + 3);
    }
}
