//! Recording rules for dashboards, named `level:metric:operations` as Prometheus advises: the
//! per-target rates of the kernel counters, the routes' request rate, CPU and p99 latency, and
//! memory against its limit. Each sums away only the labels its level leaves out, so `instance`
//! and `job` stay: two hosts with a target of the same name remain two series.
use crate::alerts::rule_file::{RecordingRule, promql_str};

pub const RECORDING_GROUP: &str = "monitor.rules";

/// On-CPU time per second: the CPU cores the target uses.
const ONCPU_RATE: &str = "target:app_oncpu_seconds:rate1m";
/// A route's CPU cores, which its share divides.
const ROUTE_CPU_RATE: &str = "target_method_route:app_request_cpu_seconds:rate1m";

/// The recording rules over the series of `target` (empty: every target). Rates are over 1
/// minute, like the target alerts' request rules: 1 minute of 5 s samples, and at least two
/// scrapes at any interval up to 30 s.
pub fn recording_rules(target: &str) -> Vec<RecordingRule> {
    let selector = if target.is_empty() {
        String::new()
    } else {
        format!("{{target={}}}", promql_str(target))
    };
    let series = |name: &str| format!("{name}{selector}");
    let rate = |name: &str| format!("rate({}[1m])", series(name));
    let summed = |without: &str, name: &str| format!("sum without ({without}) ({})", rate(name));
    let p99 = |buckets: String| format!("histogram_quantile(0.99, {buckets})");
    let rule = |record, expr| RecordingRule { record, expr };
    vec![
        rule(ONCPU_RATE, rate("app_oncpu_seconds_total")),
        // RSS over the binding limit as a ratio. `min without (source)`: the limit's series
        // changes its `source` when another limit starts to bind, and a scrape may catch the
        // old and the new one together; the smaller binds.
        rule(
            "target:app_memory_utilisation:ratio",
            format!(
                "{} / min without (source) ({})",
                series("app_resident_memory_bytes"),
                series("app_memory_limit_bytes")
            ),
        ),
        rule(
            "target:app_syscalls:rate1m",
            summed("syscall", "app_syscalls_total"),
        ),
        rule(
            "target:app_page_faults:rate1m",
            summed("kind", "app_page_faults_total"),
        ),
        rule(
            "target:app_context_switches:rate1m",
            summed("kind", "app_context_switches_total"),
        ),
        rule("target:app_fd_opens:rate1m", rate("app_fd_opens_total")),
        rule(
            "target:app_fd_open_errors:rate1m",
            summed("errno", "app_fd_open_errors_total"),
        ),
        rule(
            "target:app_requests:rate1m",
            summed("method, route, status", "app_requests_total"),
        ),
        rule(
            "target_method_route:app_requests:rate1m",
            summed("status", "app_requests_total"),
        ),
        rule(ROUTE_CPU_RATE, rate("app_request_cpu_seconds_total")),
        // Of the target's on-CPU time; an idle target (no CPU at all) has no share rather
        // than 0/0.
        rule(
            "target_method_route:app_request_cpu_seconds:share_rate1m",
            format!("{ROUTE_CPU_RATE} / ignoring (method, route) group_left () ({ONCPU_RATE} > 0)"),
        ),
        rule(
            "target:app_request_duration_seconds:p99_rate1m",
            p99(summed(
                "method, route",
                "app_request_duration_seconds_bucket",
            )),
        ),
        rule(
            "target_method_route:app_request_duration_seconds:p99_rate1m",
            p99(rate("app_request_duration_seconds_bucket")),
        ),
    ]
}
