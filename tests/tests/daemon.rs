//! `monitor run` against live workloads: metrics match the kernel's accounting, targets that exit
//! or restart, bad input, /proc-only mode and dropped capabilities.
mod common;

use std::{process::Command, time::Duration};

use common::*;

fn target_label(d: &Daemon) -> String {
    let text = d.metrics_text();
    let scrape_line = text
        .lines()
        .find(|l| l.starts_with("app_up{"))
        .expect("app_up");
    scrape_line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn run_metrics_match_the_workloads_truth() {
    require_root();
    let mut w = Workload::start(
        &workload_bin(),
        &["spin", "--millis", "1500", "--threads", "2"],
    );
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    let t = target_label(&d);
    let truth = w.go();
    let oncpu = d.settled("app_oncpu_seconds_total", &[("target", &t)]);
    // getrusage: the scheduler's own accounting, including the two threads that have exited.
    assert_within(
        "app_oncpu_seconds_total",
        oncpu,
        oncpu_truth_seconds(&truth),
        0.01,
    );
    // The lingering main thread: /proc/PID/schedstat of a live thread is below the total.
    assert_eq!(d.value("app_up", &[("target", &t)]), Some(1.0));
    assert_eq!(d.value("app_threads", &[("target", &t)]), Some(1.0));
    assert!(d.value("app_memory_usage_mb", &[("target", &t)]).unwrap() > 0.5);
    assert!(
        d.value("app_virtual_memory_bytes", &[("target", &t)])
            .unwrap()
            > 1e6
    );
    assert!(d.value("app_open_fds", &[("target", &t)]).unwrap() >= 3.0);
    for program in [
        "sys_enter",
        "sys_exit",
        "sched_switch",
        "sched_process_fork",
        "sched_process_exit",
    ] {
        assert_eq!(
            d.value("monitor_ebpf_attached", &[("program", program)]),
            Some(1.0),
            "{program}"
        );
    }
    w.finish();
}

#[test]
fn syscalls_and_faults_of_a_running_process_are_counted() {
    require_root();
    let mut w = Workload::start(&workload_bin(), &["syscalls", "--count", "250000"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    let t = target_label(&d);
    w.go();
    let n = d.settled(
        "app_syscalls_total",
        &[("target", &t), ("syscall", "getppid")],
    );
    assert_eq!(n, 250_000.0);
    // Faults since the process started, as the kernel accounts them (/proc/PID/stat minflt).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid())).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let minflt: f64 = fields[7].parse().unwrap();
    let ours = d.settled(
        "app_page_faults_total",
        &[("target", &t), ("kind", "minor")],
    );
    assert_within("minor faults", ours, minflt, 0.02);
    w.finish();
}

#[test]
fn forked_children_join_the_target() {
    require_root();
    let mut w = Workload::start(
        &workload_bin(),
        &["fork", "--children", "3", "--millis", "200"],
    );
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    let t = target_label(&d);
    let truth = w.go();
    assert_eq!(
        d.settled(
            "app_syscalls_total",
            &[("target", &t), ("syscall", "getppid")]
        ),
        3000.0
    );
    // Once it has exited, everything it and its children ran is in the kernel's totals.
    let wait4 = w.finish_with_rusage();
    assert!(oncpu_truth_seconds(&truth) <= wait4.oncpu_seconds + 1e-3);
    let oncpu = d.settled("app_oncpu_seconds_total", &[("target", &t)]);
    assert_within("on-CPU with children", oncpu, wait4.oncpu_seconds, 0.01);
}

#[test]
fn comm_target_that_restarts_is_followed_in_the_same_series() {
    require_root();
    // A copy of the workload with a name nothing else has.
    let dir = tempfile::tempdir().unwrap();
    let name = format!("wl{}", std::process::id());
    let program = dir.path().join(&name);
    std::fs::copy(workload_bin(), &program).unwrap();
    let d = Daemon::start(&["--comm", &name], &[]);
    assert_eq!(
        d.value("app_up", &[("target", &name)]),
        Some(0.0),
        "nothing runs yet"
    );

    let mut first = Workload::start(&program, &["syscalls", "--count", "1000"]);
    d.wait_for(
        |m| metric_value(m, "app_up", &[("target", &name)]) == Some(1.0),
        "first start",
    );
    first.go();
    assert_eq!(
        d.settled(
            "app_syscalls_total",
            &[("target", &name), ("syscall", "getppid")]
        ),
        1000.0
    );
    drop(first);
    d.wait_for(
        |m| metric_value(m, "app_up", &[("target", &name)]) == Some(0.0),
        "app_up 0 after exit",
    );

    let mut second = Workload::start(&program, &["syscalls", "--count", "2000"]);
    d.wait_for(
        |m| metric_value(m, "app_up", &[("target", &name)]) == Some(1.0),
        "restart",
    );
    second.go();
    // Counters continue in the same series.
    assert_eq!(
        d.settled(
            "app_syscalls_total",
            &[("target", &name), ("syscall", "getppid")]
        ),
        3000.0
    );
    second.finish();
}

#[test]
fn target_that_exits_leaves_app_up_zero_and_the_daemon_serving() {
    require_root();
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "10"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    let t = target_label(&d);
    w.go();
    drop(w);
    d.wait_for(
        |m| metric_value(m, "app_up", &[("target", &t)]) == Some(0.0),
        "app_up 0",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.value("app_up", &[("target", &t)]),
        Some(0.0),
        "still serving"
    );
}

#[test]
fn unknown_pid_is_a_clear_error() {
    require_root();
    let out = Command::new(monitor_bin())
        .args([
            "run",
            "--pid",
            "4000000",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process with pid 4000000"), "{err}");
}

#[test]
fn bad_config_names_file_line_and_key() {
    require_root();
    let mut config = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut config, b"[cadence]\ncpu_memroy = \"1s\"\n").unwrap();
    let out = Command::new(monitor_bin())
        .args(["run", "--pid", &std::process::id().to_string(), "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let path = config.path().display().to_string();
    assert!(
        err.contains(&path) && err.contains("line 2") && err.contains("cpu_memroy"),
        "{err}"
    );
}

#[test]
fn proc_only_mode_reports_cpu_and_marks_ebpf_off() {
    require_root();
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "1000"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--no-ebpf"]);
    let t = target_label(&d);
    let truth = w.go();
    assert_eq!(
        d.value("monitor_ebpf_attached", &[("program", "sys_enter")]),
        Some(0.0)
    );
    // /proc/PID/stat utime+stime is in clock ticks (10 ms): allow two ticks per thread.
    let oncpu = d.settled("app_oncpu_seconds_total", &[("target", &t)]);
    let truth_s = oncpu_truth_seconds(&truth);
    assert!(
        (oncpu - truth_s).abs() <= 0.04,
        "/proc-only on-CPU {oncpu} vs {truth_s}"
    );
    assert!(
        d.value("app_syscalls_total", &[("target", &t)]).is_none(),
        "no syscall series without eBPF"
    );
    w.finish();
}

/// Capabilities are per thread: every thread of the daemon (the sampler, the notifiers' outbox
/// writer, the runtime's) must have dropped them, from the bounding set too, with no_new_privs.
#[test]
fn daemon_drops_capabilities_after_attaching() {
    require_root();
    let w = Workload::start(&workload_bin(), &["spin", "--millis", "10"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    // Only CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19) remain; CAP_SYS_ADMIN (21) and
    // CAP_PERFMON (38) are gone, and CAP_BPF (39) too on kernels that check it only when maps and
    // programs are created (6.5 and later). Older ones check it on every map access, which the
    // daemon needs to add processes to the target set: the other daemon tests show it can.
    let (major, minor) = kernel_version();
    let base: u64 = (1 << 2) | (1 << 19);
    let allowed = if (major, minor) >= (6, 5) {
        vec![base]
    } else {
        vec![base, base | (1 << 39)]
    };
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.child.id())).unwrap();
    let mut seen = Vec::new();
    for task in tasks {
        let dir = task.unwrap().path();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {}", dir.display()))
                .trim()
                .to_owned()
        };
        let mask = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert!(
                allowed.contains(&mask(set)),
                "thread {} ({}) {set} {:x} on {major}.{minor}",
                dir.display(),
                comm.trim(),
                mask(set)
            );
        }
        assert_eq!(
            mask("CapInh:"),
            0,
            "thread {} ({})",
            dir.display(),
            comm.trim()
        );
        assert_eq!(
            mask("CapAmb:"),
            0,
            "thread {} ({})",
            dir.display(),
            comm.trim()
        );
        assert_eq!(
            field("NoNewPrivs:"),
            "1",
            "thread {} ({})",
            dir.display(),
            comm.trim()
        );
        seen.push(comm.trim().to_owned());
    }
    assert!(
        seen.iter().any(|c| c == "sampler") && seen.iter().any(|c| c == "monitor-outbox"),
        "the sampler and outbox threads are among those checked: {seen:?}"
    );
    drop(w);
}

/// A sampler that dies must take the daemon down (non-zero exit, saying why) rather than leave
/// /metrics serving its last values with app_up 1.
#[test]
fn a_dead_sampler_ends_the_daemon() {
    require_root();
    let w = Workload::start(&workload_bin(), &["spin", "--millis", "10"]);
    let config = tempfile::NamedTempFile::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "{FAST_CONFIG}\n[alerting]\nstate_dir = \"{}\"\n",
            state.path().display()
        ),
    )
    .unwrap();
    let port = free_port().to_string();
    let mut child = Command::new(monitor_bin())
        .args(["run", "--pid", &w.pid().to_string(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(config.path())
        .env("MONITOR_TEST_SAMPLER_PANIC_AFTER", "3")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon kept running after its sampler panicked");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("the sampler thread stopped (it panicked"),
        "stderr says why:\n{stderr}"
    );
    drop(w);
}

/// The time of the last good sample is exported and moves at the sampling cadence.
#[test]
fn last_sample_timestamp_follows_the_cadence() {
    require_root();
    let w = Workload::start(&workload_bin(), &["spin", "--millis", "10"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    d.wait_for(
        |m| metric_value(m, "monitor_last_sample_timestamp_seconds", &[]).is_some_and(|v| v > 0.0),
        "a first sample",
    );
    let first = d
        .value("monitor_last_sample_timestamp_seconds", &[])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let second = d
        .value("monitor_last_sample_timestamp_seconds", &[])
        .unwrap();
    // The cadence is 300 ms: a second later the stamp has moved and is at most one cadence old.
    assert!(second > first, "{first} then {second}");
    assert!(
        (now() - second) < 1.0,
        "last sample {second}, now {}",
        now()
    );
    assert_eq!(d.value("monitor_sample_failures_total", &[]), Some(0.0));
    drop(w);
}

/// GET `path` of a daemon on loopback: (status, body), for any status.
fn get(port: u16, path: &str) -> (u16, String) {
    common::http_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The endpoints exporters have: healthy while serving, ready once the target is sampled with
/// every program attached, and the build's version and revision as a series.
#[test]
fn health_readiness_and_build_info() {
    require_root();
    let w = Workload::start(&workload_bin(), &["spin", "--millis", "10"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    assert_eq!(get(d.port, "/-/healthy").0, 200);
    // Daemon::start waited for the first sample.
    let (status, body) = get(d.port, "/-/ready");
    assert_eq!(status, 200, "{body}");
    let version = String::from_utf8(
        Command::new(monitor_bin())
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let info = samples(&d.metrics_text(), "monitor_build_info");
    let [(labels, 1.0)] = info.as_slice() else {
        panic!("{info:?}");
    };
    let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        version.split_whitespace().nth(1),
        label("version").as_deref(),
        "{version}"
    );
    let revision = label("revision").unwrap();
    assert!(
        revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit())
            || revision == "unknown",
        "{revision}"
    );
    drop(w);
}

/// The daemon's settled voluntary switches against the `switches` workload's own getrusage
/// (4 threads x 300 sleeps), within 1 %.
fn assert_voluntary_switches_match(d: &Daemon, truth: &serde_json::Value, what: &str) {
    let t = target_label(d);
    let ours = d.settled(
        "app_context_switches_total",
        &[("target", &t), ("kind", "voluntary")],
    );
    let truth_vol = u(&truth["rusage_self"]["nvcsw"]) as f64;
    assert!(truth_vol >= 1200.0, "{truth}");
    assert_within(what, ours, truth_vol, 0.01);
}

/// Switches are the sum over every thread, in /proc-only mode too, where the process-level
/// status file shows the leader's alone.
#[test]
fn proc_only_switches_are_every_threads() {
    require_root();
    let mut w = Workload::start(
        &workload_bin(),
        &["switches", "--threads", "4", "--count", "300"],
    );
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--no-ebpf"]);
    let truth = w.go();
    // The parked threads' last sleep comes after the report: a few more.
    assert_voluntary_switches_match(&d, &truth, "voluntary switches (/proc)");
    w.finish();
}

/// A process that joins with threads that already switched: the join baseline holds every
/// thread's switches, not the leader's alone.
#[test]
fn join_baseline_holds_every_threads_switches() {
    require_root();
    let mut w = Workload::start(
        &workload_bin(),
        &["switches", "--threads", "4", "--count", "300"],
    );
    let truth = w.go();
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &[]);
    assert_voluntary_switches_match(&d, &truth, "voluntary switches (joined)");
    w.finish();
}

/// Without sched_switch, processes still leave the kernel's target set when they exit; user
/// space's discovery, which would also drop them, is set to an hour so only the kernel's own
/// cleanup counts here.
#[test]
fn exited_children_leave_the_target_set_without_sched() {
    require_root();
    let mut w = Workload::start(
        &workload_bin(),
        &["fork", "--children", "3", "--millis", "100"],
    );
    let config = FAST_CONFIG.replace("discovery = \"200ms\"", "discovery = \"1h\"");
    assert_ne!(config, FAST_CONFIG);
    let d = Daemon::start_configured(
        &["--pid", &w.pid().to_string()],
        &["--programs", "syscalls"],
        &config,
    );
    let t = target_label(&d);
    let truth = w.go();
    assert_eq!(truth["work"]["children"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        d.settled("app_processes", &[("target", &t)]),
        1.0,
        "the three reaped children left the target set"
    );
    w.finish();
}

/// A kernel that refuses BPF (here: an unprivileged user without CAP_BPF): `run` says why and
/// what to do, falls back to /proc with `monitor_ebpf_attached 0`, and `--require-ebpf` refuses.
#[test]
fn refused_bpf_falls_back_to_proc_loudly_or_refuses_when_required() {
    require_root();
    let unprivileged = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(monitor_bin())
        .args(args);
        cmd
    };
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "10"]);
    let out = unprivileged(&[
        "run",
        "--pid",
        &w.pid().to_string(),
        "--require-ebpf",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ])
    .output()
    .unwrap();
    assert!(
        !out.status.success(),
        "--require-ebpf must refuse without BPF"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run as root") && err.contains("CAP_BPF"),
        "{err}"
    );

    let port = free_port();
    let child = unprivileged(&[
        "run",
        "--pid",
        &w.pid().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = ureq::get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default();
        if text.contains("app_up{") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the /proc-only daemon never served metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        metric_value(
            &text,
            "monitor_ebpf_attached",
            &[("program", "sched_switch")]
        ),
        Some(0.0)
    );
    assert_eq!(metric_value(&text, "app_up", &[]), Some(1.0));
    // Serving, but not doing the job it was asked to: not ready, saying why.
    assert_eq!(get(port, "/-/healthy").0, 200);
    let (status, body) = get(port, "/-/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kernel programs not loaded"), "{body}");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eBPF IS NOT AVAILABLE") && err.contains("falling back to /proc only"),
        "{err}"
    );
    w.go();
    w.finish();
}

/// A thread that never blocks is counted while it runs, not only when it is switched out:
/// `stat --pid` over one second of a busy process reports about one second.
#[test]
fn running_slices_are_included() {
    require_root();
    // Long enough to still spin after a slow start of monitor stat (seconds under an emulated
    // CPU); killed once measured.
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "60000"]);
    let pid = w.pid();
    let schedstat = || -> f64 {
        let task = format!("/proc/{pid}/task");
        std::fs::read_dir(task)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path().join("schedstat");
                std::fs::read_to_string(p)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<f64>()
                    .unwrap()
            })
            .sum::<f64>()
            / 1e9
    };
    // Start the spin, let it run, then profile one second of it.
    w.release();
    std::thread::sleep(Duration::from_millis(500));
    let (before, t0) = (schedstat(), std::time::Instant::now());
    let out = Command::new(monitor_bin())
        .args([
            "stat",
            "--json",
            "--duration",
            "1",
            "--pid",
            &pid.to_string(),
        ])
        .output()
        .unwrap();
    let (after, elapsed) = (schedstat(), t0.elapsed().as_secs_f64());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = report["oncpu_seconds"].as_f64().unwrap();
    let window = report["wall_seconds"].as_f64().unwrap();
    // The kernel's window brackets ours. Outside ours (the profiler starting and stopping) the one
    // spinning thread can have run at most that long: so ours is within these bounds, and a
    // running slice left out would break the lower one.
    let truth = after - before;
    let outside = elapsed - window;
    assert!(
        ours <= truth + 0.002 && ours >= truth - outside - 0.02,
        "stat --pid: {ours} s in a {window} s window; schedstat {truth} s over {elapsed} s"
    );
    // Dropping it kills it: its report is not needed.
    drop(w);
}

#[test]
fn a_profile_shorter_than_one_sample_still_measures() {
    require_root();
    // Millions of getppid calls a second: the kernel counts each as it returns, so any window
    // between two samples holds some. A profile of 1 us is over before its first sample is
    // done: it must still take a second one, not report the first against itself.
    let mut w = Workload::start(
        &workload_bin(),
        &["burst", "--idle-ms", "0", "--millis", "60000"],
    );
    let pid = w.pid();
    w.release();
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new(monitor_bin())
        .args([
            "stat",
            "--json",
            "--duration",
            "0.000001",
            "--pid",
            &pid.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "monitor stat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let calls = report["syscalls"]["getppid"].as_u64().unwrap_or(0);
    assert!(
        calls > 0,
        "a 1 us profile of a getppid loop counted none: {report}"
    );
    drop(w);
}

#[test]
fn programs_left_out_export_no_series() {
    require_root();
    // It opens files and makes syscalls while starting: counted, they would show.
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "400"]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--programs", "sched"]);
    let t = target_label(&d);
    let truth = w.go();
    let text = d.metrics_text();
    for absent in [
        "app_syscalls_total{",
        "app_fd_opens_total{",
        "app_fd_open_errors_total{",
        "app_page_fault_exceptions_total{",
    ] {
        assert!(
            !text.contains(absent),
            "{absent} exported though its programs were left out:\n{text}"
        );
    }
    for (program, attached) in [
        ("sched_switch", 1.0),
        ("sched_process_fork", 1.0),
        ("sched_process_exit", 1.0),
        ("sys_enter", 0.0),
        ("sys_exit", 0.0),
        ("page_fault_user", 0.0),
    ] {
        assert_eq!(
            d.value("monitor_ebpf_attached", &[("program", program)]),
            Some(attached),
            "{program}"
        );
    }
    assert!(
        d.value("app_context_switches_total", &[("target", &t)])
            .is_some()
    );
    // On-CPU time still matches the kernel's accounting with only sched_switch attached, exit
    // included.
    let wait4 = w.finish_with_rusage();
    assert!(oncpu_truth_seconds(&truth) <= wait4.oncpu_seconds + 1e-3);
    let oncpu = d.settled("app_oncpu_seconds_total", &[("target", &t)]);
    assert_within("app_oncpu_seconds_total", oncpu, wait4.oncpu_seconds, 0.01);
}
