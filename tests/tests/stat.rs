//! `monitor stat` against workloads that know their own truth, and against strace.
mod common;

use std::process::Command;

use common::*;

#[test]
fn oncpu_matches_getrusage_within_one_percent() {
    require_root();
    for args in [
        ["spin", "--millis", "1500", "--threads", "1"],
        ["spin", "--millis", "1000", "--threads", "2"],
    ] {
        let (m, w, code) = stat_workload(&args);
        assert_eq!(code, 0);
        // getrusage's utime+stime is sum_exec_runtime, the scheduler's own ns accounting.
        assert_matches_wait4(&format!("{args:?}"), &m, &w);
    }
}

#[test]
fn faults_match_getrusage_within_two_percent() {
    require_root();
    let (m, w, _) = stat_workload(&["faults", "--pages", "20000", "--rounds", "2"]);
    let truth = rusage_faults(&w);
    assert!(truth >= 40_000, "the workload touched 40000 pages: {truth}");
    assert_matches_wait4("the faults workload", &m, &w);
    assert_eq!(
        u(&m["page_faults"]["minor"]) + u(&m["page_faults"]["major"]),
        u(&m["page_faults"]["total"])
    );
}

#[test]
fn syscall_called_n_times_is_counted_n_times() {
    require_root();
    let n = 123_457;
    let (m, w, _) = stat_workload(&["syscalls", "--count", &n.to_string()]);
    assert_eq!(u(&w["work"]["syscalls"]), n);
    assert_eq!(u(&m["syscalls"]["getppid"]), n, "getppid count");
    assert!(m["syscall_seconds"]["getppid"].as_f64().unwrap() > 0.0);
    assert_eq!(
        u(&m["syscalls"]["exit_group"]),
        1,
        "exit_group never returns but is counted"
    );
}

/// strace -c is the peer every engineer trusts: the counts must agree for every syscall the
/// workload makes (strace's own ptrace work does not show up in the tracee's counts).
#[test]
fn syscall_counts_match_strace() {
    require_root();
    let args = ["files", "--opens", "300", "--fails", "20"];
    let (m, _, _) = stat_workload(&args);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("strace.txt");
    let status = Command::new("strace")
        .args(["-f", "-c", "-U", "name,calls", "-o"])
        .arg(&out)
        .arg(workload_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("strace is installed by `cargo xtask setup --test-deps`");
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let mut compared = 0;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(calls)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        if name == "total" || name.starts_with('-') {
            continue;
        }
        let ours = m["syscalls"][name].as_u64().unwrap_or(0);
        assert_eq!(
            ours, calls,
            "{name}: monitor {ours}, strace {calls}\nstrace:\n{text}"
        );
        compared += 1;
    }
    assert!(compared >= 10, "compared only {compared} syscalls:\n{text}");
}

#[test]
fn fd_opens_closes_and_failed_opens_are_exact() {
    require_root();
    // The process's own start-up opens (loader, runtime, /proc reads) are the same in both runs.
    let (m0, _, _) = stat_workload(&["files", "--opens", "0", "--fails", "0"]);
    let (m1, w, _) = stat_workload(&["files", "--opens", "500", "--fails", "37"]);
    assert_eq!(u(&w["work"]["opens"]), 500);
    assert_eq!(u(&m1["fd_opens"]) - u(&m0["fd_opens"]), 500);
    assert_eq!(u(&m1["fd_closes"]) - u(&m0["fd_closes"]), 500);
    assert_eq!(u(&m1["fd_open_errors"]) - u(&m0["fd_open_errors"]), 37);
    assert_eq!(
        m1["fd_open_errors_by_errno"]["ENOENT"]
            .as_u64()
            .unwrap_or(0)
            - m0["fd_open_errors_by_errno"]["ENOENT"]
                .as_u64()
                .unwrap_or(0),
        37
    );
    // Every open the process made is one it closed or one still open at exit: no phantom counts.
    assert_eq!(
        u(&m1["fd_opens"]),
        u(&m1["syscalls"]["openat"]) - u(&m1["fd_open_errors"])
    );
}

#[test]
fn forking_workload_is_counted_with_its_children() {
    require_root();
    // Children touch pages so that the parent's few faults after it measured its own truth
    // (printing the report) stay well inside the tolerance.
    let (m, w, code) = stat_workload(&[
        "fork",
        "--children",
        "4",
        "--millis",
        "300",
        "--pages",
        "2000",
    ]);
    assert_eq!(code, 0);
    assert_eq!(u(&m["processes_forked"]), 4);
    // Each child calls getppid 1000 times; the parent never does.
    assert_eq!(u(&m["syscalls"]["getppid"]), 4000);
    assert_matches_wait4("parent and children", &m, &w);
}

