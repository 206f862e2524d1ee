//! What runs inside each guest: `monitor check` with every program attached, the privileged
//! accuracy tests that need only the kernel (monitor stat against the workload's own truth,
//! forking and threaded workloads, `monitor run` serving /metrics, a `--comm` restart, limits
//! from the guest's cgroup v2 tree, HTTP requests and explicit tags seen by the requests family),
//! and a few `monitor stat --json` runs whose figures come back to the host for the summary.
//!
//! Timing benchmarks stay on the host: under TCG every cost is emulated. Accuracy does not
//! depend on speed (both sides read the kernel's own accounting), so the tests' tolerances hold.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::setup::Tools;

/// The test binaries the guest runs, built on the host.
pub struct TestBinaries {
    /// tests/tests/stat.rs: `monitor stat` against workloads that know their own truth.
    pub stat: PathBuf,
    /// tests/tests/daemon.rs: `monitor run`.
    pub daemon: PathBuf,
    /// tests/tests/limits.rs: limits from the guest's cgroup v2 tree (the host has v1).
    pub limits: PathBuf,
    /// tests/tests/requests.rs: the requests family against Python servers on the guest's
    /// loopback (the guest's root is the host's, so the test venv is there too).
    pub requests: PathBuf,
    /// The test venv's python3 (setup::python_env).
    pub python: PathBuf,
}

/// The daemon tests that need only the kernel and the workload (the rest start Prometheus or
/// Alertmanager, which the host's run covers).
const DAEMON_TESTS: &[&str] = &[
    "run_metrics_match_the_workloads_truth",
    "syscalls_and_faults_of_a_running_process_are_counted",
    "forked_children_join_the_target",
    "comm_target_that_restarts_is_followed_in_the_same_series",
    "target_that_exits_leaves_app_up_zero_and_the_daemon_serving",
    "running_slices_are_included",
    "programs_left_out_export_no_series",
    "daemon_drops_capabilities_after_attaching",
    "a_dead_sampler_ends_the_daemon",
    "last_sample_timestamp_follows_the_cadence",
    "proc_only_switches_are_every_threads",
    "join_baseline_holds_every_threads_switches",
    "exited_children_leave_the_target_set_without_sched",
];

/// The requests tests the guest runs: the kernel side of HTTP detection (every socket syscall
/// the servers make, iovec and msghdr buffers, the ring buffer) and of slices (explicit tags'
/// CPU against the threads' own clocks). The rest parse and route in user space, which the
/// host's run covers.
const REQUESTS_TESTS: &[&str] = &[
    "keep_alive_pipelined_split_and_reused_fds_count_each_request_once",
    "interim_responses_streams_and_large_bodies_end_with_their_final_response",
    "explicit_tags_get_their_threads_cpu_and_syscalls",
];

/// `monitor stat --json -- workload ARGS` runs whose reports come back as `<name>.json`.
const PROBES: &[(&str, &str)] = &[
    ("spin", "spin --millis 1500 --threads 2"),
    ("faults", "faults --pages 20000 --rounds 2"),
    ("syscalls", "syscalls --count 100000"),
    (
        "fork-threads",
        "fork --children 3 --threads 4 --millis 200 --pages 2000",
    ),
    ("threads", "threads --total 3000 --spin-us 500"),
];

/// Stat tests the guest leaves to the host: the same kernel code as the host's run (and its
/// compat-variant pass), too long under an emulated CPU; the `threads` probe covers the path.
const STAT_TESTS_SKIPPED: &[&str] = &["fifty_thousand_short_lived_threads_are_all_counted"];

