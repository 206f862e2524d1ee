//! Capacity: the day a forecast series reaches a threshold, and the earliest and latest days its
//! 95 % interval allows.
use chrono::TimeZone as _;
use chrono_tz::Tz;
use serde::Serialize;

use super::forecast::Point;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Crossing {
    pub threshold: f64,
    /// YYYY-MM-DD in the report's timezone, or null when not reached within the horizon.
    pub date: Option<String>,
    /// When the interval's upper end reaches it.
    pub earliest: Option<String>,
    /// When its lower end does.
    pub latest: Option<String>,
}

/// The crossing of `threshold` by a forecast that starts after `last_value` (already at or
/// above the threshold: crossed on the forecast's first day, every end alike).
pub fn crossing(points: &[Point], last_value: Option<f64>, threshold: f64, tz: Tz) -> Crossing {
    let day = |t_ms: i64| {
        chrono::Utc
            .timestamp_millis_opt(t_ms)
            .single()
            .map(|t| t.with_timezone(&tz).format("%Y-%m-%d").to_string())
    };
    let first = |f: &dyn Fn(&Point) -> f64| {
        if last_value.is_some_and(|v| v >= threshold) {
            return points.first().and_then(|p| day(p.t_ms));
        }
        points
            .iter()
            .find(|p| f(p) >= threshold)
            .and_then(|p| day(p.t_ms))
    };
    Crossing {
        threshold,
        date: first(&|p| p.mean),
        earliest: first(&|p| p.high),
        latest: first(&|p| p.low),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::HOUR_MS;

    #[test]
    fn the_interval_brackets_the_date() {
        // Mean +1 a day from 60, interval +-5: 70 on day 10, high on day 5, low on day 15.
        let points: Vec<Point> = (0..30 * 24)
            .map(|h| {
                let mean = 60.0 + h as f64 / 24.0;
                Point {
                    t_ms: h * HOUR_MS,
                    time: String::new(),
                    mean,
                    low: mean - 5.0,
                    high: mean + 5.0,
                }
            })
            .collect();
        let c = crossing(&points, Some(59.0), 70.0, Tz::UTC);
        assert_eq!(c.date.as_deref(), Some("1970-01-11"));
        assert_eq!(c.earliest.as_deref(), Some("1970-01-06"));
        assert_eq!(c.latest.as_deref(), Some("1970-01-16"));
        let none = crossing(&points, Some(59.0), 99.0, Tz::UTC);
        assert_eq!((none.date, none.latest), (None, None));
    }
}
