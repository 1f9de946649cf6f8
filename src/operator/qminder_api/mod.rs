//! Qminder's REST API, as the operator tools use it (`backfill`): not on the data path.
//!
//! [`client`] is the one place that talks HTTP to Qminder (key, pace, retries, errors);
//! [`tickets`] searches a window completely; [`transitions`] says which webhooks a ticket's
//! state implies. What the code relies on from Qminder's OpenAPI document is written down
//! in docs/qminder-api.md; the tests' simulator is held to the document itself
//! (tests/fixtures/qminder-openapi.json).

pub mod client;
mod pace;
pub mod tickets;
pub mod transitions;

pub use client::{ApiError, Client};
pub use tickets::{PAGE_LIMIT, Stamp, Ticket, Window};
pub use transitions::{Kind, Transition};
