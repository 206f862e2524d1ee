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
