//! History as the analyses see it: each series as steps (a minute where the source has minutes,
//! an hour where only hours are left) with their mean, min, max and last value, whatever the
//! source (the local store or Prometheus), and the grids and rates made from them.
//!
//! Dirty history is made clean here, once: duplicate steps keep the latest, a clock that
//! stepped back is put back in order, NaN steps are dropped, and gaps stay gaps (None on a grid)
//! for each analysis to skip or fill as it needs.
use std::collections::BTreeMap;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// One step of a series: the samples taken in [t_ms, t_ms + span_ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub t_ms: i64,
    pub span_ms: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
}

impl Step {
    /// A step whose samples all read `value` (one sample, or a rate over the step).
    pub fn flat(t_ms: i64, span_ms: i64, value: f64) -> Self {
        Self {
            t_ms,
            span_ms,
            mean: value,
            min: value,
            max: value,
            last: value,
        }
    }
}

/// A series' steps in time order, one per start time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Steps(pub Vec<Step>);

impl Steps {
    /// From steps in any order, duplicates included: the last given for a start time wins
    /// (a clock stepped back wrote the same times twice; the later write is the truth now).
    pub fn from_unordered(steps: impl IntoIterator<Item = Step>) -> Self {
        let mut by_t = BTreeMap::new();
        for s in steps {
            if s.mean.is_finite() && s.min.is_finite() && s.max.is_finite() {
                by_t.insert(s.t_ms, s);
            }
        }
        Self(by_t.into_values().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Only the steps starting in [from, to).
    pub fn between(&self, from: i64, to: i64) -> Steps {
        Steps(
            self.0
                .iter()
                .filter(|s| s.t_ms >= from && s.t_ms < to)
                .copied()
                .collect(),
        )
    }

    /// The steps regrouped into `step_ms` buckets from `from` (the last one may end after
    /// `to`): each bucket's mean (weighted by span), min, max and last; None where no step
    /// starts.
    pub fn grid(&self, from: i64, to: i64, step_ms: i64) -> Vec<Option<Step>> {
        let n = ((to - from).max(0) as u64).div_ceil(step_ms as u64) as usize;
        let mut out: Vec<Option<(Step, f64)>> = vec![None; n];
        for s in &self.0 {
            if s.t_ms < from {
                continue;
            }
            let i = ((s.t_ms - from) / step_ms) as usize;
            if i >= n {
                break;
            }
            let w = s.span_ms as f64;
            match &mut out[i] {
                None => {
                    out[i] = Some((
                        Step {
                            t_ms: from + i as i64 * step_ms,
                            span_ms: step_ms,
                            ..*s
                        },
                        w,
                    ))
                }
                Some((acc, weight)) => {
                    acc.mean = (acc.mean * *weight + s.mean * w) / (*weight + w);
                    acc.min = acc.min.min(s.min);
                    acc.max = acc.max.max(s.max);
                    acc.last = s.last;
                    *weight += w;
                }
            }
        }
        out.into_iter().map(|o| o.map(|(s, _)| s)).collect()
    }
}

/// The per-second rate of a counter over each step, from the counter's last value in
/// consecutive steps: a decrease is a reset (the counter restarted from 0, as Prometheus'
/// rate() assumes), and a step after a gap longer than `max_gap_ms` has no rate.
pub fn counter_rate(counter: &Steps, max_gap_ms: i64) -> Steps {
    let mut out = Vec::with_capacity(counter.0.len());
    for w in counter.0.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dt = b.t_ms + b.span_ms - (a.t_ms + a.span_ms);
        if dt <= 0 || dt > max_gap_ms {
            continue;
        }
        let increase = if b.last >= a.last {
            b.last - a.last
        } else {
            b.last
        };
        out.push(Step::flat(
            b.t_ms,
            b.span_ms,
            increase / (dt as f64 / 1000.0),
        ));
    }
    Steps(out)
}

/// The sum of several series (one per label set) step by step, over the steps where at least
/// one has a value.
pub fn sum(series: &[Steps]) -> Steps {
    let mut by_t: BTreeMap<i64, Step> = BTreeMap::new();
    for s in series {
        for st in &s.0 {
            by_t.entry(st.t_ms)
                .and_modify(|acc| {
                    acc.mean += st.mean;
                    acc.min += st.min;
                    acc.max += st.max;
                    acc.last += st.last;
                })
                .or_insert(*st);
        }
    }
    Steps(by_t.into_values().collect())
}

/// The total increase of a counter over its steps (resets counted as restarts from 0).
pub fn counter_increase(counter: &Steps) -> f64 {
    counter
        .0
        .windows(2)
        .map(|w| {
            if w[1].last >= w[0].last {
                w[1].last - w[0].last
            } else {
                w[1].last
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(t_ms: i64, v: f64) -> Step {
        Step::flat(t_ms, MINUTE_MS, v)
    }

    #[test]
    fn a_clock_step_back_and_duplicates_keep_the_latest_write_in_time_order() {
        let s = Steps::from_unordered([
            step(0, 1.0),
            step(MINUTE_MS, 2.0),
            step(0, 3.0),
            step(2 * MINUTE_MS, f64::NAN),
        ]);
        assert_eq!(s.0, [step(0, 3.0), step(MINUTE_MS, 2.0)]);
    }

    #[test]
    fn counter_rates_survive_resets_and_skip_gaps() {
        let c = Steps(vec![
            step(0, 100.0),
            step(MINUTE_MS, 160.0),
            step(2 * MINUTE_MS, 30.0),
            step(60 * MINUTE_MS, 90.0),
        ]);
        let r = counter_rate(&c, 5 * MINUTE_MS);
        let rates: Vec<f64> = r.0.iter().map(|s| s.mean).collect();
        assert_eq!(rates, [1.0, 0.5]);
    }

    #[test]
    fn a_grid_weights_means_by_span_and_leaves_gaps_empty() {
        let s = Steps(vec![
            step(0, 1.0),
            step(MINUTE_MS, 3.0),
            step(3 * HOUR_MS, 5.0),
        ]);
        let g = s.grid(0, 4 * HOUR_MS, HOUR_MS);
        assert_eq!(g.len(), 4);
        assert_eq!(g[0].unwrap().mean, 2.0);
        assert_eq!((g[1], g[2]), (None, None));
        assert_eq!(g[3].unwrap().max, 5.0);
    }
}
