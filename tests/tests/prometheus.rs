//! A real Prometheus (Debian's `prometheus`, started here on loopback) scrapes `monitor run`; the
//! value it stores must match the workload's truth, and `promtool check metrics` must pass.
mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{prometheus::Prometheus, *};

#[test]
fn prometheus_scrapes_oncpu_matching_the_workloads_truth() {
    require_root();
    let mut w = Workload::start(
        &workload_bin(),
        &["spin", "--millis", "1500", "--threads", "2"],
    );
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--name", "seed"]);
    let truth = w.go();
    let truth_s = oncpu_truth_seconds(&truth);
    let served = d.settled("app_oncpu_seconds_total", &[("target", "seed")]);
    assert_within("served app_oncpu_seconds_total", served, truth_s, 0.01);

    let prom = Prometheus::start(d.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        if let Some(v) = prom.query("app_oncpu_seconds_total{target=\"seed\",job=\"monitor\"}") {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never stored app_oncpu_seconds_total"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_within(
        "app_oncpu_seconds_total in Prometheus",
        stored,
        truth_s,
        0.01,
    );
    assert_eq!(
        prom.query("up{job=\"monitor\"}"),
        Some(1.0),
        "the scrape itself is healthy"
    );
    assert_eq!(prom.query("app_up{target=\"seed\"}"), Some(1.0));
    w.finish();
}

/// promtool's findings, one per line (empty when clean).
fn promtool_check(text: &str) -> (bool, Vec<String>) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool comes with the Debian package prometheus");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect();
    (out.status.success(), findings)
}

#[test]
fn metrics_pass_promtool_check() {
    require_root();
    let mut w = Workload::start(&workload_bin(), &["files", "--opens", "10", "--fails", "3"]);
    let clean = Daemon::start(&["--pid", &w.pid().to_string()], &["--no-seed-names"]);
    let seed = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    w.go();
    let errors_served = |m: &str| m.contains("app_fd_open_errors_total{errno=\"ENOENT\"");
    let text = clean.wait_for(errors_served, "fd errors served");
    let (ok, findings) = promtool_check(&text);
    assert!(
        ok && findings.is_empty(),
        "promtool check metrics: {findings:#?}"
    );

    // With the seed's names kept (the default), the only findings are about those names.
    let text = seed.wait_for(errors_served, "fd errors served");
    let (_, findings) = promtool_check(&text);
    assert!(
        findings
            .iter()
            .all(|f| f.starts_with("app_memory_usage_mb") && f.contains("abbreviated units")),
        "promtool check metrics: {findings:#?}"
    );
    for name in [
        "app_cpu_usage_percent",
        "app_memory_usage_mb",
        "app_memory_usage_percent",
        "app_virtual_memory_bytes",
        "app_open_fds",
        "app_threads",
        "app_oncpu_seconds_total",
        "app_page_faults_total",
        "app_fd_opens_total",
        "app_fd_closes_total",
        "app_fd_open_errors_total",
        "app_syscalls_total",
        "app_syscall_seconds_total",
        "app_context_switches_total",
        "app_cpu_usage_percent_peak",
        "app_cpu_usage_percent_avg_1m",
        "app_memory_usage_mb_peak",
        "app_memory_usage_mb_avg_1m",
        "app_up",
        "monitor_ebpf_attached",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics"
        );
    }
    assert!(
        !text.contains("pid=\""),
        "series carry a target label, never a pid label"
    );
    w.finish();
}
