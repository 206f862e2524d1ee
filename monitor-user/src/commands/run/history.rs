//! What the daemon hands the history store after each sample: the `app_*` gauges and counters
//! of its registry, as /metrics serves them (histograms are left out: their buckets would
//! outweigh everything else, and the report reads rates and gauges).
use std::time::SystemTime;

use prometheus::{Registry, proto::MetricType};

use crate::store::{
    series::{SeriesKey, TARGET_LABEL},
    unix_ms,
    writer::{Batch, Point},
};

/// The families stored: the application's series, not the daemon's own.
const PREFIX: &str = "app_";

/// The registry's `app_*` gauges and counters now, taken at `at`.
pub fn batch(registry: &Registry, at: SystemTime) -> Batch {
    let t_ms = unix_ms(at);
    let mut points = Vec::new();
    for family in registry.gather() {
        if !family.name().starts_with(PREFIX) {
            continue;
        }
        let kind = match family.get_field_type() {
            MetricType::GAUGE => "gauge",
            MetricType::COUNTER => "counter",
            _ => continue,
        };
        for m in family.get_metric() {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            let target = labels
                .iter()
                .find(|(k, _)| *k == TARGET_LABEL)
                .map_or("", |(_, v)| v);
            let value = match kind {
                "gauge" => m.get_gauge().get_value(),
                _ => m.get_counter().get_value(),
            };
            points.push(Point {
                key: SeriesKey::new(target, family.name(), &labels),
                kind,
                value,
            });
        }
    }
    Batch { t_ms, points }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntGauge, Opts};

    #[test]
    fn app_gauges_and_counters_with_their_labels_and_nothing_else() {
        let r = Registry::new();
        let g = GaugeVec::new(Opts::new("app_cpu_usage_percent", "h"), &["target"]).unwrap();
        let c =
            CounterVec::new(Opts::new("app_syscalls_total", "h"), &["target", "syscall"]).unwrap();
        let h = HistogramVec::new(
            HistogramOpts::new("app_request_duration_seconds", "h"),
            &["target"],
        )
        .unwrap();
        let own = IntGauge::new("monitor_alerts_firing", "h").unwrap();
        r.register(Box::new(g.clone())).unwrap();
        r.register(Box::new(c.clone())).unwrap();
        r.register(Box::new(h.clone())).unwrap();
        r.register(Box::new(own.clone())).unwrap();
        g.with_label_values(&["api"]).set(12.5);
        c.with_label_values(&["api", "read"]).inc_by(7.0);
        h.with_label_values(&["api"]).observe(0.1);
        own.set(1);
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let b = batch(&r, at);
        assert_eq!(b.t_ms, 1_700_000_000_123);
        assert_eq!(
            b.points,
            vec![
                Point {
                    key: SeriesKey::new("api", "app_cpu_usage_percent", &[]),
                    kind: "gauge",
                    value: 12.5
                },
                Point {
                    key: SeriesKey::new("api", "app_syscalls_total", &[("syscall", "read")]),
                    kind: "counter",
                    value: 7.0
                },
            ]
        );
    }
}