/// Children whose threads are all still running when the child exits: exit_group kills them at
/// once on both CPUs, so several threads of one process are in their exit path together. That is
/// where a kernel that does not say which thread is the last of its group (before 6.16) could
/// take the process out of the target set before its last thread was accounted.
#[test]
fn threads_exiting_together_are_all_counted() {
    require_root();
    check_threads_exiting_together(&[], "children whose threads exit together");
}

/// The same without sched_switch: no final switch-out counts an ended thread, so its exit
/// counts it (stale by its running slice), its free adds the rest, and monitor leaves exiting
/// threads out of what it reads in /proc. Counted twice or not at all, it would miss wait4.
#[test]
fn threads_exiting_together_are_all_counted_without_sched() {
    require_root();
    check_threads_exiting_together(
        &["--programs", "syscalls", "--programs", "faults"],
        "children whose threads exit together, without sched",
    );
}

/// 3 children x 4 threads, each touching 2000 pages and spinning 200 ms, profiled with
/// `options`: every fork, call, fault and nanosecond of CPU counted.
fn check_threads_exiting_together(options: &[&str], what: &str) {
    let (m, w, code) = stat_workload_with(
        options,
        &[
            "fork",
            "--children",
            "3",
            "--threads",
            "4",
            "--millis",
            "200",
            "--pages",
            "2000",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(u(&m["processes_forked"]), 3);
    assert_eq!(u(&m["syscalls"]["getppid"]), 3000);
    // 3 children x 4 threads x 2000 pages, every one faulted by a thread killed at exit.
    assert!(rusage_faults(&w) >= 24_000, "{}", rusage_faults(&w));
    assert_matches_wait4(what, &m, &w);
}

#[test]
fn stat_exits_with_the_commands_exit_code() {
    require_root();
    let status = Command::new(monitor_bin())
        .args(["stat", "--", "sh", "-c", "exit 7"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn fds_alone_are_exact_without_the_syscall_programs() {
    require_root();
    // --programs fds attaches sys_exit alone: every exit takes the filter path and reads the
    // syscall number from the saved registers instead of the start slot sys_enter would fill.
    let fds = ["--programs", "fds"];
    let (m0, _, _) = stat_workload_with(&fds, &["files", "--opens", "0", "--fails", "0"]);
    let (m1, w, _) = stat_workload_with(&fds, &["files", "--opens", "400", "--fails", "23"]);
    assert_eq!(u(&w["work"]["opens"]), 400);
    assert_eq!(u(&m1["fd_opens"]) - u(&m0["fd_opens"]), 400);
    assert_eq!(u(&m1["fd_closes"]) - u(&m0["fd_closes"]), 400);
    assert_eq!(u(&m1["fd_open_errors"]) - u(&m0["fd_open_errors"]), 23);
    // Nothing counted the syscalls themselves.
    let syscalls = m1["syscalls"].as_object().map_or(0, |o| o.len());
    assert_eq!(
        syscalls, 0,
        "syscalls counted without sys_enter: {}",
        m1["syscalls"]
    );
}

#[test]
fn latency_of_calls_that_block_and_migrate_is_kept() {
    require_root();
    // 100 ms sleeps: the workload's clock reads around each call, and the kernel's entry and
    // exit around monitor's own timestamps, add time that an emulated CPU makes large (0.2 to
    // 0.6 ms a call under QEMU's TCG: 6.1 read 1.07 % off with 50 ms sleeps); it must stay
    // well inside the 1 %.
    let (m, w, _) = stat_workload(&["sleeps", "--count", "20", "--millis", "100"]);
    let n = u(&w["work"]["sleeps"]);
    assert_eq!(u(&m["syscalls"]["nanosleep"]), n, "nanosleep calls");
    // Each call enters on one CPU and returns on the other: a start time kept per CPU would
    // lose or mismatch them.
    let migrated = u(&w["work"]["migrated"]);
    assert!(
        migrated >= n / 2,
        "only {migrated} of {n} sleeps returned on another CPU: this test needs two CPUs the \
         workload may run on"
    );
    let truth = u(&w["work"]["sleep_ns"]) as f64 / 1e9;
    let ours = m["syscall_seconds"]["nanosleep"].as_f64().unwrap();
    // The workload's clock reads bracket the kernel's entry and exit on the same clock.
    assert!(
        ours <= truth,
        "nanosleep seconds: monitor {ours} above the workload's bracket {truth}"
    );
    assert_within("nanosleep seconds", ours, truth, 0.01);
}

/// Per-thread state is removed at each thread's exit in the kernel, so a process that makes
/// more threads over its life than the map holds (and, with pid_max 32768, reuses their tids)
/// still has every thread's on-CPU time counted. Each thread works 0.5 ms, about what a Python
/// thread that handles one small task costs: monitor also counts the few microseconds a thread
/// runs after the kernel's own accounting (getrusage) has let it go, which against threads that
/// do almost nothing would be more than 1 %.
#[test]
fn fifty_thousand_short_lived_threads_are_all_counted() {
    require_root();
    let (m, w, code) = stat_workload(&["threads", "--total", "50000", "--spin-us", "500"]);
    assert_eq!(code, 0);
    assert_matches_wait4("50000 threads one after another", &m, &w);
    assert_eq!(
        m["kernel_map_full"]["THREAD_STATS"], 0,
        "no insert may fail with one thread alive at a time: {}",
        m["kernel_map_full"]
    );
}

/// More threads alive at once than the per-thread map holds: inserts fail and are counted, and
/// no on-CPU time is lost (a thread without an entry is counted whole when it dies). Each thread
/// works 10 ms. The 600 threads exit at once, and monitor also counts what each runs after the
/// kernel's own accounting (getrusage) has let it go: a few microseconds on hardware, but about
/// 120 µs each under an emulated CPU with 600 exits contending, 1.3 % of this run on 6.1 under
/// TCG. So the bound above is 3 %, and the bound below, which shows nothing is lost, stays 1 %.
#[test]
fn a_full_thread_map_is_counted_and_loses_no_cpu() {
    require_root();
    let (m, _, code) = stat_workload_env(
        &[("MONITOR_MAX_TARGET_THREADS", "256")],
        &[
            "threads",
            "--total",
            "600",
            "--alive",
            "600",
            "--spin-us",
            "10000",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        u(&m["kernel_map_full"]["THREAD_STATS"]) > 0,
        "600 threads alive in a map of 256: {}",
        m["kernel_map_full"]
    );
    let ours = m["oncpu_seconds"].as_f64().unwrap();
    let truth = m["wait4"]["oncpu_seconds"].as_f64().unwrap();
    assert!(
        ours >= truth * 0.99 && ours <= truth * 1.03,
        "on-CPU with a full thread map: monitor {ours} s vs wait4 {truth} s"
    );
}

/// Switches are counted for every thread, as getrusage sums them.
#[test]
fn context_switches_of_every_thread_match_getrusage() {
    require_root();
    let (m, _, code) = stat_workload(&["switches", "--threads", "4", "--count", "300"]);
    assert_eq!(code, 0);
    let ours = u(&m["context_switches"]["voluntary"]) + u(&m["context_switches"]["involuntary"]);
    let truth = u(&m["wait4"]["voluntary_switches"]) + u(&m["wait4"]["involuntary_switches"]);
    assert!(
        truth >= 1200,
        "4 threads slept 300 times each: {}",
        m["wait4"]
    );
    assert_within("context switches", ours as f64, truth as f64, 0.01);
}

/// Raises pid_max for the life of the guard, restoring it after.
struct PidMax(String);

impl PidMax {
    fn raise_to(value: u32) -> Self {
        let old = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        if old.trim().parse::<u32>().unwrap() < value {
            std::fs::write("/proc/sys/kernel/pid_max", value.to_string())
                .expect("raising pid_max (as root)");
        }
        Self(old)
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/pid_max", self.0.trim());
    }
}

/// Two processes whose pids share a syscall start slot (equal modulo 65536, as threads of a large
/// pool on a host with a high pid_max are) sleep at the same time: neither call's latency is
/// lost or taken for the other's.
#[test]
fn syscall_latency_of_threads_sharing_a_start_slot_is_kept() {
    require_root();
    let _pid_max = PidMax::raise_to(4 * 65536);
    // 50 ms calls: the bracket's own clock reads stay far below 1 % under an emulated CPU.
    let (m, w, code) = stat_workload(&["collide", "--count", "20", "--millis", "50"]);
    assert_eq!(code, 0, "{w}");
    let children = w["work"]["children"].as_array().unwrap();
    let (a, b) = (u(&children[0]), u(&children[1]));
    assert_eq!(a % 65536, b % 65536, "{a} and {b} share a slot");
    assert_eq!(u(&m["syscalls"]["nanosleep"]), 40);
    let truth = u(&w["work"]["sleep_ns"]) as f64 / 1e9;
    let ours = m["syscall_seconds"]["nanosleep"].as_f64().unwrap();
    assert!(
        ours <= truth,
        "monitor {ours} s inside the calls' own bracket {truth} s"
    );
    assert_within("nanosleep latency in a shared slot", ours, truth, 0.01);
}
