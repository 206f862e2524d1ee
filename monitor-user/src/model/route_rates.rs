//! Per-route rates over the last sampling interval, from the request ledger's totals: what the
//! alert rules on routes (`request_rate`, `request_cpu_percent`, `request_p99_seconds`) and the
//! spike detector's route context read.
//!
//! Each route is also summed over its methods (selector `/template`) and all routes together
//! (selector ``), so a rule can watch one route of one method, one template, or every request.
use std::collections::{BTreeMap, HashMap};

use crate::requests::{ledger::Ledger, route_table::Route};

/// What one selector did in the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteInterval {
    /// Finished requests per second.
    pub requests_per_sec: f64,
    /// Attributed CPU, in percent of the target's CPU capacity: the same unit as the
    /// target's `cpu_percent` (its effective limit in cores, the host's CPUs by default).
    pub cpu_percent: f64,
    /// The 99th percentile latency of the requests finished in the interval (None without any).
    pub p99_seconds: Option<f64>,
}

/// The selector of one route: `METHOD /template`.
pub fn selector(route: &Route) -> String {
    format!("{} {}", route.method.as_str(), route.template)
}

#[derive(Default)]
pub struct RouteRates {
    /// Totals at the last update: (requests, cpu ns) per route, and when.
    last: HashMap<Route, (u64, u64)>,
    last_ns: Option<u64>,
}

impl RouteRates {
    /// The interval from the last update to `now_ns` (CLOCK_MONOTONIC, the ledger's clock),
    /// CPU in percent of `cores`; empty on the first call, which only sets the baseline.
    pub fn update(
        &mut self,
        ledger: &Ledger,
        now_ns: u64,
        cores: f64,
    ) -> BTreeMap<String, RouteInterval> {
        let since = self.last_ns.replace(now_ns);
        let mut out = BTreeMap::new();
        let Some(since) = since.filter(|&s| now_ns > s) else {
            self.last = totals(ledger);
            return out;
        };
        let secs = (now_ns - since) as f64 / 1e9;
        let cores = if cores > 0.0 { cores } else { 1.0 };
        let mut durations: HashMap<String, Vec<f64>> = HashMap::new();
        for (route, stats) in &ledger.routes {
            let (count, cpu) = (stats.count(), stats.cpu_ns);
            let (c0, n0) = self.last.get(route).copied().unwrap_or_default();
            let recent: Vec<f64> = stats
                .recent
                .iter()
                .filter(|(t, _)| *t > since && *t <= now_ns)
                .map(|(_, d)| *d)
                .collect();
            let one = RouteInterval {
                requests_per_sec: count.saturating_sub(c0) as f64 / secs,
                cpu_percent: cpu.saturating_sub(n0) as f64 / 1e9 / secs / cores * 100.0,
                p99_seconds: None,
            };
            for key in [selector(route), route.template.to_string(), String::new()] {
                let e: &mut RouteInterval = out.entry(key.clone()).or_default();
                e.requests_per_sec += one.requests_per_sec;
                e.cpu_percent += one.cpu_percent;
                durations.entry(key).or_default().extend(&recent);
            }
        }
        for (key, mut d) in durations {
            if let Some(e) = out.get_mut(&key) {
                e.p99_seconds = crate::requests::ledger::quantile(&mut d, 0.99);
            }
        }
        self.last = totals(ledger);
        out
    }
}

fn totals(ledger: &Ledger) -> HashMap<Route, (u64, u64)> {
    ledger
        .routes
        .iter()
        .map(|(r, s)| (r.clone(), (s.count(), s.cpu_ns)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::{http_line::Method, thread_cpu::Work};

    fn route(method: Method, t: &str) -> Route {
        Route {
            method,
            template: t.into(),
        }
    }

    #[test]
    fn rates_per_route_per_template_and_in_all() {
        let (get, post) = (
            route(Method::Get, "/o/{id}"),
            route(Method::Post, "/o/{id}"),
        );
        let mut ledger = Ledger::default();
        let mut rates = RouteRates::default();
        ledger.finish(&get, 200, 500, 0.010);
        assert!(
            rates.update(&ledger, 1_000, 1.0).is_empty(),
            "the first call is the baseline"
        );
        // 2 s later: 4 GETs (10..40 ms) and 2 POSTs, 0.5 s and 0.1 s of CPU.
        for (i, d) in [0.01, 0.02, 0.03, 0.04].into_iter().enumerate() {
            ledger.finish(&get, 200, 1_000 + i as u64 + 1, d);
        }
        ledger.finish(&post, 201, 1_500, 0.5);
        ledger.finish(&post, 201, 1_600, 0.6);
        ledger.add_work(
            &get,
            Work {
                cpu_ns: 500_000_000,
                syscalls: 0,
            },
        );
        ledger.add_work(
            &post,
            Work {
                cpu_ns: 100_000_000,
                syscalls: 0,
            },
        );
        let r = rates.update(&ledger, 2_000_001_000, 1.0);
        let g = &r["GET /o/{id}"];
        assert_eq!(g.requests_per_sec, 2.0);
        assert!((g.cpu_percent - 25.0).abs() < 1e-9);
        assert_eq!(g.p99_seconds, Some(0.04));
        let t = &r["/o/{id}"];
        assert_eq!(t.requests_per_sec, 3.0);
        assert!((t.cpu_percent - 30.0).abs() < 1e-9);
        assert_eq!(t.p99_seconds, Some(0.6));
        assert_eq!(r[""].requests_per_sec, 3.0);
        // Nothing new: zero rates, no latency.
        let r = rates.update(&ledger, 4_000_001_000, 2.0);
        assert_eq!(r["GET /o/{id}"], RouteInterval::default());
    }
}
