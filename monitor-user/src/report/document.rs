//! The report as data: what `--json` prints (README "Report" documents every field and keeps
//! them stable) and what the HTML page draws.
use serde::Serialize;

use super::{
    capacity::Crossing, forecast::Point, load_correlation::LoadCorrelation,
    memory_trend::MemoryTrend, peaks::Cell,
};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    /// "local" or "prometheus".
    pub source: String,
    /// RFC 3339, the range the report read.
    pub from: String,
    pub to: String,
    pub timezone: String,
    pub peaks: Peaks,
    pub load_correlation: Option<LoadCorrelation>,
    pub memory_trend: Option<MemoryTrend>,
    pub forecast: Forecasts,
    pub capacity: Capacity,
    /// Each route's share of the CPU the routes got over the range, largest first; null
    /// without request types.
    pub routes: Option<Vec<RouteShare>>,
    pub recommendations: Vec<String>,
    /// Why a section is null, which model made a forecast, what the data looked like.
    pub notes: Vec<String>,
    /// What the pictures need beyond the figures.
    #[serde(skip)]
    pub charts: Charts,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Peaks {
    pub cpu_percent: Option<Vec<Cell>>,
    pub memory_percent: Option<Vec<Cell>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Forecasts {
    pub cpu_percent: Option<Vec<Point>>,
    pub memory_percent: Option<Vec<Point>>,
    /// The model each forecast used ("MSTL(24, 168) + ETS", "MSTL(24) + ETS", "ETS").
    pub models: Models,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Models {
    pub cpu_percent: Option<String>,
    pub memory_percent: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Capacity {
    pub memory_percent: Option<Crossing>,
    pub cpu_percent: Option<Crossing>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteShare {
    pub method: String,
    pub route: String,
    pub cpu_seconds: f64,
    pub share: f64,
}

/// Series for the pictures: hourly history, and CPU against load.
#[derive(Clone, Debug, Default)]
pub struct Charts {
    /// (unix ms, mean) per hour.
    pub cpu_hourly: Vec<(i64, f64)>,
    pub memory_percent_hourly: Vec<(i64, f64)>,
    /// (unix ms, hourly floor in MB).
    pub memory_mb_floor: Vec<(i64, f64)>,
    /// (load, CPU %) pairs, at most a few thousand.
    pub cpu_vs_load: Vec<(f64, f64)>,
}
