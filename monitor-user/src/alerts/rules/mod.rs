//! Alert rules: the built-in defaults, user rules from the `[[rule]]` array of the daemon's config
//! file, and their Prometheus equivalent for teams that evaluate alerts centrally.
//!
//! ```toml
//! [[rule]]                     # a threshold rule (kind = "threshold" is the default)
//! name = "BigRss"              # alertname; a default rule of the same name is replaced
//! metric = "rss_mb"            # one of METRICS
//! above = 50                   # or below = N
//! clear = 45                   # optional: once firing, resolves only at or below 45 (default: above)
//! for = "5s"                   # optional: how long the condition must hold (default 0s)
//! severity = "warning"         # info | warning | critical (default warning)
//! labels = { team = "db" }     # optional, added to the alert's labels
//! annotations = { runbook_url = "https://wiki.example/BigRss" }
//!
//! [[rule]]
//! name = "FdGrowth"
//! kind = "trend"               # least-squares slope over a sliding window
//! metric = "open_fds"
//! slope_per_min_above = 5      # or slope_per_min_below = N
//! window = "10m"               # default 10m
//! min_r2 = 0.8                 # how steady the slope must be, 0..1 (default 0.8)
//! clear = 2                    # optional, in the slope's unit
//!
//! [[rule]]
//! name = "CpuRunaway"
//! kind = "exponential"         # log-linear fit over a sliding window
//! metric = "cpu_percent"
//! doubling_time_below = "10m"  # default 10m
//! window = "5m"                # default 5m
//! min_r2 = 0.8                 # default 0.8
//! min_level = 5                # ignore growth while the latest value is below this (default 0)
//!
//! [[rule]]
//! name = "SlowOrders"
//! metric = "request_p99_seconds" # or request_rate (/s), request_cpu_percent (% of a core)
//! route = "GET /api/orders/{order_id}" # "METHOD /template", "/template" (all its methods),
//! above = 0.5                  # "TAG name" (tagged work); left out: every request
//! ```
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use super::Severity;

mod builtin;
mod parse;
mod prometheus;

#[cfg(test)]
pub use builtin::default_rules;
pub use builtin::with_defaults;
pub use parse::parse_rules;
#[cfg(test)]
pub use prometheus::prometheus_rules_yaml;
pub use prometheus::{TARGET_ALERTS_GROUP, alerting_rules};

/// 1 while the target has a live process, 0 once it has none (`app_up`). While it is 0 the
/// other series are absent, and the engine resolves the alerts of rules on them.
pub const UP: &str = "up";

/// The series rules can watch. The daemon feeds each evaluation a snapshot with these keys.
pub const METRICS: [&str; 17] = [
    "cpu_percent",
    "cpu_avg_1m",
    "memory_percent",
    "rss_mb",
    "vms_mb",
    "open_fds",
    "threads",
    "processes",
    "syscall_rate",
    "fault_rate",
    "fd_open_rate",
    "fd_open_error_rate",
    "context_switch_rate",
    UP,
    "request_rate",
    "request_cpu_percent",
    "request_p99_seconds",
];

/// The metrics of request types, which take a `route` selector.
pub fn is_route_metric(metric: &str) -> bool {
    metric.starts_with("request_")
}

/// The unit a metric is written with in alert texts.
pub fn unit(metric: &str) -> &'static str {
    match metric {
        "cpu_percent" | "cpu_avg_1m" | "memory_percent" | "request_cpu_percent" => "%",
        "request_p99_seconds" => " s",
        "rss_mb" | "vms_mb" => " MB",
        "open_fds" => " fds",
        "threads" => " threads",
        "processes" => " processes",
        UP => "",
        _ => "/s",
    }
}

