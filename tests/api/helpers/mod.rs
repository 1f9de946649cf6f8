//! Shared test machinery: a real broker, the bridge on port 0, independent readers.

pub mod app;
pub mod broker;
pub mod kafka;
pub mod process;
pub mod schema;
pub mod traffic;

pub use app::{PATH, SECRET, TestApp, sign, spawn_app, spawn_app_unready, spawn_app_with};
