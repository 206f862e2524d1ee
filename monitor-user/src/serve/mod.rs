//! Serve: what the daemon publishes of its model: the Prometheus exporter (the series /metrics
//! renders) and the event log of alert transitions and CPU spikes (`/api/events`).
//!
//! Takes in the model (the exporter's gauges and counters), kernel program status, and alert
//! events; hands a registry and an event log to the store and to web, which serves them.
//! Imports collect, model and alerts.
pub mod events;
pub mod exporter;
pub mod request_metrics;
