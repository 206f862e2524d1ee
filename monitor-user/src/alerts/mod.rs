//! Alerts: rules over the model's series, their lifecycle, trend detection and CPU spike context.
//!
//! Takes in the model (`from_model` turns it into a [`engine::Snapshot`] of named series and a
//! spike [`spike::Interval`]); the engine (rules, lifecycle) hands [`Alert`] events on to the
//! notifiers and the event log. Imports only collect and model. The rules also go out as a
//! Prometheus rule file, with recording rules and alerts on monitor itself (`mixin`).
pub mod alert;
pub mod clock;
pub mod engine;
pub mod from_model;
pub mod mixin;
pub mod rule_file;
pub mod rules;
pub mod spike;
pub mod trend;

pub use alert::{Alert, AlertStatus, Severity};
