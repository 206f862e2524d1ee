//! Web: what the daemon answers over HTTP: `/metrics` for scrapers, `/api/events`, and the live
//! page at `/` with the JSON it reads (`/api/live`: the last minutes of the model; `/api/history`:
//! the last day from the store, with its trend).
//!
//! Takes in the model, request types and firing alerts (recorded by the sampler into the live
//! feed), the exporter and event log from serve, and the history store through report's local
//! source; hands HTTP responses to scrapers and browsers. The last stage: nothing imports it
//! but the commands.
//!
//! Served over TLS with basic auth when a web config file (exporter-toolkit's format) says so.
mod basic_auth;
pub mod history_trend;
pub mod listener;
pub mod live;
mod page;
pub mod server;
mod tls;
pub mod web_config;
pub mod web_config_watch;
