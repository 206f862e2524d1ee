//! Alerts end to end: a workload crosses a threshold, the daemon fires, a real Alertmanager and a
//! webhook receiver (started here on loopback) get it, then the resolve; a target that exits
//! has its alerts resolved and TargetDown fired; CPU spikes carry their syscall context, to the
//! chat robots too; configs are checked and rules exported for promtool.
mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{robots::Robot, *};
use serde_json::Value;

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn threshold_alert_reaches_alertmanager_and_webhook_then_resolves() {
    require_root();
    let am = Alertmanager::start(free_port());
    let (hook_port, hooks) = http_receiver();
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[alerting]
state_dir = "{}"
min_firing = "1s"
repeat_interval = "1h"

[notify]
retry_initial = "200ms"
retry_max = "1s"

[[rule]]
name = "BusyTest"
metric = "cpu_percent"
above = 30
clear = 10
for = "1s"
severity = "critical"
annotations = {{ runbook = "https://runbooks.example/busy" }}

[[notifier]]
kind = "alertmanager"
url = "http://127.0.0.1:{}"

[[notifier]]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
"#,
        state.path().display(),
        am.port
    );
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "4000"]);
    let d = Daemon::start_with(
        &["--pid", &w.pid().to_string()],
        &["--name", "busy"],
        &config,
    );
    let worker = std::thread::spawn(move || {
        w.go();
        w
    });

    let fired = wait_until("BusyTest in Alertmanager", Duration::from_secs(20), || {
        am.alert_named("BusyTest")
    });
    assert_eq!(fired["labels"]["severity"], "critical");
    assert_eq!(fired["labels"]["target"], "busy");
    assert!(
        fired["labels"]["instance"]
            .as_str()
            .is_some_and(|i| !i.is_empty())
    );
    assert_eq!(
        fired["annotations"]["runbook"],
        "https://runbooks.example/busy"
    );
    assert!(
        fired["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("BusyTest") || s.contains("cpu"))
    );
    assert_eq!(
        d.value(
            "monitor_alerts_firing",
            &[("alertname", "BusyTest"), ("severity", "critical")]
        ),
        Some(1.0)
    );
    let (head, body) = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("webhook for the firing alert");
    assert!(head.starts_with("POST /hook"), "{head}");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "BusyTest");
    assert_eq!(body["version"], "4");

    // The spin ends (the workload lingers idle): the alert resolves once, everywhere.
    let w = worker.join().unwrap();
    wait_until(
        "BusyTest resolved in Alertmanager",
        Duration::from_secs(30),
        || am.alert_named("BusyTest").is_none().then_some(()),
    );
    let (_, body) = wait_until("resolved webhook", Duration::from_secs(10), || {
        hooks
            .try_recv()
            .ok()
            .filter(|(_, b): &(String, Value)| b["status"] == "resolved")
    });
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "BusyTest");
    assert!(
        body["alerts"][0]["endsAt"]
            .as_str()
            .is_some_and(|e| !e.starts_with("0001"))
    );
    assert_eq!(
        d.value(
            "monitor_alerts_firing",
            &[("alertname", "BusyTest"), ("severity", "critical")]
        ),
        None,
        "not firing any more"
    );
    // The event log has both transitions.
    let events: Vec<Value> = serde_json::from_str(
        &ureq::get(&format!("http://127.0.0.1:{}/api/events", d.port))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["name"] == "BusyTest")
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses, ["firing", "resolved"], "{events:#?}");
    w.finish();
}

#[test]
fn a_target_that_exits_resolves_its_alerts_and_fires_target_down() {
    require_root();
    let am = Alertmanager::start(free_port());
    let (hook_port, hooks) = http_receiver();
    let state = tempfile::tempdir().unwrap();
    // `Alive` fires while the target has a process; TargetDown is the built-in (30 s `for`).
    let config = format!(
        r#"
[alerting]
state_dir = "{}"
min_firing = "1s"
repeat_interval = "1h"

[notify]
retry_initial = "200ms"
retry_max = "1s"

[[rule]]
name = "Alive"
metric = "processes"
above = 0

[[notifier]]
kind = "alertmanager"
url = "http://127.0.0.1:{}"

[[notifier]]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
"#,
        state.path().display(),
        am.port
    );
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "100"]);
    let d = Daemon::start_with(
        &["--pid", &w.pid().to_string()],
        &["--name", "mortal"],
        &config,
    );
    w.go();
    wait_until("Alive in Alertmanager", Duration::from_secs(20), || {
        am.alert_named("Alive")
    });
    w.finish();

    // Gone: Alive resolves with the reason, everywhere; TargetDown fires after its `for`.
    let (_, body) = wait_until("Alive resolved by webhook", Duration::from_secs(20), || {
        hooks.try_recv().ok().filter(|(_, b): &(String, Value)| {
            b["status"] == "resolved" && b["alerts"][0]["labels"]["alertname"] == "Alive"
        })
    });
    assert_eq!(
        body["alerts"][0]["annotations"]["resolved_reason"], "target_down",
        "{body:#}"
    );
    wait_until(
        "Alive resolved in Alertmanager",
        Duration::from_secs(20),
        || am.alert_named("Alive").is_none().then_some(()),
    );
    let down = wait_until(
        "TargetDown in Alertmanager",
        Duration::from_secs(60),
        || am.alert_named("TargetDown"),
    );
    assert_eq!(down["labels"]["severity"], "critical");
    assert_eq!(down["labels"]["target"], "mortal");
    assert_eq!(d.value("app_up", &[("target", "mortal")]), Some(0.0));
    assert_eq!(
        d.value(
            "monitor_alerts_firing",
            &[("alertname", "TargetDown"), ("severity", "critical")]
        ),
        Some(1.0)
    );
    let events: Vec<Value> = serde_json::from_str(
        &ureq::get(&format!("http://127.0.0.1:{}/api/events", d.port))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let alive: Vec<(&str, &Value)> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["name"] == "Alive")
        .filter_map(|e| Some((e["status"].as_str()?, &e["annotations"]["resolved_reason"])))
        .collect();
    assert_eq!(
        alive,
        [
            ("firing", &Value::Null),
            ("resolved", &Value::from("target_down"))
        ],
        "{events:#?}"
    );
}