const DEFAULT_TREND_WINDOW: Duration = Duration::from_secs(600);
const DEFAULT_EXP_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_DOUBLING: Duration = Duration::from_secs(600);
const DEFAULT_MIN_R2: f64 = 0.8;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// TOML syntax, or a value of the wrong type (toml's message names the key).
    #[error("{}:{line}: {message}", file.display())]
    Toml {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: rule {rule}: {key}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        /// The rule's quoted name, or `#N` (1-based) when it has none.
        rule: String,
        key: &'static str,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

impl Direction {
    /// Strictly beyond `limit` on this side.
    pub fn beyond(self, value: f64, limit: f64) -> bool {
        match self {
            Self::Above => value > limit,
            Self::Below => value < limit,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Above => "above",
            Self::Below => "below",
        }
    }

    fn op(self) -> &'static str {
        match self {
            Self::Above => ">",
            Self::Below => "<",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// The value is beyond `threshold`; once firing it stays so while beyond `clear`.
    Threshold {
        direction: Direction,
        threshold: f64,
        clear: f64,
    },
    /// The least-squares slope over `window`, per minute, is beyond `slope_per_min` with
    /// r² ≥ `min_r2`; once pending or firing it stays so while the slope is beyond `clear` (r²
    /// is only a gate to enter: a leak that gets noisier is still a leak).
    Trend {
        direction: Direction,
        slope_per_min: f64,
        clear: f64,
        window: Duration,
        min_r2: f64,
    },
    /// The log-linear fit over `window` doubles faster than `doubling_time_below`, with
    /// r² ≥ `min_r2`, better than a straight line does, while the latest value is at least
    /// `min_level`; once firing it stays so while the fit still doubles that fast.
    Exponential {
        doubling_time_below: Duration,
        window: Duration,
        min_r2: f64,
        min_level: f64,
    },
}

impl Condition {
    /// The sliding window of a fitted rule.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Self::Threshold { .. } => None,
            Self::Trend { window, .. } | Self::Exponential { window, .. } => Some(*window),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The `alertname`.
    pub name: String,
    /// One of [`METRICS`].
    pub metric: &'static str,
    /// For request metrics: the selector (`GET /api/orders/{order_id}`, `/api/orders/{order_id}`
    /// or `TAG name`); None for every request together.
    pub route: Option<String>,
    pub condition: Condition,
    /// `for`: how long the condition must hold before the alert fires.
    pub for_duration: Duration,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    fn builtin(name: &str, metric: &'static str, condition: Condition, for_secs: u64) -> Self {
        Self {
            name: name.into(),
            metric,
            route: None,
            condition,
            for_duration: Duration::from_secs(for_secs),
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command};

    use super::*;

    fn parse(text: &str) -> Result<Vec<Rule>, RulesError> {
        parse_rules(text, Path::new("/etc/monitor.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let rules = parse(
            r#"
listen = "127.0.0.1:8001"
[cadence]
cpu_memory = "5s"

[[rule]]
name = "BigRss"
metric = "rss_mb"
above = 50
for = "5s"
severity = "warning"
"#,
        )
        .unwrap();
        assert_eq!(
            rules,
            vec![Rule {
                name: "BigRss".into(),
                metric: "rss_mb",
                route: None,
                condition: Condition::Threshold {
                    direction: Direction::Above,
                    threshold: 50.0,
                    clear: 50.0,
                },
                for_duration: Duration::from_secs(5),
                severity: Severity::Warning,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            }]
        );
    }

    #[test]
    fn a_config_without_rules_has_none() {
        assert_eq!(parse("listen = \"127.0.0.1:1\"\n").unwrap(), vec![]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn every_key_parses() {
        let rules = parse(
            r#"
[[rule]]
name = "LowThreads"
metric = "threads"
below = 4
clear = 6
severity = "critical"
labels = { team = "db" }
annotations = { runbook_url = "https://wiki.example/LowThreads" }

[[rule]]
name = "FdGrowth"
kind = "trend"
metric = "open_fds"
slope_per_min_above = 5
window = "10m"
min_r2 = 0.9
clear = 1
for = "1m"

[[rule]]
name = "Runaway"
kind = "exponential"
metric = "cpu_percent"
doubling_time_below = "3m"
window = "4m"
min_level = 2.5
severity = "info"
"#,
        )
        .unwrap();
        assert_eq!(
            rules[0].condition,
            Condition::Threshold {
                direction: Direction::Below,
                threshold: 4.0,
                clear: 6.0
            }
        );
        assert_eq!(rules[0].severity, Severity::Critical);
        assert_eq!(rules[0].labels["team"], "db");
        assert_eq!(
            rules[0].annotations["runbook_url"],
            "https://wiki.example/LowThreads"
        );
        assert_eq!(
            rules[1].condition,
            Condition::Trend {
                direction: Direction::Above,
                slope_per_min: 5.0,
                clear: 1.0,
                window: Duration::from_secs(600),
                min_r2: 0.9
            }
        );
        assert_eq!(rules[1].for_duration, Duration::from_secs(60));
        assert_eq!(
            rules[2].condition,
            Condition::Exponential {
                doubling_time_below: Duration::from_secs(180),
                window: Duration::from_secs(240),
                min_r2: 0.8,
                min_level: 2.5
            }
        );
        assert_eq!(rules[2].severity, Severity::Info);
        assert_eq!(rules[2].condition.window(), Some(Duration::from_secs(240)));
    }

    #[test]
    fn unknown_metric_suggests_the_nearest_with_its_line() {
        let e = err("\n[[rule]]\nname = \"X\"\nmetric = \"rss_mbb\"\nabove = 1\n");
        assert_eq!(
            e,
            "/etc/monitor.toml:4: rule \"X\": metric: unknown metric \"rss_mbb\" (did you mean \
             \"rss_mb\"?)"
        );
        let e = err("[[rule]]\nname = \"X\"\nmetric = \"zzzz\"\nabove = 1\n");
        assert!(e.contains("known: cpu_percent, cpu_avg_1m"), "{e}");
    }

    #[test]
    fn semantic_errors_name_file_line_rule_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nbelow = 2\n",
                "/etc/monitor.toml:5: rule \"X\": below: give either above or below, not both",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\n",
                "/etc/monitor.toml:1: rule \"X\": above: a threshold rule needs above or below",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 10\nclear = 12\n",
                "/etc/monitor.toml:5: rule \"X\": clear: 12 must be at or below above = 10 (a \
                 firing alert resolves when the value falls back to clear)",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nbelow = 10\nclear = 8\n",
                "/etc/monitor.toml:5: rule \"X\": clear: 8 must be at or above below = 10 (a \
                 firing alert resolves when the value rises back to clear)",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nfor = \"5 parsecs\"\n",
                "/etc/monitor.toml:5: rule \"X\": for: \"5 parsecs\" is not a duration",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nfor = 30\n",
                "/etc/monitor.toml:5: rule \"X\": for: expected a string, found integer",
            ),
            (
                "\n\n[[rule]]\nmetric = \"rss_mb\"\nabove = 1\n",
                "/etc/monitor.toml:3: rule #1: name: every rule needs a name",
            ),
            (
                "[[rule]]\nname = \"big rss\"\nmetric = \"rss_mb\"\nabove = 1\n",
                "/etc/monitor.toml:2: rule \"big rss\": name: must be letters",
            ),
            (
                "[[rule]]\nname = \"X\"\nabove = 1\n",
                "/etc/monitor.toml:1: rule \"X\": metric: every rule needs a metric",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nseverity = \"page\"\n",
                "/etc/monitor.toml:5: rule \"X\": severity: unknown severity \"page\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nkind = \"spike\"\n",
                "/etc/monitor.toml:5: rule \"X\": kind: unknown kind \"spike\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nwindow = \"5m\"\n",
                "/etc/monitor.toml:5: rule \"X\": window: does not apply to kind = \"threshold\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"trend\"\nmetric = \"rss_mb\"\nabove = 1\n",
                "/etc/monitor.toml:5: rule \"X\": above: does not apply to kind = \"trend\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"trend\"\nmetric = \"rss_mb\"\n\
                 slope_per_min_above = 1\nmin_r2 = 1.5\n",
                "/etc/monitor.toml:6: rule \"X\": min_r2: 1.5 is not between 0 and 1",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"trend\"\nmetric = \"rss_mb\"\n",
                "/etc/monitor.toml:1: rule \"X\": slope_per_min_above: a trend rule needs \
                 slope_per_min_above or slope_per_min_below",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"exponential\"\nmetric = \"cpu_percent\"\n\
                 window = \"0s\"\n",
                "/etc/monitor.toml:5: rule \"X\": window: must be at least 1s",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = nan\n",
                "/etc/monitor.toml:4: rule \"X\": above: must be a finite number",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\n\
                 labels = { severity = \"page\" }\n",
                "/etc/monitor.toml:5: rule \"X\": labels: \"severity\" is set by monitor",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\n\
                 annotations = { \"run-book\" = \"x\" }\n",
                "/etc/monitor.toml:5: rule \"X\": annotations: \"run-book\" is not a valid name",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\n\n\
                 [[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 2\n",
                "/etc/monitor.toml:7: rule \"X\": name: a rule of this name is already defined \
                 on line 2",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.starts_with(want),
                "for\n{text}\ngot:  {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn toml_errors_name_file_and_line() {
        let e = err("[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = \"high\"\n");
        assert!(e.starts_with("/etc/monitor.toml:4: "), "{e}");
        let e = err("[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabovee = 1\n");
        assert!(
            e.starts_with("/etc/monitor.toml:4: unknown field `abovee`"),
            "{e}"
        );
        let e = err("[[rule]\n");
        assert!(e.starts_with("/etc/monitor.toml:1: "), "{e}");
    }

    #[test]
    fn user_rules_replace_defaults_of_the_same_name() {
        let user = parse(
            "[[rule]]\nname = \"HighMemory\"\nmetric = \"memory_percent\"\nabove = 95\n\n\
             [[rule]]\nname = \"BigRss\"\nmetric = \"rss_mb\"\nabove = 50\n",
        )
        .unwrap();
        let rules = with_defaults(user);
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "HighMemory",
                "CriticalMemory",
                "HighCpu",
                "MemoryLeak",
                "CpuExponentialGrowth",
                "FdLeak",
                "TargetDown",
                "BigRss"
            ]
        );
        assert!(matches!(
            rules[0].condition,
            Condition::Threshold {
                threshold: 95.0,
                ..
            }
        ));
    }

    #[test]
    fn default_rules_are_the_seeds() {
        let rules = default_rules();
        let find = |n: &str| rules.iter().find(|r| r.name == n).unwrap();
        let high = find("HighMemory");
        assert_eq!(
            (high.metric, high.for_duration, high.severity),
            ("memory_percent", Duration::from_secs(30), Severity::Warning)
        );
        assert!(matches!(
            high.condition,
            Condition::Threshold {
                threshold: 80.0,
                ..
            }
        ));
        let critical = find("CriticalMemory");
        assert_eq!(
            (critical.for_duration, critical.severity),
            (Duration::ZERO, Severity::Critical)
        );
        assert!(matches!(
            critical.condition,
            Condition::Threshold {
                threshold: 90.0,
                ..
            }
        ));
        let cpu = find("HighCpu");
        assert_eq!(
            (cpu.metric, cpu.for_duration),
            ("cpu_avg_1m", Duration::from_secs(60))
        );
        let leak = find("MemoryLeak");
        assert_eq!(leak.metric, "rss_mb");
        assert!(matches!(
            leak.condition,
            Condition::Trend {
                slope_per_min: 10.0,
                ..
            }
        ));
        assert_eq!(find("FdLeak").metric, "open_fds");
        assert_eq!(find("CpuExponentialGrowth").metric, "cpu_percent");
        let down = find("TargetDown");
        assert_eq!(
            (down.metric, down.for_duration, down.severity),
            ("up", Duration::from_secs(30), Severity::Critical)
        );
        assert_eq!(
            down.condition,
            Condition::Threshold {
                direction: Direction::Below,
                threshold: 1.0,
                clear: 1.0
            }
        );
        for r in &rules {
            assert!(METRICS.contains(&r.metric));
        }
    }

    #[test]
    fn route_rules_parse_and_their_mistakes_name_the_key() {
        let rules = parse(
            "[[rule]]\nname = \"Slow\"\nmetric = \"request_p99_seconds\"\nroute = \"GET /o/{id}\"\nabove = 0.5\n",
        )
        .unwrap();
        assert_eq!(rules[0].route.as_deref(), Some("GET /o/{id}"));
        let all = parse("[[rule]]\nname = \"Busy\"\nmetric = \"request_rate\"\nabove = 100\n");
        assert_eq!(all.unwrap()[0].route, None, "no route: every request");
        for (route, metric, want) in [
            ("GET /o", "rss_mb", "metric \"rss_mb\" is not one of"),
            ("FETCH /o", "request_rate", "unknown method \"FETCH\""),
            ("GET o", "request_rate", "must start with `/`"),
            ("GET ", "request_rate", "names no route"),
        ] {
            let text = format!(
                "[[rule]]\nname = \"R\"\nmetric = \"{metric}\"\nroute = \"{route}\"\nabove = 1\n"
            );
            let e = err(&text);
            assert!(
                e.starts_with("/etc/monitor.toml:4: rule \"R\": route: ") && e.contains(want),
                "{e}"
            );
        }
        let y = prometheus_rules_yaml(&rules, "app");
        assert!(
            y.contains(r#"histogram_quantile(0.99, sum by (target, le) (rate(app_request_duration_seconds_bucket{target=\"app\", method=\"GET\", route=\"/o/{id}\"}[1m]))) > 0.5"#),
            "{y}"
        );
    }

    #[test]
    fn prometheus_expressions() {
        let rules = with_defaults(
            parse("[[rule]]\nname = \"BigRss\"\nmetric = \"rss_mb\"\nabove = 50\nfor = \"5s\"\n")
                .unwrap(),
        );
        let y = prometheus_rules_yaml(&rules, "myapp");
        for want in [
            r#"expr: "(app_memory_usage_percent{target=\"myapp\"} > 80 or (app_memory_usage_percent{target=\"myapp\"} > 75 and on (target) ALERTS{alertname=\"HighMemory\", alertstate=\"firing\", target=\"myapp\"})) unless on (target) app_up{target=\"myapp\"} == 0""#,
            "for: 30s",
            r#"deriv(app_open_fds{target=\"myapp\"}[10m]) * 60 > 5"#,
            r#"deriv((app_resident_memory_bytes{target=\"myapp\"} / 1048576)[5m:]) * 60 > 10"#,
            r#"deriv((ln(app_cpu_usage_percent{target=\"myapp\"}))[5m:]) * 60 > 0.0693"#,
            r#"and app_cpu_usage_percent{target=\"myapp\"} >= 5"#,
            "severity: \"critical\"",
            // TargetDown, and every other rule resolving while the target is down, as the
            // engine's do (the exporter keeps a down target's last gauge values).
            "- alert: \"TargetDown\"\n        expr: \"app_up{target=\\\"myapp\\\"} < 1\"\n        for: 30s",
            r#"expr: "app_resident_memory_bytes{target=\"myapp\"} / 1048576 > 50 unless on (target) app_up{target=\"myapp\"} == 0""#,
            "summary: \"TargetDown: target down on {{ $labels.target }}\"",
        ] {
            assert!(y.contains(want), "missing {want} in\n{y}");
        }
        let every: Vec<Rule> = METRICS
            .iter()
            .map(|m| {
                Rule::builtin(
                    &format!("R_{m}"),
                    m,
                    default_rules()[0].condition.clone(),
                    0,
                )
            })
            .collect();
        let y = prometheus_rules_yaml(&every, "");
        assert!(
            y.contains("sum by (target) (rate(app_syscalls_total[1m])) > 80"),
            "{y}"
        );
        assert!(y.contains("rate(app_fd_opens_total[1m]) > 80"), "{y}");
    }

    /// What Prometheus does with the exported rules when the target dies, judged by
    /// `promtool test rules`: the exporter keeps serving its last memory %, yet HighMemory
    /// resolves, and TargetDown fires after its `for`.
    #[test]
    fn exported_rules_resolve_when_the_target_is_down() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rules.yml"),
            prometheus_rules_yaml(&default_rules(), "myapp"),
        )
        .unwrap();
        // 85 % throughout; up until 100 s, down from 105 s.
        let test = r#"
rule_files: [rules.yml]
evaluation_interval: 5s
tests:
  - interval: 5s
    input_series:
      - series: 'app_memory_usage_percent{target="myapp"}'
        values: '85x60'
      - series: 'app_up{target="myapp"}'
        values: '1x20 0x40'
    alert_rule_test:
      - eval_time: 90s
        alertname: HighMemory
        exp_alerts:
          - exp_labels: {severity: warning, target: myapp}
            exp_annotations:
              summary: "HighMemory: memory_percent above 80% on myapp"
              description: "memory_percent is 85.00%, above the 80% threshold."
      - eval_time: 110s
        alertname: HighMemory
        exp_alerts: []
      - eval_time: 130s
        alertname: TargetDown
        exp_alerts: []
      - eval_time: 140s
        alertname: TargetDown
        exp_alerts:
          - exp_labels: {severity: critical, target: myapp}
            exp_annotations:
              summary: "TargetDown: target down on myapp"
              description: "No process of the target is alive (app_up 0)."
"#;
        let test_path = dir.path().join("test.yml");
        std::fs::write(&test_path, test).unwrap();
        let out = Command::new("promtool")
            .args(["test", "rules"])
            .arg(&test_path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "promtool could not run ({e}): run `cargo xtask setup --test-deps` to \
                     install it (Debian package prometheus)"
                )
            });
        assert!(
            out.status.success(),
            "promtool test rules failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// promtool is the judge of the rule file, as Prometheus itself would load it.
    #[test]
    fn prometheus_rules_pass_promtool() {
        let mut rules = with_defaults(
            parse(
                r#"
[[rule]]
name = "BigRss"
metric = "rss_mb"
above = 50
for = "5s"
severity = "warning"
labels = { team = "db" }
annotations = { runbook_url = "https://wiki.example/BigRss", note = "quote \" and\nnewline" }

[[rule]]
name = "FewThreads"
metric = "threads"
below = 2
clear = 3

[[rule]]
name = "SyscallSurge"
kind = "trend"
metric = "syscall_rate"
slope_per_min_above = 100
window = "90s"

[[rule]]
name = "SlowOrders"
metric = "request_p99_seconds"
route = "GET /api/orders/{order_id}"
above = 0.5

[[rule]]
name = "ReportCpu"
metric = "request_cpu_percent"
route = "TAG nightly-report"
above = 50
"#,
            )
            .unwrap(),
        );
        rules.extend(METRICS.iter().map(|m| {
            Rule::builtin(
                &format!("Every_{m}"),
                m,
                default_rules()[3].condition.clone(),
                0,
            )
        }));
        rules.extend(METRICS.iter().map(|m| {
            Rule::builtin(
                &format!("Exp_{m}"),
                m,
                default_rules()[4].condition.clone(),
                0,
            )
        }));
        for target in ["myapp", "", "we\"ird\\name"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rules.yml");
            std::fs::write(&path, prometheus_rules_yaml(&rules, target)).unwrap();
            let out = Command::new("promtool")
                .arg("check")
                .arg("rules")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "promtool could not run ({e}): run `cargo xtask setup --test-deps` to \
                         install it (Debian package prometheus)"
                    )
                });
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                out.status.success(),
                "promtool check rules failed:\n{}{}\n--- file:\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("SUCCESS: {} rules found", rules.len())),
                "{stdout}"
            );
        }
    }
}
