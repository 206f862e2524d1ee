//! CPU spike detection with the syscall context that explains it.
//!
//! A spike is an interval whose CPU % is above a static threshold, or far above a robust baseline
//! of the preceding intervals (median + k * MAD, with an absolute floor so a flat idle process does
//! not "spike" from 0.1 % to 0.5 %). For each spike the detector reports what changed against the
//! baseline: the syscalls whose rate and time grew most, the request types whose CPU grew most,
//! faults, fd opens and context switches.
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// What happened during one sampling interval, as rates per second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interval {
    /// Wall-clock end of the interval, ms since the Unix epoch.
    pub at_unix_ms: u64,
    pub cpu_percent: f64,
    /// syscall name -> (calls per second, seconds in the syscall per second)
    pub syscalls: BTreeMap<String, (f64, f64)>,
    pub faults_per_sec: f64,
    pub fd_opens_per_sec: f64,
    pub switches_per_sec: f64,
    /// "METHOD /template" (or "TAG name") -> attributed CPU, % of one core.
    pub route_cpu_percent: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpikeConfig {
    /// CPU % at or above which an interval is a spike whatever the baseline.
    pub above_percent: f64,
    /// Robust threshold: median + k * MAD of the baseline.
    pub mad_k: f64,
    /// A spike must also be this many points above the baseline median.
    pub min_rise_percent: f64,
    /// Intervals in the baseline window.
    pub baseline_intervals: usize,
    /// Syscalls listed in the context.
    pub top: usize,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            above_percent: 90.0,
            mad_k: 5.0,
            min_rise_percent: 20.0,
            baseline_intervals: 12,
            top: 5,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct SyscallChange {
    pub syscall: String,
    /// Calls per second above the baseline mean.
    pub added_calls_per_sec: f64,
    /// Seconds per second spent in the call above the baseline mean.
    pub added_seconds_per_sec: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct RouteChange {
    pub route: String,
    /// The route's CPU in the spike interval, % of one core.
    pub cpu_percent: f64,
    /// Above its baseline mean.
    pub added_cpu_percent: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
pub struct SpikeEvent {
    pub kind: String,
    pub at_unix_ms: u64,
    pub cpu_percent: f64,
    pub baseline_median_percent: f64,
    pub baseline_mad_percent: f64,
    /// "static" (above the fixed threshold) or "baseline" (median + k * MAD).
    pub trigger: String,
    pub top_syscalls_by_calls: Vec<SyscallChange>,
    pub top_syscalls_by_time: Vec<SyscallChange>,
    /// The request types whose CPU grew most (empty without the requests family).
    #[serde(default)]
    pub top_routes_by_cpu: Vec<RouteChange>,
    pub added_faults_per_sec: f64,
    pub added_fd_opens_per_sec: f64,
    pub added_switches_per_sec: f64,
}

impl SpikeEvent {
    /// One line for alert annotations and logs.
    pub fn summary(&self) -> String {
        let top: Vec<String> = self
            .top_syscalls_by_calls
            .iter()
            .take(3)
            .map(|c| format!("{} +{:.0}/s", c.syscall, c.added_calls_per_sec))
            .collect();
        let routes: Vec<String> = self
            .top_routes_by_cpu
            .iter()
            .take(3)
            .map(|r| format!("{} +{:.1}% CPU", r.route, r.added_cpu_percent))
            .collect();
        let routes = if routes.is_empty() {
            String::new()
        } else {
            format!("; top routes {}", routes.join(", "))
        };
        format!(
            "CPU {:.1}% vs baseline {:.1}%{routes}; top syscalls {}; faults +{:.0}/s, fd opens +{:.0}/s, switches +{:.0}/s",
            self.cpu_percent,
            self.baseline_median_percent,
            if top.is_empty() {
                "none".to_string()
            } else {
                top.join(", ")
            },
            self.added_faults_per_sec,
            self.added_fd_opens_per_sec,
            self.added_switches_per_sec
        )
    }
}

pub struct SpikeDetector {
    config: SpikeConfig,
    baseline: VecDeque<Interval>,
    in_spike: bool,
}

impl SpikeDetector {
    pub fn new(config: SpikeConfig) -> Self {
        Self {
            config,
            baseline: VecDeque::new(),
            in_spike: false,
        }
    }

    /// Feeds one interval; returns an event when a spike starts (one event per spike, however
    /// many intervals it lasts). Spike intervals do not enter the baseline.
    pub fn observe(&mut self, interval: Interval) -> Option<SpikeEvent> {
        let cpus: Vec<f64> = self.baseline.iter().map(|i| i.cpu_percent).collect();
        let median = median(&cpus);
        let mad = median
            .map(|m| median_abs_deviation(&cpus, m))
            .unwrap_or(0.0);
        let c = &self.config;
        let warmed_up = cpus.len() >= (c.baseline_intervals / 2).max(3);
        let trigger = if interval.cpu_percent >= c.above_percent {
            Some("static")
        } else if let (true, Some(m)) = (warmed_up, median) {
            let robust = interval.cpu_percent > m + c.mad_k * mad;
            let rise = interval.cpu_percent >= m + c.min_rise_percent;
            (robust && rise).then_some("baseline")
        } else {
            None
        };
        let Some(trigger) = trigger else {
            self.in_spike = false;
            self.baseline.push_back(interval);
            while self.baseline.len() > c.baseline_intervals {
                self.baseline.pop_front();
            }
            return None;
        };
        if std::mem::replace(&mut self.in_spike, true) {
            return None;
        }
        Some(self.context(&interval, trigger, median.unwrap_or(0.0), mad))
    }

    fn context(&self, spike: &Interval, trigger: &str, median: f64, mad: f64) -> SpikeEvent {
        let n = self.baseline.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Interval) -> f64| self.baseline.iter().map(f).sum::<f64>() / n;
        let mut changes: Vec<SyscallChange> = spike
            .syscalls
            .iter()
            .map(|(name, &(calls, secs))| {
                let base_calls = mean(&|i| i.syscalls.get(name).map_or(0.0, |s| s.0));
                let base_secs = mean(&|i| i.syscalls.get(name).map_or(0.0, |s| s.1));
                SyscallChange {
                    syscall: name.clone(),
                    added_calls_per_sec: calls - base_calls,
                    added_seconds_per_sec: secs - base_secs,
                }
            })
            .filter(|c| c.added_calls_per_sec > 0.0 || c.added_seconds_per_sec > 0.0)
            .collect();
        let top = self.config.top;
        changes.sort_by(|a, b| b.added_calls_per_sec.total_cmp(&a.added_calls_per_sec));
        let by_calls: Vec<SyscallChange> = changes.iter().take(top).cloned().collect();
        changes.sort_by(|a, b| b.added_seconds_per_sec.total_cmp(&a.added_seconds_per_sec));
        let by_time: Vec<SyscallChange> = changes.into_iter().take(top).collect();
        let mut routes: Vec<RouteChange> = spike
            .route_cpu_percent
            .iter()
            .map(|(route, &cpu)| RouteChange {
                route: route.clone(),
                cpu_percent: cpu,
                added_cpu_percent: cpu
                    - mean(&|i| i.route_cpu_percent.get(route).copied().unwrap_or(0.0)),
            })
            .filter(|r| r.added_cpu_percent > 0.0)
            .collect();
        routes.sort_by(|a, b| {
            b.added_cpu_percent
                .total_cmp(&a.added_cpu_percent)
                .then_with(|| a.route.cmp(&b.route))
        });
        routes.truncate(top);
        SpikeEvent {
            kind: "cpu_spike".into(),
            at_unix_ms: spike.at_unix_ms,
            cpu_percent: spike.cpu_percent,
            baseline_median_percent: median,
            baseline_mad_percent: mad,
            trigger: trigger.into(),
            top_syscalls_by_calls: by_calls,
            top_syscalls_by_time: by_time,
            top_routes_by_cpu: routes,
            added_faults_per_sec: spike.faults_per_sec - mean(&|i| i.faults_per_sec),
            added_fd_opens_per_sec: spike.fd_opens_per_sec - mean(&|i| i.fd_opens_per_sec),
            added_switches_per_sec: spike.switches_per_sec - mean(&|i| i.switches_per_sec),
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

fn median_abs_deviation(values: &[f64], median_value: f64) -> f64 {
    let deviations: Vec<f64> = values.iter().map(|v| (v - median_value).abs()).collect();
    median(&deviations).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(t: u64, cpu: f64, syscalls: &[(&str, f64, f64)]) -> Interval {
        Interval {
            at_unix_ms: t * 5000,
            cpu_percent: cpu,
            syscalls: syscalls
                .iter()
                .map(|&(n, c, s)| (n.to_string(), (c, s)))
                .collect(),
            faults_per_sec: 10.0,
            fd_opens_per_sec: 1.0,
            switches_per_sec: 50.0,
            route_cpu_percent: BTreeMap::new(),
        }
    }

    #[test]
    fn the_route_whose_cpu_grew_is_named_first() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        let with_routes = |t, cpu, routes: &[(&str, f64)]| Interval {
            route_cpu_percent: routes.iter().map(|&(r, c)| (r.to_owned(), c)).collect(),
            ..interval(t, cpu, &[])
        };
        for t in 0..12 {
            let quiet = [("GET /orders/{id}", 4.0), ("GET /analysis/{symbol}", 1.0)];
            assert_eq!(d.observe(with_routes(t, 5.0, &quiet)), None);
        }
        let busy = [("GET /orders/{id}", 6.0), ("GET /analysis/{symbol}", 70.0)];
        let e = d.observe(with_routes(12, 77.0, &busy)).expect("a spike");
        let names: Vec<&str> = e
            .top_routes_by_cpu
            .iter()
            .map(|r| r.route.as_str())
            .collect();
        assert_eq!(names, ["GET /analysis/{symbol}", "GET /orders/{id}"]);
        assert_eq!(e.top_routes_by_cpu[0].added_cpu_percent, 69.0);
        assert!(
            e.summary().contains(
                "top routes GET /analysis/{symbol} +69.0% CPU, GET /orders/{id} +2.0% CPU"
            ),
            "{}",
            e.summary()
        );
    }

    #[test]
    fn burst_of_one_syscall_is_a_spike_with_that_syscall_on_top() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        for t in 0..12 {
            let noise = (t % 3) as f64;
            assert_eq!(
                d.observe(interval(
                    t,
                    3.0 + noise,
                    &[("epoll_wait", 100.0, 0.9), ("read", 50.0, 0.001)]
                )),
                None
            );
        }
        let e = d
            .observe(interval(
                12,
                60.0,
                &[
                    ("epoll_wait", 100.0, 0.3),
                    ("read", 50.0, 0.001),
                    ("getppid", 900_000.0, 0.2),
                ],
            ))
            .expect("a spike");
        assert_eq!(e.trigger, "baseline");
        assert_eq!(e.top_syscalls_by_calls[0].syscall, "getppid");
        assert_eq!(e.top_syscalls_by_time[0].syscall, "getppid");
        assert!(e.summary().contains("getppid +900000/s"), "{}", e.summary());
        // One event per spike, not per interval.
        assert_eq!(
            d.observe(interval(13, 65.0, &[("getppid", 900_000.0, 0.2)])),
            None
        );
        // Back to normal, then a second spike is a new event.
        assert_eq!(d.observe(interval(14, 3.0, &[])), None);
        assert!(
            d.observe(interval(15, 95.0, &[("futex", 10.0, 0.0)]))
                .is_some()
        );
    }

    #[test]
    fn noisy_load_without_a_real_rise_is_not_a_spike() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        for t in 0..200u64 {
            // 30-50 % with a 10-point swing: normal for a busy service.
            let cpu = 40.0 + 10.0 * ((t as f64) * 0.7).sin();
            assert_eq!(d.observe(interval(t, cpu, &[])), None, "t={t} cpu={cpu}");
        }
    }

    #[test]
    fn static_threshold_fires_without_a_baseline() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        let e = d
            .observe(interval(0, 99.0, &[("read", 10.0, 0.1)]))
            .unwrap();
        assert_eq!(e.trigger, "static");
        assert_eq!(e.baseline_median_percent, 0.0);
    }

    #[test]
    fn robust_statistics() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // One outlier does not move the MAD.
        assert_eq!(median_abs_deviation(&[1.0, 2.0, 3.0, 4.0, 100.0], 3.0), 1.0);
    }
}
