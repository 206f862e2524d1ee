//! Alerting: rules over sampled series, their lifecycle, trend detection and CPU spike context.
//!
//! Data flow: model → [`Snapshot`] of named series → engine (rules, lifecycle) → [`Alert`] events
//! → notifiers (crate::notify).
pub mod alert;
pub mod engine;
pub mod rules;
pub mod spike;
pub mod trend;

pub use alert::{Alert, AlertStatus, Severity};
