//! Store: the history of every sample the daemon takes, in one embedded SQLite file (WAL) for
//! all the host's targets, raw and rolled up per minute and per hour, each tier under its own
//! retention.
//!
//! Takes in points (a series and its value at a time) from the commands layer, which reads them
//! off the exporter's registry after each sample, so history holds what /metrics served. Hands
//! stored samples and aggregates to `monitor history export` and the report. Imports no other
//! stage: it is told points, not models.
pub mod chunk;
pub mod db;
pub mod openmetrics;
pub mod series;
pub mod writer;

use std::time::SystemTime;

/// `t` as Unix milliseconds, the store's time (0 for a time before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
