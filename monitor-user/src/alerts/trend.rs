//! Trend detection: least-squares fits over a sliding window of samples.
//!
//! A straight-line fit gives a slope (per minute) and r², the share of the variance the line
//! explains: a leak is a slope that is both steep and steady (high r²), while noise and GC-like
//! sawtooths have a low r² however steep their pieces are. A log-linear fit (a line through
//! `ln(value)`) gives the growth rate of an exponential, hence its doubling time.
use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::clock::Now;

/// Fewer points than this are no trend at all (two points always fit a line perfectly).
pub const MIN_POINTS: usize = 5;

/// The samples must span at least this share of the window before a fit is trusted: a window
/// that has just started (daemon start, restart after a long stop) would otherwise judge a trend
/// on its first few seconds. Not 1: sampling jitter and a missed sample must not stall a rule.
pub const MIN_COVERAGE: f64 = 0.9;

/// How much better than a line an exponential must fit (see [`ExponentialFit::beats_linear`]):
/// nine residual variances, a three-sigma margin.
pub const LINEAR_MARGIN: f64 = 9.0;

/// A straight line `value = intercept + slope × t` (t in seconds from the first point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearFit {
    /// Change per second.
    pub slope: f64,
    pub intercept: f64,
    /// Coefficient of determination, 0..=1. A flat series has no trend to explain: 0.
    pub r2: f64,
    /// Sum of squared residuals.
    pub sse: f64,
}

impl LinearFit {
    pub fn slope_per_min(&self) -> f64 {
        self.slope * 60.0
    }
}

/// Least-squares line through `(t seconds, value)` points; `None` when there is no line to fit
/// (fewer than two points, all at the same time, or non-finite input).
pub fn linear_fit(points: &[(f64, f64)]) -> Option<LinearFit> {
    let n = points.len();
    if n < 2 || points.iter().any(|(t, v)| !t.is_finite() || !v.is_finite()) {
        return None;
    }
    let nf = n as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / nf;
    // Centred sums: t is often seconds since the epoch, whose squares lose all precision.
    let (mut stt, mut stv, mut svv) = (0.0, 0.0, 0.0);
    for &(t, v) in points {
        let (dt, dv) = (t - mean_t, v - mean_v);
        stt += dt * dt;
        stv += dt * dv;
        svv += dv * dv;
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = stv / stt;
    let r2 = if svv > 0.0 {
        (stv * stv / (stt * svv)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(LinearFit {
        slope,
        intercept: mean_v - slope * mean_t,
        r2,
        sse: (svv - slope * stv).max(0.0),
    })
}

/// An exponential `value = a × e^(rate × t)`, fitted as a line through `ln(value)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialFit {
    /// Growth rate per second (`d ln(value) / dt`); negative for a decay.
    pub rate: f64,
    /// r² of the line through `ln(value)`.
    pub r2: f64,
    /// Whether the exponential explains the values (not their logarithms) clearly better than a
    /// straight line does. Any rising series looks exponential over a short enough window, a
    /// straight line starting near zero especially (+1 %/min from 5 % "doubles" in 5 min); a
    /// real exponential curves upwards, which a line cannot follow. "Clearly": the line's
    /// squared residuals must exceed the exponential's by [`LINEAR_MARGIN`] times the residual
    /// variance, so noise on a straight line wins this test by chance about once in a thousand
    /// windows at most, instead of every other one.
    pub beats_linear: bool,
}

impl ExponentialFit {
    pub fn rate_per_min(&self) -> f64 {
        self.rate * 60.0
    }

    /// `ln 2 / rate`; `None` unless growing.
    pub fn doubling_time(&self) -> Option<Duration> {
        if self.rate > 0.0 {
            Duration::try_from_secs_f64(std::f64::consts::LN_2 / self.rate).ok()
        } else {
            None
        }
    }
}

/// Log-linear fit over the points with a positive value; `None` when fewer than
/// [`MIN_POINTS`] of them remain or no line fits.
pub fn exponential_fit(points: &[(f64, f64)]) -> Option<ExponentialFit> {
    let positive: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
    if positive.len() < MIN_POINTS {
        return None;
    }
    let logs: Vec<(f64, f64)> = positive.iter().map(|&(t, v)| (t, v.ln())).collect();
    let log_fit = linear_fit(&logs)?;
    let line = linear_fit(&positive)?;
    let sse_exp: f64 = positive
        .iter()
        .map(|&(t, v)| {
            let predicted = (log_fit.intercept + log_fit.slope * t).exp();
            (v - predicted).powi(2)
        })
        .sum();
    Some(ExponentialFit {
        rate: log_fit.slope,
        r2: log_fit.r2,
        beats_linear: sse_exp.is_finite()
            && line.sse - sse_exp > LINEAR_MARGIN * sse_exp / (positive.len() - 2) as f64,
    })
}

/// The samples of one series inside a sliding window, oldest first. `T` is the clock that times
/// them: the monotonic one while running (a window is a duration), the wall clock in saved
/// state (see [`Series::saved`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series<T = Instant> {
    samples: VecDeque<(T, f64)>,
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Self {
            samples: VecDeque::new(),
        }
    }
}

