//! Request types: HTTP/1 requests of the target found in the kernel's socket events, their
//! routes (method + template), and the CPU, latency and status of each route.
//!
//! Downstream of collect (the ring buffer's records), upstream of the model, alerts and
//! exporter. Parsing and attribution are all here; the kernel only copies bytes and times.
pub mod event;
#[allow(dead_code)] // expects_continue: for 100-continue timing, not used yet
pub mod http_line;
pub mod ledger;
pub mod openapi;
pub mod route_table;
pub mod tag;
pub mod thread_cpu;
pub mod tracker;

/// The tracker as the reader thread feeds it and the exporter reads it at each scrape.
pub type SharedTracker = std::sync::Arc<std::sync::Mutex<tracker::Tracker>>;
