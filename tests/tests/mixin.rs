//! The Prometheus mixin in deploy/prometheus: the rule file is exactly what `monitor rules
//! export --prometheus` prints (one source of truth with the daemon's rules), promtool accepts
//! it, its unit tests pass, and no alert or recording rule ships without a test.
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::*;

const RULES: &str = "monitor.rules.yml";
const RULE_TESTS: &str = "monitor.rules.test.yml";
const REGENERATE: &str = "cargo run -p monitor-user -- rules export --prometheus > \
                          deploy/prometheus/monitor.rules.yml";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn read(name: &str) -> String {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// promtool with `args`, in deploy/prometheus (where the test file names the rule file).
fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool could not run ({e}): it comes with Debian's `prometheus` package, which \
                 `cargo xtask setup --test-deps` installs"
            )
        })
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values of `- key: value` items (`- alert: "HighMemory"`), unquoted.
fn items(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("- {key}:");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .collect()
}

/// The alerts the test file expects to fire somewhere, and those it expects quiet somewhere: an
/// `alert_rule_test` case is `alertname: X` then `exp_alerts: []` (quiet) or `exp_alerts:` and
/// a list of `- exp_labels:` (firing).
fn cases(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut alert: Option<String> = None;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("alertname:") {
            alert = Some(name.trim().to_owned());
        } else if line == "exp_alerts: []" {
            quiet.extend(alert.take());
        } else if line == "exp_alerts:" {
            let listed = lines.next().is_some_and(|l| l.starts_with("- exp_labels:"));
            if listed {
                firing.extend(alert.take());
            }
        }
    }
    (firing, quiet)
}

#[test]
fn shipped_rules_are_what_the_export_prints() {
    let out = Command::new(monitor_bin())
        .args(["rules", "export", "--prometheus"])
        .output()
        .unwrap();
    assert_success("monitor rules export --prometheus", &out);
    let printed = String::from_utf8(out.stdout).unwrap();
    let shipped = read(RULES);
    if printed != shipped {
        let line = printed
            .lines()
            .zip(shipped.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| printed.lines().count().min(shipped.lines().count()));
        panic!(
            "deploy/prometheus/{RULES} is not what `monitor rules export --prometheus` prints \
             (first difference at line {}):\n  printed: {:?}\n  shipped: {:?}\nRegenerate it \
             from the repository root with\n  {REGENERATE}\nthen update \
             deploy/prometheus/{RULE_TESTS} to match and run `promtool test rules {RULE_TESTS}` \
             in deploy/prometheus.",
            line + 1,
            printed.lines().nth(line).unwrap_or("<end of file>"),
            shipped.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn shipped_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", RULES]);
    assert_success(&format!("promtool check rules {RULES}"), &out);
    let rules = read(RULES);
    let count = items(&rules, "alert").len() + items(&rules, "record").len();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("SUCCESS: {count} rules found")),
        "{stdout}"
    );
}

#[test]
fn shipped_rules_pass_their_unit_tests() {
    let out = promtool(&["test", "rules", RULE_TESTS]);
    assert_success(&format!("promtool test rules {RULE_TESTS}"), &out);
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let alerts = items(&read(RULES), "alert");
    // The scanner sees both kinds: the target alerts and those on monitor itself.
    for known in ["TargetDown", "MonitorDown"] {
        assert!(
            alerts.iter().any(|a| a == known),
            "{known} not in {alerts:?}"
        );
    }
    let (firing, quiet) = cases(&read(RULE_TESTS));
    let mut missing = Vec::new();
    for alert in &alerts {
        if !firing.contains(alert) {
            missing.push(format!("{alert}: no case where it fires"));
        }
        if !quiet.contains(alert) {
            missing.push(format!("{alert}: no case where it must not fire"));
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/prometheus/{RULE_TESTS} leaves alerts untested:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_recording_rule_has_an_expression_test() {
    let records = items(&read(RULES), "record");
    assert!(!records.is_empty(), "no recording rules found");
    let tested: BTreeSet<String> = items(&read(RULE_TESTS), "expr").into_iter().collect();
    let untested: Vec<&String> = records.iter().filter(|r| !tested.contains(*r)).collect();
    assert!(
        untested.is_empty(),
        "deploy/prometheus/{RULE_TESTS} has no promql_expr_test for {untested:?}"
    );
}

#[test]
fn the_case_scanner_tells_firing_from_quiet() {
    let text = "alert_rule_test:\n  - eval_time: 1m\n    alertname: A\n    exp_alerts: []\n  \
                - eval_time: 2m\n    alertname: B\n    exp_alerts:\n      - exp_labels: {x: y}\n  \
                - eval_time: 3m\n    alertname: C\n    exp_alerts:\n  - eval_time: 4m\n";
    let (firing, quiet) = cases(text);
    assert_eq!(firing, BTreeSet::from(["B".to_string()]));
    assert_eq!(quiet, BTreeSet::from(["A".to_string()]));
}
