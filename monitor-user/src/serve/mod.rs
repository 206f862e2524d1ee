//! Serve: what the daemon shows over HTTP: the Prometheus exporter (`/metrics`), the event log
//! of alert transitions and CPU spikes (`/api/events`), and the server that answers for both.
//!
//! Takes in the model (the exporter's gauges and counters), kernel program status, and alert
//! events; hands HTTP responses to scrapers and browsers. Imports collect, model and alerts.
pub mod events;
pub mod exporter;
pub mod http;
pub mod request_metrics;
