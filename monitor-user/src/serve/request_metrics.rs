//! The request series, read from the tracker at each scrape: counters and a histogram whose
//! values the tracker already keeps, so nothing is counted twice and no series is updated on
//! the hot path.
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use prometheus::{
    core::{Collector, Desc},
    proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::requests::{SharedTracker, ledger::DURATION_BUCKETS};

const REQUESTS: &str = "app_requests_total";
const DURATION: &str = "app_request_duration_seconds";
const CPU: &str = "app_request_cpu_seconds_total";
const SYSCALLS: &str = "app_request_syscalls_total";
const UNATTRIBUTED: &str = "app_unattributed_cpu_seconds_total";
const LOST: &str = "monitor_request_events_lost_total";
const DROPPED: &str = "monitor_request_routes_dropped_total";
const BAD_TAGS: &str = "monitor_request_bad_tags_total";

const FAMILIES: [(&str, &str, &[&str]); 8] = [
    (
        REQUESTS,
        "Finished HTTP requests by method, route template and status (0: closed before any response)",
        &["target", "method", "route", "status"],
    ),
    (
        DURATION,
        "Time from reading a request to the last write of its response",
        &["target", "method", "route"],
    ),
    (
        CPU,
        "On-CPU time attributed to requests of each route (README: Request types)",
        &["target", "method", "route"],
    ),
    (
        SYSCALLS,
        "Syscalls made by the threads while they worked for requests of each route",
        &["target", "method", "route"],
    ),
    (
        UNATTRIBUTED,
        "On-CPU time of the target that belongs to no request (app_oncpu_seconds_total minus the routes' CPU)",
        &["target"],
    ),
    (
        LOST,
        "Request events the kernel's ring buffer had no room for",
        &["target"],
    ),
    (
        DROPPED,
        "Requests counted under the route other because the target reached its cap of distinct routes",
        &["target"],
    ),
    (
        BAD_TAGS,
        "Explicit tags (monitor:... written to fd -1) that were not understood (README: Explicit tags)",
        &["target"],
    ),
];

pub struct RequestMetrics {
    target: String,
    tracker: SharedTracker,
    /// The target's on-CPU total (app_oncpu_seconds_total), set by the exporter at each sample.
    oncpu_ns: Arc<AtomicU64>,
    /// The last unattributed value served: the counter never goes back when the routes' CPU
    /// runs ahead of the sampled total between samples.
    unattributed_ns: Mutex<u64>,
    descs: Vec<Desc>,
}

impl RequestMetrics {
    pub fn new(
        target: &str,
        tracker: SharedTracker,
        oncpu_ns: Arc<AtomicU64>,
    ) -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            target: target.to_owned(),
            tracker,
            oncpu_ns,
            unattributed_ns: Mutex::new(0),
            descs,
        })
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn family(name: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    let help = FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, h, _)| *h)
        .unwrap_or_default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for RequestMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let t = self.target.as_str();
        let Ok(tracker) = self.tracker.lock() else {
            return Vec::default();
        };
        let Some(target) = tracker.target(0) else {
            return Vec::default();
        };
        let ledger = &target.ledger;
        let mut routes: Vec<_> = ledger.routes.iter().collect();
        routes.sort_by(|a, b| (a.0.method, &*a.0.template).cmp(&(b.0.method, &*b.0.template)));
        let (mut requests, mut durations) = (Vec::new(), Vec::new());
        let (mut cpu, mut syscalls) = (Vec::new(), Vec::new());
        for (route, stats) in routes {
            let (method, template) = (route.method.as_str(), &*route.template);
            for (status, n) in &stats.statuses {
                let status = status.to_string();
                requests.push(counter(
                    &[
                        ("target", t),
                        ("method", method),
                        ("route", template),
                        ("status", &status),
                    ],
                    *n as f64,
                ));
            }
            cpu.push(counter(
                &[("target", t), ("method", method), ("route", template)],
                stats.cpu_ns as f64 / 1e9,
            ));
            syscalls.push(counter(
                &[("target", t), ("method", method), ("route", template)],
                stats.syscalls as f64,
            ));
            if stats.count() > 0 {
                let mut h = Histogram::default();
                h.set_sample_count(stats.count());
                h.set_sample_sum(stats.duration_sum_s);
                h.set_bucket(
                    DURATION_BUCKETS
                        .iter()
                        .zip(stats.buckets)
                        .map(|(&upper, n)| {
                            let mut b = Bucket::default();
                            b.set_upper_bound(upper);
                            b.set_cumulative_count(n);
                            b
                        })
                        .collect(),
                );
                let mut m = Metric::default();
                m.set_label(labels(&[
                    ("target", t),
                    ("method", method),
                    ("route", template),
                ]));
                m.set_histogram(h);
                durations.push(m);
            }
        }
        let unattributed = {
            let oncpu = self.oncpu_ns.load(Ordering::Relaxed);
            let mut last = self
                .unattributed_ns
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *last = (*last).max(oncpu.saturating_sub(ledger.attributed_ns()));
            *last
        };
        vec![
            family(REQUESTS, MetricType::COUNTER, requests),
            family(DURATION, MetricType::HISTOGRAM, durations),
            family(CPU, MetricType::COUNTER, cpu),
            family(SYSCALLS, MetricType::COUNTER, syscalls),
            family(
                UNATTRIBUTED,
                MetricType::COUNTER,
                vec![counter(&[("target", t)], unattributed as f64 / 1e9)],
            ),
            family(
                LOST,
                MetricType::COUNTER,
                vec![counter(&[("target", t)], tracker.events_lost as f64)],
            ),
            family(
                DROPPED,
                MetricType::COUNTER,
                vec![counter(&[("target", t)], target.table.dropped() as f64)],
            ),
            family(
                BAD_TAGS,
                MetricType::COUNTER,
                vec![counter(&[("target", t)], tracker.bad_tags as f64)],
            ),
        ]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
    }
}
