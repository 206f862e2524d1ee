//! Alerts on monitor itself: a daemon Prometheus cannot scrape, kernel programs that did not
//! attach, events it lost, notifications that do not get through, a sampler that stopped, a
//! history store that fails. Each selects the daemon's scrape job; each description says what
//! to look at.
//!
//! `monitor_syscall_latency_lost_total` raises none: every call in flight when the programs
//! attach loses its latency whenever it returns (an `accept` may return hours later), the rest
//! is rare and leaves the counts exact, and there is nothing for an operator to do about it.
use std::{collections::BTreeMap, time::Duration};

use crate::alerts::{
    Severity,
    rule_file::{AlertingRule, prometheus_duration, promql_str},
};

pub const DAEMON_ALERTS_GROUP: &str = "monitor-daemon";

/// A sample older than this at scrape time is stale, however fast the daemon samples: a
/// minute is twelve 5 s samples missed.
const STALE_FLOOR: Duration = Duration::from_secs(60);
/// Samples a slower-sampling daemon may miss before its last one is stale.
const STALE_SAMPLES: u32 = 4;

/// How old the daemon's last sample may be at scrape time when it samples every
/// `sample_period`.
pub fn stale_after(sample_period: Duration) -> Duration {
    (sample_period * STALE_SAMPLES).max(STALE_FLOOR)
}

fn alert(
    name: &str,
    expr: String,
    for_secs: u64,
    severity: Severity,
    summary: &str,
    description: &str,
) -> AlertingRule {
    AlertingRule {
        note: None,
        name: name.into(),
        expr,
        for_duration: Duration::from_secs(for_secs),
        labels: BTreeMap::from([("severity".into(), severity.as_str().into())]),
        annotations: BTreeMap::from([
            ("summary".into(), format!("{name}: {summary}")),
            ("description".into(), description.into()),
        ]),
    }
}

