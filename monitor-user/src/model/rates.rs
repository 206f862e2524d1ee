//! Rates between consecutive samples, peaks and 1-minute averages, per target.
use std::collections::BTreeMap;

use crate::{
    collect::limits::Limits, collect::sample::Sample, collect::syscall_names::syscall_name,
    model::window::Window,
};

const NS_PER_SEC: f64 = 1e9;
pub const MIB: f64 = 1024.0 * 1024.0;

pub struct Model {
    pub limits: Limits,
    /// The newest sample, with the slow-cadence gauges carried over from when they were read.
    pub latest: Option<Sample>,
    pub cpu_percent: Option<f64>,
    pub cpu_peak: Window,
    pub cpu_avg_1m: Window,
    pub memory_peak: Window,
    pub memory_avg_1m: Window,
    /// Event rates over the last CPU/memory interval.
    pub rates: Option<Rates>,
}

/// Per-second rates between two samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub faults: f64,
    pub switches: f64,
    /// Kernel-side rates; None in /proc-only mode.
    pub kernel: Option<KernelRates>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelRates {
    pub syscalls: f64,
    pub fd_opens: f64,
    pub fd_open_errors: f64,
    /// syscall name -> (calls per second, seconds inside the call per second)
    pub per_syscall: BTreeMap<String, (f64, f64)>,
}

impl Model {
    pub fn new(limits: Limits, peak_span_ns: u64) -> Self {
        Self {
            limits,
            latest: None,
            cpu_percent: None,
            cpu_peak: Window::new(peak_span_ns),
            cpu_avg_1m: Window::new(60_000_000_000),
            memory_peak: Window::new(peak_span_ns),
            memory_avg_1m: Window::new(60_000_000_000),
            rates: None,
        }
    }

    pub fn update(&mut self, mut sample: Sample) {
        if let Some(prev) = &self.latest {
            self.cpu_percent = cpu_percent(prev, &sample, self.limits.cpus);
            self.rates = rates(prev, &sample);
            sample.vms_bytes = sample.vms_bytes.or(prev.vms_bytes);
            sample.open_fds = sample.open_fds.or(prev.open_fds);
            sample.threads = sample.threads.or(prev.threads);
        }
        if let Some(cpu) = self.cpu_percent {
            self.cpu_peak.push(sample.at_ns, cpu);
            self.cpu_avg_1m.push(sample.at_ns, cpu);
        }
        if sample.up {
            let mb = sample.rss_bytes as f64 / MIB;
            self.memory_peak.push(sample.at_ns, mb);
            self.memory_avg_1m.push(sample.at_ns, mb);
        }
        self.latest = Some(sample);
    }

    pub fn memory_percent(&self) -> Option<f64> {
        let s = self.latest.as_ref()?;
        (self.limits.memory_bytes > 0)
            .then(|| 100.0 * s.rss_bytes as f64 / self.limits.memory_bytes as f64)
    }
}

/// Share of the available CPUs used between two samples; None when time did not advance or the
/// counter went backwards (a reset is not a negative load).
pub fn cpu_percent(prev: &Sample, cur: &Sample, cpus: f64) -> Option<f64> {
    let wall = cur.at_ns.checked_sub(prev.at_ns).filter(|&d| d > 0)?;
    let busy = cur.oncpu_ns.checked_sub(prev.oncpu_ns)?;
    Some(100.0 * busy as f64 / (wall as f64 * cpus.max(f64::MIN_POSITIVE)))
}

/// Per-second rates between two samples; None when time did not advance.
pub fn rates(prev: &Sample, cur: &Sample) -> Option<Rates> {
    let secs = cur.at_ns.checked_sub(prev.at_ns).filter(|&d| d > 0)? as f64 / NS_PER_SEC;
    let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let kernel = match (&prev.kernel, &cur.kernel) {
        (Some(p), Some(c)) => {
            let before: BTreeMap<u32, (u64, u64)> = p
                .syscalls
                .iter()
                .map(|(nr, s)| (*nr, (s.count, s.total_ns)))
                .collect();
            let mut per_syscall = BTreeMap::new();
            let mut total = 0.0;
            for (nr, s) in &c.syscalls {
                let (c0, t0) = before.get(nr).copied().unwrap_or_default();
                let calls = per_sec(c0, s.count);
                if calls > 0.0 {
                    total += calls;
                    per_syscall.insert(
                        syscall_name(*nr).into_owned(),
                        (calls, per_sec(t0, s.total_ns) / NS_PER_SEC),
                    );
                }
            }
            Some(KernelRates {
                syscalls: total,
                fd_opens: per_sec(p.fd_opens, c.fd_opens),
                fd_open_errors: per_sec(p.fd_open_errors, c.fd_open_errors),
                per_syscall,
            })
        }
        _ => None,
    };
    Some(Rates {
        faults: per_sec(
            prev.minor_faults + prev.major_faults,
            cur.minor_faults + cur.major_faults,
        ),
        switches: per_sec(
            prev.switches_voluntary + prev.switches_involuntary,
            cur.switches_voluntary + cur.switches_involuntary,
        ),
        kernel,
    })
}

/// Seconds from nanoseconds, for `_seconds` series.
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / NS_PER_SEC
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cpus: f64) -> Limits {
        Limits::host(1 << 30, cpus)
    }

    fn sample(at_s: u64, oncpu_ms: u64, rss_mb: u64) -> Sample {
        Sample {
            at_ns: at_s * 1_000_000_000,
            up: true,
            oncpu_ns: oncpu_ms * 1_000_000,
            rss_bytes: rss_mb << 20,
            ..Sample::default()
        }
    }

    #[test]
    fn cpu_percent_is_of_the_available_cpus() {
        // 1 s of CPU in 5 s on 2 CPUs = 10 %.
        let p = cpu_percent(&sample(0, 0, 1), &sample(5, 1000, 1), 2.0).unwrap();
        assert!((p - 10.0).abs() < 1e-9, "{p}");
    }

    #[test]
    fn counter_going_backwards_gives_no_rate() {
        assert_eq!(
            cpu_percent(&sample(0, 500, 1), &sample(5, 100, 1), 1.0),
            None
        );
        assert_eq!(cpu_percent(&sample(5, 0, 1), &sample(5, 100, 1), 1.0), None);
    }

    #[test]
    fn model_tracks_peak_average_and_carries_slow_gauges() {
        let mut m = Model::new(limits(1.0), 300_000_000_000);
        let mut first = sample(0, 0, 100);
        first.vms_bytes = Some(4096);
        m.update(first);
        m.update(sample(5, 2500, 300)); // 50 %
        m.update(sample(10, 3000, 200)); // 10 %
        assert_eq!(m.cpu_peak.peak(), Some(50.0));
        assert!((m.cpu_avg_1m.mean().unwrap() - 30.0).abs() < 1e-9);
        assert_eq!(m.memory_peak.peak(), Some(300.0));
        assert_eq!(m.memory_avg_1m.mean(), Some(200.0));
        assert_eq!(m.latest.as_ref().unwrap().vms_bytes, Some(4096));
        let pct = m.memory_percent().unwrap();
        assert!((pct - 200.0 / 1024.0 * 100.0).abs() < 1e-9);
    }
}
