//! Sliding windows over timestamped values: the peak over a span and the moving average.
use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Window {
    span_ns: u64,
    points: VecDeque<(u64, f64)>,
}

impl Window {
    pub fn new(span_ns: u64) -> Self {
        Self {
            span_ns,
            points: VecDeque::new(),
        }
    }

    /// Adds a value observed at `at_ns` (monotonic, non-decreasing) and forgets values older
    /// than the span.
    pub fn push(&mut self, at_ns: u64, value: f64) {
        self.points.push_back((at_ns, value));
        let horizon = at_ns.saturating_sub(self.span_ns);
        while self.points.front().is_some_and(|&(t, _)| t < horizon) {
            self.points.pop_front();
        }
    }

    pub fn peak(&self) -> Option<f64> {
        self.points.iter().map(|&(_, v)| v).reduce(f64::max)
    }

    pub fn mean(&self) -> Option<f64> {
        let n = self.points.len();
        (n > 0).then(|| self.points.iter().map(|&(_, v)| v).sum::<f64>() / n as f64)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn empty_window_has_no_peak_or_mean() {
        let w = Window::new(60 * S);
        assert_eq!(w.peak(), None);
        assert_eq!(w.mean(), None);
    }

    #[test]
    fn peak_is_forgotten_once_it_leaves_the_span() {
        let mut w = Window::new(10 * S);
        w.push(0, 90.0);
        w.push(5 * S, 10.0);
        assert_eq!(w.peak(), Some(90.0));
        w.push(10 * S, 20.0);
        assert_eq!(
            w.peak(),
            Some(90.0),
            "a point exactly span old is still inside"
        );
        w.push(11 * S, 15.0);
        assert_eq!(w.peak(), Some(20.0));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn one_minute_mean_of_five_second_samples() {
        let mut w = Window::new(60 * S);
        // 0..=60 s: 13 samples of value i; then more samples push the first ones out.
        for i in 0..=12u64 {
            w.push(i * 5 * S, i as f64);
        }
        assert_eq!(w.mean(), Some(6.0));
        w.push(65 * S, 13.0);
        // The sample at 0 s left: mean of 1..=13.
        assert_eq!(w.mean(), Some(7.0));
    }
}
