//! The page's view of the history store: the last day of CPU and resident memory, a point a
//! minute, and each one's trend over the day (the report's Theil-Sen slope: a GC sawtooth or a
//! few spikes do not tilt it).
use std::path::Path;

use serde::Serialize;

use crate::{
    report::{
        history::{DAY_MS, HOUR_MS},
        local::LocalSource,
        source::Source as _,
        stats::theil_sen,
    },
    store::db::Store,
};

/// Points the slope is fitted on (evenly spaced), which keeps the pairs near 100,000.
const FIT_POINTS: usize = 450;

#[derive(Debug, Serialize)]
pub struct Trend {
    pub from_ms: i64,
    pub to_ms: i64,
    /// (unix ms, mean of the minute)
    pub cpu_percent: Vec<(i64, f64)>,
    pub rss_bytes: Vec<(i64, f64)>,
    /// Per hour, over the day; None with fewer than a few points.
    pub cpu_percent_per_hour: Option<f64>,
    pub rss_bytes_per_hour: Option<f64>,
}

/// The day before the target's last stored sample.
pub fn last_day(store: &Path, target: &str) -> anyhow::Result<Trend> {
    let mut source = LocalSource::new(Store::open_reader(store)?);
    let to_ms = source
        .last_ms(target, "app_cpu_usage_percent")?
        .map_or(0, |t| t + 1);
    let from_ms = to_ms - DAY_MS;
    let mut minutes = |name: &str| -> anyhow::Result<Vec<(i64, f64)>> {
        let (_, series) = source.series(target, name, from_ms, to_ms)?;
        let mut points: Vec<(i64, f64)> = series
            .into_iter()
            .flat_map(|s| s.steps.0)
            .map(|s| (s.t_ms, s.mean))
            .filter(|(_, v)| v.is_finite())
            .collect();
        points.sort_by_key(|(t, _)| *t);
        Ok(points)
    };
    let cpu_percent = minutes("app_cpu_usage_percent")?;
    let rss_bytes = minutes("app_resident_memory_bytes")?;
    Ok(Trend {
        from_ms,
        to_ms,
        cpu_percent_per_hour: slope_per_hour(&cpu_percent),
        rss_bytes_per_hour: slope_per_hour(&rss_bytes),
        cpu_percent,
        rss_bytes,
    })
}

fn slope_per_hour(points: &[(i64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let x: Vec<f64> = points
        .iter()
        .map(|(t, _)| *t as f64 / HOUR_MS as f64)
        .collect();
    let y: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
    theil_sen(&x, &y, &vec![0; points.len()], FIT_POINTS).map(|s| s.slope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{chunk::Sample, series::SeriesKey};

    #[test]
    fn a_day_of_minutes_with_its_slope() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (mut store, _) = Store::open(&path).unwrap();
        let start = 1_800_000_000_000_i64;
        // Two days of a gauge rising 2 % an hour, with a sawtooth that a mean-based fit of so
        // few cycles would tilt; only the last day is given.
        store
            .transaction(|tx| {
                for (name, scale) in [
                    ("app_cpu_usage_percent", 1.0),
                    ("app_resident_memory_bytes", 1e6),
                ] {
                    let id = tx.series_id(&SeriesKey::new("api", name, &[]), "gauge")?;
                    let samples: Vec<Sample> = (0..48 * 60)
                        .map(|m| Sample {
                            t_ms: start + m * 60_000,
                            value: (2.0 * m as f64 / 60.0 + (m % 7) as f64) * scale,
                        })
                        .collect();
                    tx.import(id, &samples)?;
                }
                Ok(())
            })
            .unwrap();
        drop(store);
        let trend = last_day(&path, "api").unwrap();
        assert_eq!(trend.cpu_percent.len(), 24 * 60);
        assert_eq!(trend.rss_bytes.len(), 24 * 60);
        assert_eq!(trend.to_ms - trend.from_ms, DAY_MS);
        let cpu = trend.cpu_percent_per_hour.unwrap();
        assert!((cpu - 2.0).abs() < 0.05, "{cpu}");
        let rss = trend.rss_bytes_per_hour.unwrap();
        assert!((rss / 2e6 - 1.0).abs() < 0.03, "{rss}");
        assert!(last_day(&path, "other").unwrap().cpu_percent.is_empty());
    }
}
