//! How CPU follows load: rank correlation, CPU per unit of load (a robust slope), the lag
//! between the two, and the hours whose CPU load does not explain (a batch job).
use chrono::{TimeZone as _, Timelike as _};
use chrono_tz::Tz;
use serde::Serialize;

use super::{
    history::Steps,
    stats::{mad_sigma, median, pearson, spearman, theil_sen},
};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadCorrelation {
    /// What the load signal is (a series name, or the request rate).
    pub load: String,
    pub spearman: f64,
    /// CPU percentage points per unit of load (per request/s for the request rate).
    pub cpu_per_load: f64,
    /// How long CPU trails load, in whole steps of the history (a minute where kept).
    pub lag_seconds: i64,
    /// Local hours of the day (0-23) whose CPU runs above what their load explains.
    pub not_load_driven_hours: Vec<u8>,
}

/// Lags tried, in steps: up to an hour of minutes.
const MAX_LAG_STEPS: usize = 60;

/// The correlation of `cpu` with `load` (both as values per step) over [from, to) on a grid of
/// `step_ms`; None when fewer than 30 steps have both.
pub fn correlate(
    load_name: &str,
    cpu: &Steps,
    load: &Steps,
    from: i64,
    to: i64,
    step_ms: i64,
    tz: Tz,
) -> Option<LoadCorrelation> {
    let cpu_grid: Vec<Option<f64>> = cpu
        .grid(from, to, step_ms)
        .iter()
        .map(|s| s.map(|s| s.mean))
        .collect();
    let load_grid: Vec<Option<f64>> = load
        .grid(from, to, step_ms)
        .iter()
        .map(|s| s.map(|s| s.mean))
        .collect();
    let lag = best_lag(&cpu_grid, &load_grid);
    // Pairs: load at i, CPU at i + lag.
    let (mut l, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..load_grid.len().saturating_sub(lag) {
        if let (Some(x), Some(y)) = (load_grid[i], cpu_grid[i + lag]) {
            l.push(x);
            c.push(y);
            t.push(from + (i + lag) as i64 * step_ms);
        }
    }
    if l.len() < 30 {
        return None;
    }
    let rho = spearman(&l, &c)?;
    let fit = theil_sen(&l, &c, &vec![0; l.len()], 1500)?;
    let residuals: Vec<f64> = l
        .iter()
        .zip(&c)
        .map(|(x, y)| y - (fit.intercept + fit.slope * x))
        .collect();
    let sigma = mad_sigma(&residuals)?;
    let mut by_hour: Vec<Vec<f64>> = vec![Vec::new(); 24];
    for (r, t) in residuals.iter().zip(&t) {
        if let Some(utc) = chrono::Utc.timestamp_millis_opt(*t).single() {
            by_hour[utc.with_timezone(&tz).hour() as usize].push(*r);
        }
    }
    // An hour whose typical CPU is above the fit by more than twice the residuals' spread and
    // by at least one percentage point: run-of-the-mill noise is neither.
    let not_load_driven_hours = by_hour
        .iter()
        .enumerate()
        .filter(|(_, rs)| median(rs).is_some_and(|m| m > (2.0 * sigma).max(1.0)))
        .map(|(h, _)| h as u8)
        .collect();
    Some(LoadCorrelation {
        load: load_name.to_owned(),
        spearman: rho,
        cpu_per_load: fit.slope,
        lag_seconds: lag as i64 * step_ms / 1000,
        not_load_driven_hours,
    })
}

/// The lag (in steps) at which CPU's changes correlate best with load's: changes, not levels,
/// since two daily cycles correlate at any lag of a few minutes.
fn best_lag(cpu: &[Option<f64>], load: &[Option<f64>]) -> usize {
    let diff = |v: &[Option<f64>]| -> Vec<Option<f64>> {
        (0..v.len())
            .map(|i| match (i.checked_sub(1).and_then(|j| v[j]), v[i]) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            })
            .collect()
    };
    let (dc, dl) = (diff(cpu), diff(load));
    let mut best = (0, f64::NEG_INFINITY);
    for lag in 0..=MAX_LAG_STEPS.min(dl.len().saturating_sub(30)) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..dl.len() - lag {
            if let (Some(a), Some(b)) = (dl[i], dc[i + lag]) {
                x.push(a);
                y.push(b);
            }
        }
        if let Some(r) = pearson(&x, &y)
            && r > best.1
        {
            best = (lag, r);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::{MINUTE_MS, Step};

    fn steps(values: &[f64]) -> Steps {
        Steps(
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| Step::flat(i as i64 * MINUTE_MS, MINUTE_MS, v))
                .collect(),
        )
    }

    #[test]
    fn cpu_trailing_load_by_three_minutes_with_a_nightly_job() {
        // A pseudo-random load (an LCG), CPU = 2 per unit three minutes later, plus 30 points
        // from 02:00 to 03:00 UTC.
        let n = 3 * 1440;
        let mut x = 12345u64;
        let load: Vec<f64> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                10.0 + (x >> 40) as f64 / (1u64 << 24) as f64 * 10.0
            })
            .collect();
        let cpu: Vec<f64> = (0..n)
            .map(|i| {
                let base = if i >= 3 { 2.0 * load[i - 3] } else { 20.0 };
                let hour = (i / 60) % 24;
                base + if hour == 2 { 30.0 } else { 0.0 }
            })
            .collect();
        let c = correlate(
            "load",
            &steps(&cpu),
            &steps(&load),
            0,
            n as i64 * MINUTE_MS,
            MINUTE_MS,
            Tz::UTC,
        )
        .unwrap();
        assert_eq!(c.lag_seconds, 180);
        assert!((c.cpu_per_load - 2.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.not_load_driven_hours, [2]);
        assert!(c.spearman > 0.8, "{c:?}");
    }
}
