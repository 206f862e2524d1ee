//! The rules as a Prometheus rule file, for teams that evaluate alerts centrally.
use std::{fmt::Write as _, time::Duration};

use super::*;
use crate::alerts::rule_file::{AlertingRule, prometheus_duration, promql_str};

/// The label matchers of a route selector (`GET /t`, `/t`, `TAG name`).
fn route_matchers(route: &str) -> Vec<String> {
    match route.split_once(' ') {
        Some((method, rest)) => vec![
            format!("method={}", promql_str(method)),
            format!("route={}", promql_str(rest)),
        ],
        None => vec![format!("route={}", promql_str(route))],
    }
}

/// The PromQL expression of a rule's metric over the exporter's series, and whether it is a
/// bare selector (range selectors need one; anything else takes a subquery). `target` holds
/// the target's matcher, if any. Request metrics are over 1 minute where the daemon uses its
/// sampling interval.
fn promql(rule: &Rule, target: &[String]) -> (String, bool) {
    let metric = rule.metric;
    let join = |m: &[String]| {
        if m.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", m.join(", "))
        }
    };
    let selector = join(target);
    if is_route_metric(metric) {
        let mut m = target.to_vec();
        m.extend(
            rule.route
                .as_deref()
                .map(route_matchers)
                .unwrap_or_default(),
        );
        let s = join(&m);
        let expr = match metric {
            "request_rate" => format!("sum by (target) (rate(app_requests_total{s}[1m]))"),
            "request_cpu_percent" => {
                format!("100 * sum by (target) (rate(app_request_cpu_seconds_total{s}[1m]))")
            }
            _ => format!(
                "histogram_quantile(0.99, sum by (target, le) \
                 (rate(app_request_duration_seconds_bucket{s}[1m])))"
            ),
        };
        return (expr, false);
    }
    let selector = selector.as_str();
    let bare = |name: &str| (format!("{name}{selector}"), true);
    let rate = |name: &str| format!("rate({name}{selector}[1m])");
    let summed = |name: &str| (format!("sum by (target) ({})", rate(name)), false);
    match metric {
        "cpu_percent" => bare("app_cpu_usage_percent"),
        "cpu_avg_1m" => bare("app_cpu_usage_percent_avg_1m"),
        "memory_percent" => bare("app_memory_usage_percent"),
        "rss_mb" => (
            format!("app_resident_memory_bytes{selector} / 1048576"),
            false,
        ),
        "vms_mb" => (
            format!("app_virtual_memory_bytes{selector} / 1048576"),
            false,
        ),
        "open_fds" => bare("app_open_fds"),
        "threads" => bare("app_threads"),
        "processes" => bare("app_processes"),
        UP => bare("app_up"),
        "syscall_rate" => summed("app_syscalls_total"),
        "fault_rate" => summed("app_page_faults_total"),
        "fd_open_rate" => (rate("app_fd_opens_total"), false),
        "fd_open_error_rate" => summed("app_fd_open_errors_total"),
        _ => summed("app_context_switches_total"),
    }
}

/// The rule file's group of [`alerting_rules`] (the name predates the mixin's other groups).
pub const TARGET_ALERTS_GROUP: &str = "monitor";

