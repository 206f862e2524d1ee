//! Per-route totals of one target: requests by status, CPU, latency. What the exporter, `monitor
//! stat` and the alert rules read.
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{route_table::Route, thread_cpu::Work};

/// Upper bounds (seconds) of `app_request_duration_seconds`' buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Durations kept per route for percentiles (the most recent ones).
const RECENT_KEPT: usize = 2048;

#[derive(Clone, Debug, Default)]
pub struct RouteStats {
    /// Finished requests by HTTP status (0: the connection closed before any response).
    pub statuses: BTreeMap<u16, u64>,
    pub cpu_ns: u64,
    /// Syscalls made while the route's requests ran (booked like its CPU).
    pub syscalls: u64,
    /// Cumulative counts per bucket of DURATION_BUCKETS (the last is +Inf).
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum_s: f64,
    /// (finish instant, duration) of the latest requests, oldest first.
    pub recent: VecDeque<(u64, f64)>,
}

impl RouteStats {
    pub fn count(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// The `q` quantile of the durations finished after `since_ns` (None without any).
    pub fn quantile_since(&self, since_ns: u64, q: f64) -> Option<f64> {
        let mut d: Vec<f64> = self
            .recent
            .iter()
            .filter(|(t, _)| *t >= since_ns)
            .map(|(_, d)| *d)
            .collect();
        quantile(&mut d, q)
    }
}

/// The `q` quantile (nearest rank) of `values`.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pub routes: HashMap<Route, RouteStats>,
}

impl Ledger {
    pub fn add_work(&mut self, route: &Route, work: Work) {
        // Monitor's own requests (an empty template) are nobody's.
        if !work.is_empty() && !route.template.is_empty() {
            let s = self.stats(route);
            s.cpu_ns += work.cpu_ns;
            s.syscalls += work.syscalls;
        }
    }

    pub fn finish(&mut self, route: &Route, status: u16, at_ns: u64, duration_s: f64) {
        if route.template.is_empty() {
            return;
        }
        let s = self.stats(route);
        *s.statuses.entry(status).or_default() += 1;
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&b| duration_s <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        for b in &mut s.buckets[bucket..] {
            *b += 1;
        }
        s.duration_sum_s += duration_s;
        if s.recent.len() == RECENT_KEPT {
            s.recent.pop_front();
        }
        s.recent.push_back((at_ns, duration_s));
    }

    fn stats(&mut self, route: &Route) -> &mut RouteStats {
        if !self.routes.contains_key(route) {
            self.routes.insert(route.clone(), RouteStats::default());
        }
        self.routes.get_mut(route).expect("inserted above")
    }

    pub fn attributed_ns(&self) -> u64 {
        self.routes.values().map(|s| s.cpu_ns).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::http_line::Method;

    #[test]
    fn buckets_are_cumulative_and_quantiles_nearest_rank() {
        let mut l = Ledger::default();
        let r = Route {
            method: Method::Get,
            template: "/x".into(),
        };
        for (i, d) in [0.002, 0.02, 0.2, 2.0].into_iter().enumerate() {
            l.finish(&r, 200, i as u64, d);
        }
        let s = &l.routes[&r];
        assert_eq!(s.count(), 4);
        assert_eq!(s.buckets[1], 1); // <= 2.5 ms
        assert_eq!(s.buckets[DURATION_BUCKETS.len()], 4);
        assert_eq!(s.quantile_since(0, 0.5), Some(0.02));
        assert_eq!(s.quantile_since(0, 0.99), Some(2.0));
        assert_eq!(s.quantile_since(3, 0.5), Some(2.0));
    }
}
