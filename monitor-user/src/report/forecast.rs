//! Forecast: hourly points with 95 % intervals from the last sample on, by MSTL (daily and
//! weekly seasonality, LOESS) with an ETS model of what is left (augurs).
//!
//! Model choice, by the history there is: two weeks or more, both seasons; two days or more, the
//! daily one; less, ETS alone. The trend is not damped: a capacity date is about where a trend
//! goes if nothing changes, as predict_linear is, and a damped trend would push every date out.
use augurs::{ets::AutoETS, mstl::MSTLModel, prelude::*};
use serde::Serialize;

use super::history::{HOUR_MS, Steps};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Unix ms of the hour's start (the JSON writes it as RFC 3339).
    #[serde(skip)]
    pub t_ms: i64,
    pub time: String,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    /// Which model made it, in words ("MSTL(24, 168) + ETS").
    pub model: String,
    pub points: Vec<Point>,
}

/// Hours of history needed for each model.
const WEEKLY_MIN_HOURS: usize = 14 * 24;
const DAILY_MIN_HOURS: usize = 2 * 24;
const ETS_MIN_HOURS: usize = 12;

/// Forecasts `steps` (hourly means over [from, to), gaps filled by straight lines) for
/// `horizon_hours` after the last hour with data; None with under 12 hours of data. Values are
/// kept at 0 or above (a percentage).
pub fn forecast(
    steps: &Steps,
    from: i64,
    to: i64,
    horizon_hours: usize,
) -> anyhow::Result<Option<Forecast>> {
    let grid: Vec<Option<f64>> = steps
        .grid(from.div_euclid(HOUR_MS) * HOUR_MS, to, HOUR_MS)
        .iter()
        .map(|s| s.map(|s| s.mean))
        .collect();
    let start = grid.iter().position(Option::is_some);
    let end = grid.iter().rposition(Option::is_some);
    let (Some(start), Some(end)) = (start, end) else {
        return Ok(None);
    };
    let y = fill_gaps(&grid[start..=end]);
    if y.len() < ETS_MIN_HOURS {
        return Ok(None);
    }
    let last_hour = from.div_euclid(HOUR_MS) * HOUR_MS + end as i64 * HOUR_MS;
    let trend = || -> anyhow::Result<AutoETS> { Ok(AutoETS::non_seasonal().damped(false)?) };
    let (model, f) = if y.len() >= DAILY_MIN_HOURS {
        let periods = if y.len() >= WEEKLY_MIN_HOURS {
            vec![24, 168]
        } else {
            vec![24]
        };
        let name = format!(
            "MSTL({}) + ETS",
            periods
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let fit = MSTLModel::new(periods, trend()?.into_trend_model()).fit(&y)?;
        (name, fit.predict(horizon_hours, 0.95)?)
    } else {
        (
            "ETS".to_owned(),
            trend()?.fit(&y)?.predict(horizon_hours, 0.95)?,
        )
    };
    let intervals = f
        .intervals
        .ok_or_else(|| anyhow::anyhow!("the forecast model gave no intervals"))?;
    let points = (0..horizon_hours)
        .map(|k| {
            let t_ms = last_hour + (k as i64 + 1) * HOUR_MS;
            Point {
                t_ms,
                time: rfc3339(t_ms),
                mean: f.point[k].max(0.0),
                low: intervals.lower[k].max(0.0),
                high: intervals.upper[k].max(0.0),
            }
        })
        .collect();
    Ok(Some(Forecast { model, points }))
}

/// Gaps (None) filled by the straight line between their neighbours; the ends have data.
fn fill_gaps(v: &[Option<f64>]) -> Vec<f64> {
    let mut out = Vec::with_capacity(v.len());
    let mut last: Option<(usize, f64)> = None;
    for (i, x) in v.iter().enumerate() {
        if let Some(x) = x {
            if let Some((j, y)) = last
                && i > j + 1
            {
                for k in j + 1..i {
                    out.push(y + (x - y) * (k - j) as f64 / (i - j) as f64);
                }
            }
            out.push(*x);
            last = Some((i, *x));
        }
    }
    out
}

pub fn rfc3339(t_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::Step;

    #[test]
    fn gaps_are_filled_by_straight_lines() {
        assert_eq!(
            fill_gaps(&[Some(1.0), None, None, Some(4.0), Some(5.0)]),
            [1.0, 2.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn a_daily_cycle_on_a_trend_is_carried_forward() {
        let hours = 21 * 24;
        let value = |h: usize| {
            40.0 + 0.01 * h as f64
                + 5.0 * (2.0 * std::f64::consts::PI * (h % 24) as f64 / 24.0).sin()
        };
        let steps = Steps(
            (0..hours)
                .map(|h| Step::flat(h as i64 * HOUR_MS, HOUR_MS, value(h)))
                .collect(),
        );
        let f = forecast(&steps, 0, hours as i64 * HOUR_MS, 48)
            .unwrap()
            .unwrap();
        assert_eq!(f.model, "MSTL(24, 168) + ETS");
        assert_eq!(f.points.len(), 48);
        assert_eq!(f.points[0].t_ms, hours as i64 * HOUR_MS);
        for (k, p) in f.points.iter().enumerate() {
            let truth = value(hours + k);
            assert!(
                (p.mean - truth).abs() < 0.5,
                "hour {k}: {} against {truth}",
                p.mean
            );
            assert!(p.low <= p.mean && p.mean <= p.high);
        }
    }
}
