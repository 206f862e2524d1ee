//! Peak periods: the hour-of-day x weekday profile of a series in the user's timezone.
use chrono::{Datelike as _, TimeZone as _, Timelike as _};
use chrono_tz::Tz;
use serde::Serialize;

use super::{history::Steps, stats::quantile};

/// One hour of one weekday, over every week of the range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    /// 0 = Monday.
    pub weekday: u8,
    pub hour: u8,
    /// The 95th percentile of the steps' means in that hour (minutes where kept).
    pub p95: f64,
    /// The highest sample in that hour.
    pub max: f64,
}

/// The profile's cells that have data, highest p95 first. Local time comes from `tz`'s rules at
/// each step, so across a DST change 14:00 stays 14:00.
pub fn profile(steps: &Steps, tz: Tz) -> Vec<Cell> {
    let mut means: Vec<Vec<f64>> = vec![Vec::new(); 7 * 24];
    let mut maxes = vec![f64::NEG_INFINITY; 7 * 24];
    for s in &steps.0 {
        let Some(utc) = chrono::Utc.timestamp_millis_opt(s.t_ms).single() else {
            continue;
        };
        let local = utc.with_timezone(&tz);
        let i = local.weekday().num_days_from_monday() as usize * 24 + local.hour() as usize;
        means[i].push(s.mean);
        maxes[i] = maxes[i].max(s.max);
    }
    let mut cells: Vec<Cell> = means
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Some(Cell {
                weekday: (i / 24) as u8,
                hour: (i % 24) as u8,
                p95: quantile(m, 0.95)?,
                max: maxes[i],
            })
        })
        .collect();
    cells.sort_by(|a, b| {
        b.p95
            .total_cmp(&a.p95)
            .then((a.weekday, a.hour).cmp(&(b.weekday, b.hour)))
    });
    cells
}

/// The timezone named `name` (IANA, such as Europe/Berlin), or the host's when None.
pub fn timezone(name: Option<&str>) -> anyhow::Result<Tz> {
    let name = match name {
        Some(n) => n.to_owned(),
        None => host_timezone(),
    };
    name.parse::<Tz>().map_err(|_| {
        anyhow::anyhow!("unknown timezone {name:?}: give an IANA name such as Europe/Berlin or UTC")
    })
}

/// The host's timezone name ($TZ, then /etc/localtime's link), UTC when neither says.
fn host_timezone() -> String {
    if let Ok(tz) = std::env::var("TZ")
        && !tz.is_empty()
    {
        return tz.trim_start_matches(':').to_owned();
    }
    std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.split_once("zoneinfo/").map(|(_, name)| name.to_owned())
        })
        .or_else(|| {
            std::fs::read_to_string("/etc/timezone")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "UTC".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::{HOUR_MS, Step};

    #[test]
    fn the_peak_stays_at_its_local_hour_across_a_dst_change() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 2026-02-02 (a Monday) to 2026-04-27: DST starts on 2026-03-08.
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 2, 2, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let steps = Steps(
            (0..12 * 7 * 24)
                .map(|h| {
                    let t = start + h * HOUR_MS;
                    let local = chrono::Utc
                        .timestamp_millis_opt(t)
                        .unwrap()
                        .with_timezone(&tz);
                    Step::flat(t, HOUR_MS, if local.hour() == 14 { 90.0 } else { 10.0 })
                })
                .collect(),
        );
        let cells = profile(&steps, tz);
        assert_eq!(cells.len(), 168);
        assert!(cells[..7].iter().all(|c| c.hour == 14 && c.p95 == 90.0));
        assert_eq!(cells[7].p95, 10.0);
    }
}