impl<T> Series<T> {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

impl Series {
    /// Appends a sample and drops those older than `window` before it. Non-finite values are
    /// ignored; an instant before the newest sample's (a caller's mistake, the clock being
    /// monotonic) empties the series rather than fit a line through a time line that folds.
    pub fn push(&mut self, at: Instant, value: f64, window: Duration) {
        if !value.is_finite() {
            return;
        }
        if let Some(&(last, _)) = self.samples.back()
            && at <= last
        {
            if at == last {
                // Same instant fed twice: keep the newer reading.
                self.samples.pop_back();
            } else {
                self.samples.clear();
            }
        }
        self.samples.push_back((at, value));
        self.prune(at, window);
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        let Some(start) = now.checked_sub(window) else {
            return;
        };
        while self.samples.front().is_some_and(|&(t, _)| t < start) {
            self.samples.pop_front();
        }
    }

    /// Time from the oldest to the newest sample.
    pub fn span(&self) -> Duration {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(first, _)), Some(&(last, _))) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }

    /// Enough samples over enough of `window` to trust a fit.
    pub fn covers(&self, window: Duration) -> bool {
        self.len() >= MIN_POINTS && self.span().as_secs_f64() >= window.as_secs_f64() * MIN_COVERAGE
    }

    /// `(seconds since the oldest sample, value)`.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let Some(&(first, _)) = self.samples.front() else {
            return Vec::new();
        };
        self.samples
            .iter()
            .map(|&(t, v)| (t.saturating_duration_since(first).as_secs_f64(), v))
            .collect()
    }

    /// The samples timed by the wall clock, for saving across a restart.
    pub fn saved(&self, now: &Now) -> Series<SystemTime> {
        Series {
            samples: self
                .samples
                .iter()
                .map(|&(at, v)| (now.wall_of(at), v))
                .collect(),
        }
    }
}

