//! Memory trend: is memory leaking, and how fast, in a way that a garbage collector's sawtooth
//! and process restarts do not fool.
//!
//! The trend is read from the floor of memory (each hour's lowest sample: what is left after a
//! collection), not its mean, so a sawtooth adds nothing. A restart drops the floor; the history
//! is cut there into segments and slopes are only taken within one, so a leak that a nightly
//! restart resets is still found and the drop itself is not read as a shrink. The slope is the
//! Theil-Sen median of pairwise slopes with Sen's 95 % interval, over daily floors when the
//! segments are long enough (hourly floors of one day are too alike for an honest interval).
use serde::Serialize;

use super::{
    history::{DAY_MS, HOUR_MS, Steps},
    stats::{median, theil_sen},
};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryTrend {
    pub leak: bool,
    pub mb_per_day: f64,
    pub mb_per_day_low: f64,
    pub mb_per_day_high: f64,
    /// Restarts seen (drops of the floor), each starting a new segment.
    pub restarts: usize,
}

/// A floor lower than the one before by this fraction is a restart.
const RESTART_DROP: f64 = 0.2;

/// The trend of memory in MB (`mb`, any resolution) over [from, to); None with under two days
/// of floors.
pub fn trend(mb: &Steps, from: i64, to: i64) -> Option<MemoryTrend> {
    // Hourly floors; 0 is a process that was not there (a restart), not a measurement.
    let floors: Vec<(i64, f64)> = mb
        .grid(from, to, HOUR_MS)
        .into_iter()
        .flatten()
        .filter(|s| s.min > 0.0)
        .map(|s| (s.t_ms, s.min))
        .collect();
    if floors.len() < 48 {
        return None;
    }
    let mut segment = Vec::with_capacity(floors.len());
    let mut current = 0;
    for (i, (t, v)) in floors.iter().enumerate() {
        if i > 0 {
            let (pt, pv) = floors[i - 1];
            let gap_restart = mb_was_zero_between(mb, pt, *t);
            if *v < pv * (1.0 - RESTART_DROP) || gap_restart {
                current += 1;
            }
        }
        segment.push(current);
    }
    let restarts = current;
    // Daily floors per segment when segments last four days or more (typically).
    let lengths: Vec<f64> = (0..=current)
        .map(|g| segment.iter().filter(|&&s| s == g).count() as f64)
        .collect();
    let daily = median(&lengths).is_some_and(|m| m >= 96.0);
    let (mut x, mut y, mut group) = (Vec::new(), Vec::new(), Vec::new());
    if daily {
        let mut i = 0;
        while i < floors.len() {
            let (day, g) = (floors[i].0.div_euclid(DAY_MS), segment[i]);
            let mut j = i;
            let mut best = floors[i];
            while j < floors.len() && floors[j].0.div_euclid(DAY_MS) == day && segment[j] == g {
                if floors[j].1 < best.1 {
                    best = floors[j];
                }
                j += 1;
            }
            x.push(best.0 as f64);
            y.push(best.1);
            group.push(g);
            i = j;
        }
    } else {
        for ((t, v), g) in floors.iter().zip(&segment) {
            x.push(*t as f64);
            y.push(*v);
            group.push(*g);
        }
    }
    let fit = theil_sen(&x, &y, &group, 2000)?;
    let per_day = DAY_MS as f64;
    let (mb_per_day, low, high) = (fit.slope * per_day, fit.low * per_day, fit.high * per_day);
    // Growth that is real (the interval above 0) and worth a word: 0.1 % of the floor a day,
    // at least 0.1 MB.
    let level = median(&y).unwrap_or(0.0);
    let leak = low > 0.0 && mb_per_day > (level * 0.001).max(0.1);
    Some(MemoryTrend {
        leak,
        mb_per_day,
        mb_per_day_low: low,
        mb_per_day_high: high,
        restarts,
    })
}

/// Whether memory read 0 (no process) between two hours' floors.
fn mb_was_zero_between(mb: &Steps, from: i64, to: i64) -> bool {
    let start = mb.0.partition_point(|s| s.t_ms < from);
    mb.0[start..]
        .iter()
        .take_while(|s| s.t_ms < to + HOUR_MS)
        .any(|s| s.min <= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::{MINUTE_MS, Step};

    fn minutes(f: impl Fn(i64) -> f64, days: i64) -> Steps {
        Steps(
            (0..days * 1440)
                .map(|m| Step::flat(m * MINUTE_MS, MINUTE_MS, f(m)))
                .collect(),
        )
    }

    #[test]
    fn a_sawtooth_with_restarts_is_no_leak_and_a_reset_leak_is_one() {
        // GC every 20 minutes from 500 MB up to 800; a restart every 5 days that reads 0 once.
        let saw = |m: i64| {
            if m % (5 * 1440) == 0 && m > 0 {
                0.0
            } else {
                500.0 + 300.0 * (m % 20) as f64 / 20.0
            }
        };
        let t = trend(&minutes(saw, 30), 0, 30 * DAY_MS).unwrap();
        assert!(!t.leak, "{t:?}");
        assert!(t.mb_per_day.abs() < 1.0, "{t:?}");
        assert_eq!(t.restarts, 5);
        // The same, leaking 12 MB a day, reset by each restart.
        let leak = |m: i64| saw(m) + 12.0 * (m % (5 * 1440)) as f64 / 1440.0;
        let t = trend(&minutes(leak, 30), 0, 30 * DAY_MS).unwrap();
        assert!(t.leak, "{t:?}");
        assert!((t.mb_per_day - 12.0).abs() < 12.0 * 0.25, "{t:?}");
        assert!(t.mb_per_day_low <= t.mb_per_day && t.mb_per_day <= t.mb_per_day_high);
    }
}