/// Builds the test binaries and returns their paths (from cargo's own report, so a stale binary
/// of an earlier build is never picked).
pub fn build_test_binaries(tools: &Tools) -> anyhow::Result<TestBinaries> {
    let out = crate::cargo(tools)
        .args([
            "test",
            "--release",
            "-p",
            "monitor-tests",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!(
            "building the test binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let executable = |name: &str| -> anyhow::Result<PathBuf> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"]["name"] == name && v["target"]["kind"][0] == "test")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo reported no executable for test {name}"))
    };
    Ok(TestBinaries {
        stat: executable("stat")?,
        daemon: executable("daemon")?,
        limits: executable("limits")?,
        requests: executable("requests")?,
        python: crate::setup::python_env()?,
    })
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The script text. The harness exports MONITOR_BIN, WORKLOAD_BIN, MONITOR_VM_KERNEL and
/// MONITOR_VM_RESULTS, the script itself MONITOR_TEST_PYTHON; every step runs even when one
/// fails, and the exit code says whether all passed.
pub fn script(tests: &TestBinaries) -> String {
    let mut s = format!("export MONITOR_TEST_PYTHON={}\n", quote(&tests.python));
    s.push_str(
        r#"set -u
failed=""
step() {
    name=$1; shift
    echo "== $name"
    if "$@"; then echo "== $name: ok"; else echo "== $name: FAILED ($?)"; failed="$failed $name"; fi
}
step "monitor check" "$MONITOR_BIN" check
"#,
    );
    let skips: String = STAT_TESTS_SKIPPED
        .iter()
        .map(|t| format!(" --skip {t}"))
        .collect();
    s.push_str(&format!(
        "step \"stat tests\" {} --test-threads=1{skips}\n",
        quote(&tests.stat)
    ));
    s.push_str(&format!(
        "step \"daemon tests\" {} --test-threads=1 --exact {}\n",
        quote(&tests.daemon),
        DAEMON_TESTS.join(" ")
    ));
    s.push_str(&format!(
        "step \"requests tests\" {} --test-threads=1 --exact {}\n",
        quote(&tests.requests),
        REQUESTS_TESTS.join(" ")
    ));
    s.push_str(&format!(
        "step \"limits tests\" {} --test-threads=1\n",
        quote(&tests.limits)
    ));
    for (name, args) in PROBES {
        s.push_str(&format!(
            "step \"stat {name}\" sh -c '\"$MONITOR_BIN\" stat --json -- \"$WORKLOAD_BIN\" {args} > \"$MONITOR_VM_RESULTS/{name}.json\"'\n"
        ));
    }
    s.push_str(
        r#"if [ -n "$failed" ]; then echo "== failed:$failed"; exit 1; fi
echo "== every step passed"
"#,
    );
    s
}

/// One line of figures from the probes a guest left in `results`: how far monitor's on-CPU time
/// and faults are from the kernel's totals (wait4), and the counted syscalls against those made.
pub fn accuracy(results: &Path) -> anyhow::Result<String> {
    let read = |name: &str| -> anyhow::Result<(Value, Value)> {
        let path = results.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().filter(|l| l.starts_with('{'));
        let mut next = || -> anyhow::Result<Value> {
            let line = lines
                .next()
                .with_context(|| format!("{}: a report is missing", path.display()))?;
            serde_json::from_str(line).with_context(|| format!("parsing {}", path.display()))
        };
        // The workload prints its own report first; monitor's follows once it has exited.
        let workload = next()?;
        Ok((next()?, workload))
    };
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    // The truth is wait4's: the kernel's totals for the command, which the accuracy tests use.
    let faults = |m: &Value| n(&m["wait4"]["minor_faults"]) + n(&m["wait4"]["major_faults"]);
    let cpu = |m: &Value| n(&m["wait4"]["oncpu_seconds"]);
    let off =
        |measured: f64, truth: f64| format!("{:.3} %", (measured - truth).abs() / truth * 100.0);
    let (m, _) = read("spin")?;
    let spin = off(n(&m["oncpu_seconds"]), cpu(&m));
    let (m, _) = read("faults")?;
    let fault = off(n(&m["page_faults"]["total"]), faults(&m));
    let (m, w) = read("syscalls")?;
    let calls = format!("{}/{}", m["syscalls"]["getppid"], w["work"]["syscalls"]);
    let (m, _) = read("fork-threads")?;
    let tree_cpu = off(n(&m["oncpu_seconds"]), cpu(&m));
    let tree_faults = off(n(&m["page_faults"]["total"]), faults(&m));
    let (m, _) = read("threads")?;
    let threads_cpu = off(n(&m["oncpu_seconds"]), cpu(&m));
    Ok(format!(
        "on-CPU {spin} off (2 spinning threads), faults {fault} off, getppid {calls} counted; \
         3 forked children x 4 threads killed together: on-CPU {tree_cpu}, faults {tree_faults} off; \
         3000 short-lived threads: on-CPU {threads_cpu} off"
    ))
}