impl Series<SystemTime> {
    /// Saved samples back on the monotonic clock; none when one of them cannot be placed (the
    /// wall clock went back since they were saved): a window with a hole of unknown size
    /// would fit a wrong slope.
    pub fn restored(self, now: &Now) -> Series {
        let samples: Option<VecDeque<(Instant, f64)>> = self
            .samples
            .into_iter()
            .map(|(wall, v)| Some((now.instant_of(wall)?, v)))
            .collect();
        Series {
            samples: samples.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1] (xorshift64*): tests must not depend on a random seed.
    pub(crate) struct Noise(u64);

    impl Noise {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }

        pub(crate) fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
            (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    #[test]
    fn line_fit_recovers_slope_and_r2() {
        let points: Vec<_> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let fit = linear_fit(&points).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-12);
        assert!((fit.intercept - 3.0).abs() < 1e-9);
        assert!((fit.r2 - 1.0).abs() < 1e-12);
        assert!(fit.sse < 1e-9);
        assert!((fit.slope_per_min() - 120.0).abs() < 1e-9);
    }

    #[test]
    fn epoch_scale_times_keep_precision() {
        let t0 = 1.7e9;
        let points: Vec<_> = (0..60)
            .map(|i| (t0 + 5.0 * i as f64, 100.0 + i as f64))
            .collect();
        let fit = linear_fit(&points).unwrap();
        assert!((fit.slope - 0.2).abs() < 1e-9, "{fit:?}");
        assert!(fit.r2 > 0.999_999);
    }

    #[test]
    fn degenerate_inputs_give_no_fit() {
        assert_eq!(linear_fit(&[]), None);
        assert_eq!(linear_fit(&[(1.0, 1.0)]), None);
        assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(linear_fit(&[(0.0, 1.0), (1.0, f64::NAN)]), None);
        let flat = linear_fit(&[(0.0, 4.0), (1.0, 4.0), (2.0, 4.0)]).unwrap();
        assert_eq!((flat.slope, flat.r2), (0.0, 0.0));
        assert_eq!(exponential_fit(&[(0.0, 0.0); 10]), None);
    }

    #[test]
    fn exponential_fit_gives_doubling_time() {
        // Doubling every 180 s.
        let points: Vec<_> = (0..60)
            .map(|i| {
                let t = 5.0 * i as f64;
                (t, 2.0 * (t / 180.0).exp2())
            })
            .collect();
        let fit = exponential_fit(&points).unwrap();
        let doubling = fit.doubling_time().unwrap().as_secs_f64();
        assert!((doubling - 180.0).abs() < 1e-6, "{doubling}");
        assert!(fit.r2 > 0.999_999);
        assert!(fit.beats_linear);
    }

    #[test]
    fn a_straight_line_is_not_exponential() {
        // +1 per minute from 5: its logarithm fits a line well and "doubles" in about 7 min,
        // yet a line explains it better.
        let points: Vec<_> = (0..60)
            .map(|i| {
                let t = 5.0 * i as f64;
                (t, 5.0 + t / 60.0)
            })
            .collect();
        let fit = exponential_fit(&points).unwrap();
        assert!(fit.r2 > 0.95);
        assert!(fit.doubling_time().unwrap() < Duration::from_secs(600));
        assert!(!fit.beats_linear);
    }

    #[test]
    fn decay_has_no_doubling_time() {
        let points: Vec<_> = (0..20)
            .map(|i| (i as f64, 100.0 * (-(i as f64) / 10.0).exp()))
            .collect();
        let fit = exponential_fit(&points).unwrap();
        assert!(fit.rate < 0.0);
        assert_eq!(fit.doubling_time(), None);
    }

    #[test]
    fn series_keeps_only_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut s = Series::default();
        for i in 0..30 {
            s.push(t0 + Duration::from_secs(5 * i), i as f64, window);
        }
        // 145 s: samples from 85 s to 145 s (13 of them).
        assert_eq!(s.len(), 13);
        assert_eq!(s.span(), window);
        assert!(s.covers(window));
        assert_eq!(s.points()[0], (0.0, 17.0));
        assert_eq!(s.points().last(), Some(&(60.0, 29.0)));
        // Not enough of a longer window.
        assert!(!s.covers(Duration::from_secs(600)));
        // A non-finite reading is ignored; an instant before the newest starts over.
        s.push(t0 + Duration::from_secs(150), f64::NAN, window);
        assert_eq!(s.len(), 13);
        s.push(t0, 1.0, window);
        assert_eq!(s.len(), 1);
        s.clear();
        assert_eq!(s.len(), 0);
        assert_eq!(s.span(), Duration::ZERO);
    }

    #[test]
    fn a_saved_series_is_restored_on_the_new_monotonic_clock() {
        let window = Duration::from_secs(600);
        let start = Instant::now();
        let mut s = Series::default();
        for i in 0..10 {
            s.push(start + Duration::from_secs(5 * i), i as f64, window);
        }
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let saved_at = Now {
            mono: start + Duration::from_secs(45),
            wall,
        };
        let saved = s.saved(&saved_at);
        // 100 s later, in a process whose monotonic clock started elsewhere.
        let later = Now {
            mono: Instant::now() + Duration::from_secs(5000),
            wall: wall + Duration::from_secs(100),
        };
        let restored = saved.clone().restored(&later);
        assert_eq!(restored.points(), s.points());
        assert_eq!(
            later.mono - restored.samples.back().unwrap().0,
            Duration::from_secs(100)
        );
        // Saved times ahead of the wall clock (stepped back since): nothing to fit on.
        let stepped_back = Now {
            wall: wall - Duration::from_secs(3600),
            ..later
        };
        assert_eq!(saved.restored(&stepped_back).len(), 0);
    }
}