/// 3 s idle (the spike detector's baseline), then 1.5 s of getppid calls on one CPU.
fn getppid_burst() -> Workload {
    Workload::start(
        &workload_bin(),
        &[
            "burst",
            "--idle-ms",
            "3000",
            "--millis",
            "1500",
            "--nr",
            "getppid",
        ],
    )
}

#[test]
fn cpu_burst_of_one_syscall_is_a_spike_with_that_syscall_on_top() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let config = format!("[alerting]\nstate_dir = \"{}\"\n", state.path().display());
    let mut w = getppid_burst();
    let d = Daemon::start_with(
        &["--pid", &w.pid().to_string()],
        &["--name", "bursty"],
        &config,
    );
    w.go();
    let url = format!("http://127.0.0.1:{}/api/events", d.port);
    let spike = wait_until("a cpu_spike event", Duration::from_secs(10), || {
        let text = ureq::get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let events: Vec<Value> = serde_json::from_str(&text).ok()?;
        events.into_iter().find(|e| e["kind"] == "cpu_spike")
    });
    assert_eq!(
        spike["top_syscalls_by_calls"][0]["syscall"], "getppid",
        "{spike:#}"
    );
    assert_eq!(
        spike["top_syscalls_by_time"][0]["syscall"], "getppid",
        "{spike:#}"
    );
    assert!(spike["added_calls_per_sec"].is_null());
    assert!(
        spike["top_syscalls_by_calls"][0]["added_calls_per_sec"]
            .as_f64()
            .unwrap()
            > 10_000.0
    );
    assert!(
        d.value("app_cpu_spikes_total", &[("target", "bursty")])
            .unwrap()
            >= 1.0
    );
    // `monitor events` prints it.
    let out = Command::new(monitor_bin())
        .args(["events", "--listen", &format!("127.0.0.1:{}", d.port)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cpu_spike") && text.contains("getppid"),
        "{text}"
    );
    w.finish();
}

/// The whole path to a phone: a real burst of one syscall, the CPU rule fires with the spike's
/// context (one busy thread is 50 % of this 2-CPU host, so the rule's threshold is 25), and the (fake) Telegram chat gets a message naming the alert, the target and that
/// syscall as the top one.
#[test]
fn a_cpu_alert_reaches_a_chat_robot_with_the_spike_top_syscall() {
    require_root();
    let robot = Robot::start("telegram", &[]);
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "[notify]\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n\
         external_url = \"http://monitor.example:8001\"\n\
         [[rule]]\nname = \"BurstCpu\"\nmetric = \"cpu_percent\"\nabove = 25\n\
         severity = \"critical\"\n{}\n[alerting]\nstate_dir = \"{}\"\n",
        robot.notifier(false, ""),
        state.path().display()
    );
    let mut w = getppid_burst();
    let _d = Daemon::start_with(
        &["--pid", &w.pid().to_string()],
        &["--name", "bursty"],
        &config,
    );
    w.go();
    let message = wait_until("a message in the chat", Duration::from_secs(20), || {
        robot.messages().into_iter().next()
    });
    let text = message["text"].as_str().unwrap_or_default();
    for want in [
        "FIRING",
        "critical",
        "BurstCpu",
        "target bursty",
        "top syscalls: getppid +",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from the message:\n{text}"
        );
    }
    assert!(robot.rejected().is_empty(), "{:#?}", robot.rejected());
    w.finish();
}

#[test]
fn check_config_names_file_line_and_key_and_suggests_the_metric() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitor.toml");
    std::fs::write(&path, "[cadence]\ncpu_memory = \"1s\"\n\n[[rule]]\nname = \"BigRss\"\nmetric = \"rss_mbb\"\nabove = 50\n").unwrap();
    let out = Command::new(monitor_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&path.display().to_string()) && err.contains(":6") && err.contains("rss_mb"),
        "{err}"
    );

    std::fs::write(
        &path,
        "[[rule]]\nname = \"BigRss\"\nmetric = \"rss_mb\"\nabove = 50\nfor = \"5s\"\nseverity = \"warning\"\n\n[[notifier]]\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n",
    )
    .unwrap();
    let out = Command::new(monitor_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exported_rules_pass_promtool() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        "[[rule]]\nname = \"BigRss\"\nmetric = \"rss_mb\"\nabove = 50\nfor = \"5s\"\n",
    )
    .unwrap();
    let out = Command::new(monitor_bin())
        .args([
            "rules",
            "export",
            "--prometheus",
            "--target",
            "trading-api",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, &out.stdout).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BigRss")
            && text.contains("HighMemory")
            && text.contains("TargetDown")
            && text.contains("trading-api"),
        "{text}"
    );
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian prometheus)");
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
