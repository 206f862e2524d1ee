//! What the alert stages read of the model: the named series rules watch and the interval the
//! spike detector compares, request types included. Here, not in the model, so that the model
//! knows nothing downstream.
use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{clock::Now, engine::Snapshot, rules::UP, spike::Interval};
use crate::model::{MIB, Model, route_rates::RouteInterval};

/// Request types over the last interval, by selector (model::route_rates).
pub type Routes = BTreeMap<String, RouteInterval>;

/// The series rules watch (alerts::rules::METRICS), for the newest sample. Only `up` (0) while
/// the target is down: its other series are gone, not zero, and the engine resolves their
/// alerts.
pub fn snapshot(model: &Model, routes: &Routes, at: Now) -> Snapshot {
    let mut values = BTreeMap::new();
    let up = model.latest.as_ref().is_some_and(|s| s.up);
    if let Some(s) = &model.latest {
        values.insert(UP, if s.up { 1.0 } else { 0.0 });
    }
    if let Some(s) = model.latest.as_ref().filter(|s| s.up) {
        let mut put = |k: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                values.insert(k, v);
            }
        };
        put("cpu_percent", model.cpu_percent);
        put("cpu_avg_1m", model.cpu_avg_1m.mean());
        put("memory_percent", model.memory_percent());
        put("rss_mb", Some(s.rss_bytes as f64 / MIB));
        put("vms_mb", s.vms_bytes.map(|b| b as f64 / MIB));
        put("open_fds", s.open_fds.map(|v| v as f64));
        put("threads", s.threads.map(|v| v as f64));
        put("processes", Some(s.processes as f64));
        if let Some(r) = &model.rates {
            put("fault_rate", Some(r.faults));
            put("context_switch_rate", Some(r.switches));
            if let Some(k) = &r.kernel {
                put("syscall_rate", Some(k.syscalls));
                put("fd_open_rate", Some(k.fd_opens));
                put("fd_open_error_rate", Some(k.fd_open_errors));
            }
        }
    }
    Snapshot {
        at,
        values,
        routes: if up { routes.clone() } else { Routes::new() },
    }
}

/// The last interval, for CPU spike detection.
pub fn interval(model: &Model, routes: &Routes, at: SystemTime) -> Option<Interval> {
    let cpu = model.cpu_percent?;
    let r = model.rates.as_ref()?;
    let k = r.kernel.clone().unwrap_or_default();
    Some(Interval {
        at_unix_ms: at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        cpu_percent: cpu,
        syscalls: k.per_syscall,
        faults_per_sec: r.faults,
        fd_opens_per_sec: k.fd_opens,
        switches_per_sec: r.switches,
        // Routes of one method each (`GET /t`, `TAG n`), not their sums.
        route_cpu_percent: routes
            .iter()
            .filter(|(k, _)| k.contains(' '))
            .map(|(k, v)| (k.clone(), v.cpu_percent))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{limits::Limits, sample::Sample};

    fn model() -> Model {
        let limits = Limits::host(1 << 30, 1.0);
        Model::new(limits, 60_000_000_000)
    }

    #[test]
    fn a_down_target_has_only_up_in_its_snapshot() {
        let mut m = model();
        m.update(Sample {
            at_ns: 1_000_000_000,
            up: true,
            processes: 2,
            rss_bytes: 100 << 20,
            ..Sample::default()
        });
        let live = snapshot(&m, &Routes::new(), Now::read());
        assert_eq!(live.values["up"], 1.0);
        assert_eq!(live.values["rss_mb"], 100.0);
        assert_eq!(live.values["processes"], 2.0);
        // The target's last process exits: rules see it gone, not zeros.
        m.update(Sample {
            at_ns: 6_000_000_000,
            up: false,
            ..Sample::default()
        });
        let down = snapshot(&m, &Routes::new(), Now::read());
        assert_eq!(down.values, BTreeMap::from([("up", 0.0)]));
        // Before the first sample nothing is known, not even whether it is up.
        assert!(
            snapshot(&model(), &Routes::new(), Now::read())
                .values
                .is_empty()
        );
    }
}
