//! Model: rates, peaks and 1-minute averages computed from consecutive [`Sample`]s of one
//! target (checked deltas: a counter that goes backwards gives no rate, not garbage).
//!
//! Takes in samples from collect and the request ledger's totals from requests; hands a
//! [`Model`] and per-route interval rates to alerts, the exporter and (as they land) the store.
//! Imports only collect and requests.
//!
//! [`Sample`]: crate::collect::sample::Sample
mod rates;
pub mod route_rates;
pub mod window;

pub use rates::*;