/// Prometheus alerting rules equivalent to `rules`, for teams that evaluate alerts centrally.
/// `target` restricts every series to that `target` label value; empty means every target
/// (each alert then carries the `target` label of its series).
///
/// Equivalence is exact for threshold rules, `clear` included (it keeps firing through the
/// `ALERTS` series). For fitted rules PromQL has no r²: trend rules keep the slope (`deriv`,
/// the same least-squares slope) and exponential rules the growth rate of `ln(value)` and the
/// level floor, without the fit-quality gates; a note above each such rule says so. Rules on
/// any series but `up` hold nothing while the target is down (`app_up == 0`), as the engine
/// resolves their alerts then: the exporter keeps serving a down target's last gauge values,
/// on which they would fire forever.
pub fn alerting_rules(rules: &[Rule], target: &str) -> Vec<AlertingRule> {
    let target_matcher: Vec<String> = if target.is_empty() {
        Vec::new()
    } else {
        vec![format!("target={}", promql_str(target))]
    };
    let selector = if target.is_empty() {
        String::new()
    } else {
        format!("{{target={}}}", promql_str(target))
    };
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let (series, is_bare) = promql(rule, &target_matcher);
        let firing_alert = format!(
            "ALERTS{{alertname={}, alertstate=\"firing\"{}}}",
            promql_str(&rule.name),
            if target.is_empty() {
                String::new()
            } else {
                format!(", target={}", promql_str(target))
            }
        );
        let ranged = |window: Duration, inner: &str| {
            let w = prometheus_duration(window);
            if is_bare && inner == series {
                format!("{inner}[{w}]")
            } else {
                format!("({inner})[{w}:]")
            }
        };
        // Keep firing between threshold and clear only while already firing.
        let with_clear = |value: &str, direction: Direction, limit: f64, clear: f64| {
            let op = direction.op();
            if clear == limit {
                format!("{value} {op} {limit}")
            } else {
                format!(
                    "{value} {op} {limit} or ({value} {op} {clear} and on (target) {firing_alert})"
                )
            }
        };
        let unit = unit(rule.metric);
        let shown = match &rule.route {
            Some(route) => format!("{} of {route}", rule.metric),
            None => rule.metric.to_owned(),
        };
        let on_target = " on {{ $labels.target }}";
        let (mut expr, summary, description, note) = match &rule.condition {
            Condition::Threshold {
                direction,
                threshold,
                clear,
            } if rule.metric == UP => {
                let (state, text) = match direction {
                    Direction::Below => ("down", "No process of the target is alive (app_up 0)."),
                    Direction::Above => ("up", "The target has a live process (app_up 1)."),
                };
                (
                    with_clear(&series, *direction, *threshold, *clear),
                    format!("target {state}{on_target}"),
                    text.to_string(),
                    None,
                )
            }
            Condition::Threshold {
                direction,
                threshold,
                clear,
            } => (
                with_clear(&series, *direction, *threshold, *clear),
                format!(
                    "{} {} {threshold}{unit}{on_target}",
                    shown,
                    direction.word()
                ),
                format!(
                    "{} is {{{{ $value | printf \"%.2f\" }}}}{unit}, {} the {threshold}{unit} \
                     threshold.",
                    shown,
                    direction.word()
                ),
                None,
            ),
            Condition::Trend {
                direction,
                slope_per_min,
                clear,
                window,
                min_r2,
            } => (
                with_clear(
                    &format!("deriv({}) * 60", ranged(*window, &series)),
                    *direction,
                    *slope_per_min,
                    *clear,
                ),
                format!(
                    "{} changing {} {slope_per_min}{unit}/min{on_target}",
                    shown,
                    direction.word()
                ),
                format!(
                    "{} changes by {{{{ $value | printf \"%.2f\" }}}}{unit}/min over the last \
                     {}, {} the {slope_per_min}{unit}/min threshold.",
                    shown,
                    prometheus_duration(*window),
                    direction.word()
                ),
                Some(format!(
                    "monitor also requires the fit's r\u{b2} >= {min_r2}, which PromQL cannot \
                     express"
                )),
            ),
            Condition::Exponential {
                doubling_time_below,
                window,
                min_r2,
                min_level,
            } => {
                let rate_per_min =
                    std::f64::consts::LN_2 / doubling_time_below.as_secs_f64() * 60.0;
                let mut expr = format!(
                    "deriv({}) * 60 > {rate_per_min}",
                    ranged(*window, &format!("ln({series})"))
                );
                if *min_level > 0.0 {
                    let _ = write!(expr, " and {series} >= {min_level}");
                }
                (
                    expr,
                    format!("{shown} growing exponentially{on_target}"),
                    format!(
                        "{} grows by {{{{ $value | printf \"%.3f\" }}}} of itself per minute \
                         (ln-rate) over the last {}: it doubles in less than {}.",
                        shown,
                        prometheus_duration(*window),
                        prometheus_duration(*doubling_time_below)
                    ),
                    Some(format!(
                        "monitor also requires the log-linear fit's r\u{b2} >= {min_r2} and a \
                         better fit than a straight line, which PromQL cannot express"
                    )),
                )
            }
        };
        if rule.metric != UP {
            if expr.contains(" or ") {
                // `unless` binds tighter than `or`.
                expr = format!("({expr})");
            }
            let _ = write!(expr, " unless on (target) app_up{selector} == 0");
        }
        let mut labels = rule.labels.clone();
        labels.insert("severity".into(), rule.severity.as_str().into());
        let mut annotations = BTreeMap::from([
            ("summary".to_string(), format!("{}: {summary}", rule.name)),
            ("description".to_string(), description),
        ]);
        annotations.extend(rule.annotations.clone());
        out.push(AlertingRule {
            note,
            name: rule.name.clone(),
            expr,
            for_duration: rule.for_duration,
            labels,
            annotations,
        });
    }
    out
}

/// The group of [`alerting_rules`] alone, as a rule file.
#[cfg(test)]
pub fn prometheus_rules_yaml(rules: &[Rule], target: &str) -> String {
    let mut y = String::from("groups:\n");
    crate::alerts::rule_file::write_group_header(&mut y, TARGET_ALERTS_GROUP);
    for rule in alerting_rules(rules, target) {
        rule.write(&mut y);
    }
    y
}