/// The alerts on the daemons Prometheus scrapes as `job`, which sample every `sample_period`.
pub fn daemon_alerts(job: &str, sample_period: Duration) -> Vec<AlertingRule> {
    let selector = format!("{{job={}}}", promql_str(job));
    let s = |name: &str| format!("{name}{selector}");
    let grew = |name: &str, window: &str| format!("increase({}[{window}]) > 0", s(name));
    let stale = stale_after(sample_period);
    vec![
        // `for` 2 min: a restart (an upgrade, a config change) is no outage.
        alert(
            "MonitorDown",
            format!("{} == 0", s("up")),
            120,
            Severity::Critical,
            "Prometheus cannot scrape monitor on {{ $labels.instance }}",
            "Prometheus has failed to scrape monitor at {{ $labels.instance }} (job \
             {{ $labels.job }}) for 2 minutes: the application it watches is unwatched and none \
             of its alerts can fire. Check that the daemon runs (its service status and log \
             name the cause of a failed start, such as a config error or a port in use) and \
             that it listens where the scrape config points.",
        ),
        // Without it a job that service discovery lost, or a job name these rules do not
        // know, would leave MonitorDown silent: `up` would have no series to be 0.
        alert(
            "MonitorAbsent",
            format!("absent({})", s("up")),
            600,
            Severity::Warning,
            "Prometheus scrapes no monitor of job {{ $labels.job }}",
            "Prometheus has had no scrape target of job {{ $labels.job }} for 10 minutes, so no \
             monitor daemon is watched and MonitorDown cannot fire. Add the job to the scrape \
             config (or fix its service discovery), or regenerate these rules with `monitor \
             rules export --prometheus --job JOB` naming the job that scrapes monitor.",
        ),
        // Attachment happens once, at start: `for` 5 min only spares a daemon restarting.
        alert(
            "MonitorEbpfDetached",
            format!("{} == 0", s("monitor_ebpf_attached")),
            300,
            Severity::Warning,
            "kernel program {{ $labels.program }} is not attached on {{ $labels.instance }}",
            "monitor on {{ $labels.instance }} runs without its {{ $labels.program }} kernel \
             program, so the series that program feeds are missing (README, Metrics). Run \
             `monitor check` on that host: it says why a program cannot attach (kernel version, \
             BTF, capabilities, lockdown). If the program was left out on purpose (--programs, \
             --no-ebpf), silence this alert for that instance; `monitor run --require-ebpf` \
             refuses to start without the programs instead.",
        ),
        alert(
            "MonitorEventsLost",
            format!(
                "{} or {}",
                grew("monitor_request_events_lost_total", "5m"),
                grew("monitor_kernel_map_full_total", "5m")
            ),
            0,
            Severity::Warning,
            "monitor on {{ $labels.instance }} is losing {{ if $labels.map }}kernel map inserts \
             ({{ $labels.map }}){{ else }}request events of {{ $labels.target }}{{ end }}",
            "{{ if $labels.map }}Inserts into the kernel map {{ $labels.map }} failed \
             {{ $value | printf \"%.0f\" }} times in the last 5 minutes on {{ $labels.instance }} \
             for lack of room. TARGETS: forks of the target were not followed, and their \
             processes go unwatched. THREAD_STATS: the target has more live threads than the map \
             holds (their CPU time is counted only when they exit); raise \
             MONITOR_MAX_TARGET_THREADS and restart monitor. SYSCALL_STARTS: syscall latencies \
             were lost.{{ else }}monitor on {{ $labels.instance }} lost \
             {{ $value | printf \"%.0f\" }} request events of {{ $labels.target }} in the last \
             5 minutes: its reader fell behind the kernel's ring buffer, so that time's request \
             counts, latencies and route CPU are short. Check whether the daemon is starved of \
             CPU or throttled (process_cpu_seconds_total, its cgroup's cpu.max).{{ end }}",
        ),
        // A single failed attempt is retried and says nothing; a notification still queued
        // after 10 minutes of retries (they back off to one a minute) is not getting through.
        alert(
            "MonitorNotificationsFailing",
            format!(
                "{} or min_over_time({}[10m]) > 0",
                grew("monitor_notifications_dropped_total", "15m"),
                s("monitor_outbox_pending")
            ),
            0,
            Severity::Warning,
            "monitor's {{ $labels.channel }} notifications are not getting through on \
             {{ $labels.instance }}",
            "monitor on {{ $labels.instance }} gave up on notifications to channel \
             {{ $labels.channel }} in the last 15 minutes (refused for good, or queued past \
             their maximum age), or has held undelivered ones in its outbox for 10 minutes: its \
             alerts are not reaching that receiver. The daemon's log names each failed attempt \
             (monitor_notifications_failed_total counts them): check the receiver's address, \
             credentials and reachability from that host. Queued notifications are kept across \
             restarts and retried.",
        ),
        // The sample's age when Prometheus scraped it, not at evaluation: a slow scrape
        // interval does not make a live sampler look stale. `for` 1 min covers a daemon's
        // first seconds, before its first sample (0).
        alert(
            "MonitorSamplingStalled",
            format!(
                "timestamp({m}) - {m} > {}",
                stale.as_secs_f64(),
                m = s("monitor_last_sample_timestamp_seconds")
            ),
            60,
            Severity::Critical,
            "monitor on {{ $labels.instance }} has stopped sampling",
            &format!(
                "monitor on {{{{ $labels.instance }}}} had last sampled its target \
                 {{{{ $value | humanizeDuration }}}} before it was scraped (more than {}): \
                 the values it serves are frozen and its own alerts see nothing new. Every \
                 sample failing (monitor_sample_failures_total grows; the daemon's log says \
                 why) or a sampler blocked in the kernel does this. Read the log, then restart \
                 the daemon.",
                prometheus_duration(stale)
            ),
        ),
        alert(
            "MonitorHistoryWriteErrors",
            format!(
                "{} or {}",
                grew("monitor_history_write_errors_total", "10m"),
                grew("monitor_history_points_dropped_total", "10m")
            ),
            0,
            Severity::Warning,
            "monitor's history store on {{ $labels.instance }} is failing",
            "monitor on {{ $labels.instance }} failed writes to its history store, or dropped \
             points, in the last 10 minutes: `monitor report` and `monitor history export` will \
             show gaps. Failed writes are retried and the log says why they fail (a full disk, \
             permissions, a damaged file); points are dropped when the write queue overflows or \
             writes fail for long. Check the disk that holds the store.",
        ),
    ]
}
