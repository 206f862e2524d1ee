//! `cargo xtask bench [--quick]`: overhead, footprint and accuracy, measured in one run against
//! the peers a user would otherwise run, into `BENCHMARKS.md`.
//!
//! 1-3. Overhead per operation (syscall, open+close, page fault, context switch) in a target and
//!      in a non-target: monitor, the equivalent bpftrace program, empty programs (the floor).
//!      Configurations run interleaved in rounds; medians and min-max; ratios.
//! 4.   The daemon's RSS and CPU at default cadences with 1, 10 and 100 target processes and a low
//!      and very high event rate, next to prometheus-process-exporter; scrape latency.
//! 5.   Accuracy against getrusage/schedstat, the workload's own counts, strace, process-exporter
//!      and pidstat.
//! 6.   The requests family: CPU per request of a minimal keep-alive HTTP server with and without
//!      it; the daemon's CPU at 5,000 requests/s and its RSS with 10 and 10,000 connections.
//! 7.   The history store: bytes per sample next to Prometheus blocks of the same history, and
//!      the import rate.
//! 8.   The endpoint secured (TLS and basic auth) against plain HTTP: latency per scrape.
//!
//! A peer that fails (bpftrace cannot attach, no process-exporter) shows as "n/a (reason)"; a
//! failure of monitor itself aborts the run. Every child is killed and reaped on every path.
mod accuracy;
mod endpoint;
mod footprint;
mod history;
mod overhead;
mod requests;
mod tracers;
mod util;

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::workspace_root;
use overhead::{Config, Role, Storm};
use util::{Scratch, cpus};

/// `--only`: one section, printed, BENCHMARKS.md left as it is.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Only {
    /// Section 6: the requests family.
    Requests,
    /// Section 7: the history store.
    History,
    /// Section 8: the endpoint secured against plain.
    Endpoint,
}

pub fn run(quick: bool, only: Option<Only>) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench loads BPF programs and must run as root (sudo cargo xtask bench)");
    }
    if !std::path::Path::new("/sys/kernel/tracing/events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    let started = Instant::now();
    let scratch = Scratch::new()?;
    let rq = requests::Params::new(quick);
    let hp = history::Params::new(quick);
    if let Some(Only::History) = only {
        let h = history::measure(&scratch, &hp)?;
        println!(
            "## Goals\n\n{}\n## Method\n\n{}\n## Results\n\n{}",
            goal_table(h.goals()),
            h.method(&hp),
            h.table()
        );
        return Ok(());
    }
    let epp = endpoint::Params::new(quick);
    if let Some(Only::Endpoint) = only {
        let e = endpoint::measure(&scratch, &epp)?;
        println!(
            "## Goals\n\n{}\n## Method\n\n{}\n## Results\n\n{}",
            goal_table(e.goals()),
            e.method(&epp),
            e.table()
        );
        return Ok(());
    }
    if let Some(Only::Requests) = only {
        let r = requests::measure(&scratch, &rq)?;
        eprintln!(
            "bench: requests took {:.0} s (BENCHMARKS.md not rewritten)",
            started.elapsed().as_secs_f64()
        );
        println!(
            "## Goals\n\n{}\n## Method\n\n{}\n## Results\n\n{}",
            goal_table(r.goals(&rq)),
            r.method(&rq),
            r.table(&rq)
        );
        return Ok(());
    }
    let op = overhead::Params {
        rounds: if quick { 3 } else { 9 },
        syscalls: if quick { 1_000_000 } else { 2_000_000 },
        opens: if quick { 100_000 } else { 200_000 },
        fault_pages: 5_000,
        fault_rounds: if quick { 4 } else { 10 },
        pingpong: if quick { 100_000 } else { 300_000 },
        tags: if quick { 200_000 } else { 500_000 },
        // Both threads on one CPU: each round trip is two plain context switches. Across CPUs a
        // round trip is dominated by the wakeup IPI (about 80 us on this VM), which hides them.
        cpus: Some("0,0".to_string()),
        profile: !quick,
    };
    let fp = footprint::Params {
        // At least two 5 s scrapes inside every window, for the syscall rate.
        first: Duration::from_secs(if quick { 10 } else { 60 }),
        rest: Duration::from_secs(if quick { 10 } else { 60 }),
        scrapes: if quick { 200 } else { 1000 },
        quick,
    };
    let section = |name: &str, since: Instant| {
        eprintln!("bench: {name} took {:.0} s", since.elapsed().as_secs_f64());
        Instant::now()
    };
    let t = Instant::now();
    let overhead = overhead::measure(&scratch, &op)?;
    let t = section("overhead", t);
    let footprint = footprint::measure(&scratch, &fp)?;
    let t = section("footprint", t);
    let accuracy = accuracy::measure(&scratch, quick)?;
    let t = section("accuracy", t);
    let requests = requests::measure(&scratch, &rq)?;
    let t = section("requests", t);
    let history = history::measure(&scratch, &hp)?;
    let t = section("history", t);
    let endpoint = endpoint::measure(&scratch, &epp)?;
    section("endpoint", t);
    let took = started.elapsed();

    let report = report(
        quick, &op, &fp, &rq, &hp, &epp, &overhead, &footprint, &accuracy, &requests, &history,
        &endpoint, took,
    );
    std::fs::write(workspace_root().join("BENCHMARKS.md"), &report)
        .context("writing BENCHMARKS.md")?;
    println!("{report}");
    Ok(())
}

fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|_| "not installed".into())
}

#[allow(clippy::too_many_arguments)]
fn report(
    quick: bool,
    op: &overhead::Params,
    fp: &footprint::Params,
    rq: &requests::Params,
    hp: &history::Params,
    epp: &endpoint::Params,
    o: &overhead::Overhead,
    f: &[footprint::Row],
    a: &accuracy::Accuracy,
    r: &requests::Requests,
    h: &history::History,
    e: &endpoint::Endpoint,
    took: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Benchmarks\n\nMeasured by `cargo xtask bench{}` (took {:.0} s) on host `{}`: {} CPUs ({}), kernel {}, {}. \
         Peers: {}, {}. The machine is a shared VM: expect noise; every comparison below is interleaved.\n",
        if quick { " --quick" } else { "" },
        took.as_secs_f64(),
        util::hostname(),
        cpus(),
        util::cpu_model(),
        util::kernel(),
        util::date(),
        version("bpftrace", "--version"),
        version("prometheus-process-exporter", "-version")
            .replace("process-exporter, version  ", "process-exporter "),
    );
    s.push_str("## Goals\n\n");
    let mut rows = goals(o, f, a);
    rows.extend(r.goals(rq));
    rows.extend(h.goals());
    rows.extend(e.goals());
    s.push_str(&goal_table(rows));
    s.push_str("\n## Method\n\n");
    let _ = writeln!(
        s,
        "- **Overhead (1-3).** Each configuration runs in fresh `workload serve` processes: P, the pid the tracer is \
         pointed at, and Q, a process it is not pointed at. The tracer is attached with P's pid before any work \
         starts (monitor: `monitor run --pid P --require-ebpf`, polled until `/metrics` shows `app_up 1` with every \
         kernel program attached; bpftrace: its \"Attaching N probes...\" line on stdout, then 250 ms, since bpftrace \
         prints it just before attaching), then P (and Q) run the storms one by one and report `ns_per_op` measured \
         inside the process. {} rounds; each round runs every configuration once, the order reversed on every other \
         round (A B C ... C B A), so drift on this shared machine spreads over all of them. \"ns added\" is the median \
         over rounds of (configuration - nothing attached) in the same round; min .. max of those differences shown. \
         Ratios are of those medians.\n\
         - `monitor run --pid` attaches every kernel program it has (raw tracepoints sys_enter, sys_exit, \
         sched_switch, sched_process_fork/exit, page_fault_user/kernel, and the requests family's sched_waking and \
         sched_wakeup_new, its exit work done inside sys_exit) whatever the storm: that figure is the whole \
         daemon's cost for the operation. For the fd and context-switch goals monitor also runs with only the programs \
         of that job (`--programs fds`: sys_exit alone, reading the syscall number from the saved registers; \
         `--programs sched`: sched_switch), next to the bpftrace program for the same job. The fork and exit \
         followers are attached in every monitor configuration. `monitor run --pid --programs syscalls,sched,faults` is every family but requests: the getppid and context-switch storms run under it too, so what the family adds per target syscall (its exit work) and per context switch (the slice record sched_switch keeps for it, host-wide) shows. The explicit-tag storm (writes of `monitor:begin bench` and `monitor:end` to fd -1, alternately, each failing with EBADF; the family reads and sends each one to the daemon) runs under the default programs. Each bpftrace program does only the job named (the \
         program a user would write for that one question; the programs are in `xtask/src/bench/tracers.rs`); \
         \"bpftrace doing monitor's whole syscall job\" joins the count + latency program and the fd program.\n\
         - Floors: empty programs (`r0 = 0; exit`) loaded by the bench itself on raw_syscalls sys_enter + sys_exit, as \
         classic tracepoints (perf event + PERF_EVENT_IOC_SET_BPF, as bpftrace attaches) and as raw tracepoints \
         (monitor's attach type). bpftrace's own empty probes compile to `r0 = 1; exit`: returning 1 makes the kernel \
         go on to write a perf sample for the event into bpftrace's perf event, so \"bpftrace empty\" costs more than \
         the floor and is shown separately.\n\
         - Storm sizes: {} getppid calls (raw syscall), {} open+close pairs of /dev/null, {} x {} page faults on fresh \
         anonymous pages (THP off), {} pipe round trips between two threads{}.\n\
         - Kernel program run time: a separate pass after the timed rounds, one run per configuration with \
         `kernel.bpf_stats_enabled=1` (switched back afterwards; it adds two clock reads per program run, so it is kept \
         out of the timings), reading run_time_ns/run_cnt of the programs each tracer holds (its bpf-prog fds, names \
         from `bpftool -j prog show`). Runs include every process's events while the tracer was attached (raw \
         tracepoints run for all callers).\n\
         - **Footprint (4).** The workload is started first, then `monitor run --pid` (default cadences, \
         5 s for CPU/memory/kernel counters; its config only puts its state directory, the history store it keeps \
         by default among it, in the bench's scratch) and `prometheus-process-exporter -procnames {}` (the bench runs every \
         workload through a symlink with that name, so the exporter matches only them); 2 s settle, then a window of \
         {} s for the one-target low-rate case and {} s for the others. Both are scraped every 5 s during the window, \
         as Prometheus would. CPU = growth of the summed `/proc/PID/task/*/schedstat` run time over the window / wall \
         time (percent of one core); RSS = max of `/proc/PID/statm` resident over the window, read every 0.5 s. Target \
         syscalls/s from monitor's own `app_syscalls_total`. After the window, {} back-to-back scrapes of each \
         `/metrics` over one keep-alive connection (ureq) give p50/p99/max. The live-page row runs the low-rate case \
         again with Debian's headless Chromium showing the daemon's page at `/` the whole time (it polls `/api/live` \
         at the 5 s cadence and redraws every chart; 5 s settle for its first load).\n\
         - **Accuracy (5).** For each workload: (a) `monitor stat --json -- workload ARGS` against that run's own report \
         (getrusage self + children, schedstat-based `oncpu_truth_ns`, its work counts); fd counts are the difference \
         from a zero-work run of the same mode (start-up opens cancel). (b) `strace -f` and `monitor stat`, twice each, on a smaller run of the \
         same command: per-syscall counts. Every accuracy run has `MALLOC_ARENA_MAX=1`: two threads \
         that each make a malloc arena race for glibc's aligned-heap hint, and the loser trims its \
         mapping with one munmap more or less (pingpong made 7 or 8 under either tool). (c) one `workload serve` watched at once by `monitor \
         run` (100 ms cadences, counters read when two reads 250 ms apart agree; with --quick only for spin, files and fork), process-exporter (started first, so it \
         sees the process start) and `pidstat -u -r -w -p PID 1` (sum of the one-second rates); the zero-work variant \
         runs first, then the work: counts are (after work - after zero) - (after zero - before), CPU and faults are \
         totals since the process started (monitor, exporter: they are counters since start; pidstat: since it \
         started, against the truth since then), context switches are since the tracers attached (the bench reads \
         /proc/PID/status then).\n",
        op.rounds,
        op.syscalls,
        op.opens,
        op.fault_rounds,
        op.fault_pages,
        op.pingpong,
        op.cpus
            .as_ref()
            .map(|c| format!(" pinned to CPUs {c}"))
            .unwrap_or_default(),
        util::COMM,
        fp.first.as_secs(),
        fp.rest.as_secs(),
        fp.scrapes,
    );
    // Into the same list as the bullets above.
    s.pop();
    s.push_str(&r.method(rq));
    s.push_str(&h.method(hp));
    s.push_str(&e.method(epp));
    s.push_str("\n## Results\n\n");
    s.push_str(&o.tables(op));
    s.push_str(&footprint::table(f));
    s.push_str(&a.table());
    s.push_str(&r.table(rq));
    s.push_str(&h.table());
    s.push_str("\n### 8. The endpoint secured\n");
    s.push_str(&e.table());
    s
}

/// (goal, measured, met: None for informational rows).
type Rows = Vec<(String, String, Option<bool>)>;

fn goals(o: &overhead::Overhead, f: &[footprint::Row], a: &accuracy::Accuracy) -> Rows {
    let mut rows: Rows = vec![];
    let ratio_goal = |rows: &mut Rows, label: &str, r: Result<f64, String>, max: f64| match r {
        Ok(x) => rows.push((label.to_string(), format!("{x:.2}x"), Some(x <= max))),
        Err(e) => rows.push((label.to_string(), format!("n/a ({e})"), None)),
    };
    let sc = Storm::Syscalls;
    ratio_goal(
        &mut rows,
        "Target, per syscall (count + latency): <= 0.5x bpftrace's added ns",
        o.ratio(
            (Config::Monitor, Role::Target, sc),
            (Config::BtSyscalls, Role::Target, sc),
        ),
        0.5,
    );
    ratio_goal(
        &mut rows,
        "Not a target, per syscall: <= 0.3x that same bpftrace overhead (count + latency, in its target)",
        o.ratio(
            (Config::Monitor, Role::Other, sc),
            (Config::BtSyscalls, Role::Target, sc),
        ),
        0.3,
    );
    // Informational: bpftrace's program when the pid it filters for is not the caller. Any
    // program on these two tracepoints costs every caller at least the floor, so this ratio
    // cannot go below floor / bpftrace-not-matching whatever the filter does.
    let not_matching =
        |a: Config| o.ratio((a, Role::Other, sc), (Config::BtSyscalls, Role::Other, sc));
    if let (Ok(m), Ok(f)) = (
        not_matching(Config::Monitor),
        o.ratio(
            (Config::FloorRaw, Role::Target, sc),
            (Config::BtSyscalls, Role::Other, sc),
        ),
    ) {
        rows.push((
            "Not a target, per syscall, against bpftrace's program when its pid filter does not match (informational: the empty-program floor alone is the second figure)".into(),
            format!("{m:.2}x (floor {f:.2}x)"),
            None,
        ));
    }
    ratio_goal(
        &mut rows,
        "Per context switch, on-CPU accounting (monitor --programs sched): <= 0.6x bpftrace's sched_switch program",
        o.ratio(
            (Config::MonitorSched, Role::Target, Storm::Pingpong),
            (Config::BtSched, Role::Target, Storm::Pingpong),
        ),
        0.6,
    );
    ratio_goal(
        &mut rows,
        "Per open+close pair, fd tracking (monitor --programs fds): <= 0.6x bpftrace's fd program",
        o.ratio(
            (Config::MonitorFds, Role::Target, Storm::Files),
            (Config::BtFiles, Role::Target, Storm::Files),
        ),
        0.6,
    );
    // Informational: every program attached, so each pipe round trip and each open+close pair
    // also pays syscall counting and latency for its syscalls, which the peer's program skips.
    for (label, storm, peer) in [
        (
            "Per context switch, all of monitor against bpftrace's sched_switch program (informational: monitor also counts and times the read and write of each round trip)",
            Storm::Pingpong,
            Config::BtSched,
        ),
        (
            "Per open+close pair, all of monitor against bpftrace's fd program (informational: monitor also counts and times both syscalls)",
            Storm::Files,
            Config::BtFiles,
        ),
        (
            "Per open+close pair, all of monitor against bpftrace doing monitor's whole syscall job (informational)",
            Storm::Files,
            Config::BtAll,
        ),
    ] {
        if let Ok(x) = o.ratio(
            (Config::Monitor, Role::Target, storm),
            (peer, Role::Target, storm),
        ) {
            rows.push((label.into(), format!("{x:.2}x"), None));
        }
    }
    if let Some(one) = f.first() {
        let mb = one.daemon.rss_mib * 1.048576;
        rows.push((
            "Daemon RSS <= 15 MB, one target, default cadences".into(),
            format!("{mb:.1} MB"),
            Some(mb <= 15.0),
        ));
        rows.push((
            "Daemon CPU <= 0.2 % of one core, one target".into(),
            format!("{:.3} %", one.daemon.cpu_percent),
            Some(one.daemon.cpu_percent <= 0.2),
        ));
        if let Some(high) = f.iter().find(|r| r.label.contains("very high")) {
            let (lo, hi) = (one.daemon.cpu_percent, high.daemon.cpu_percent);
            rows.push((
                "Daemon CPU does not grow with the event rate (very high rate within 1.5x of low rate, or +0.05 points)".into(),
                format!(
                    "{lo:.3} % at {} syscalls/s -> {hi:.3} % at {} syscalls/s",
                    one.syscalls_per_s.map_or("?".into(), |v| format!("{v:.0}")),
                    high.syscalls_per_s.map_or("?".into(), |v| format!("{v:.0}"))
                ),
                Some(hi <= (lo * 1.5).max(lo + 0.05)),
            ));
        }
        if let Some(page) = f.iter().find(|r| r.label.contains("live page")) {
            let (closed, open) = (one.daemon.cpu_percent, page.daemon.cpu_percent);
            rows.push((
                "Daemon CPU <= 0.2 % of one core with the live page open (one target; page closed in the same run for comparison)".into(),
                format!("{open:.3} % open, {closed:.3} % closed ({:+.3} points)", open - closed),
                Some(open <= 0.2),
            ));
        }
        let by_targets: Vec<String> = f
            .iter()
            .filter(|r| !r.label.contains("very high") && !r.label.contains("live page"))
            .map(|r| format!("{} -> {:.3} %", r.targets, r.daemon.cpu_percent))
            .collect();
        rows.push((
            "Daemon CPU by number of target processes (informational)".into(),
            by_targets.join(", "),
            None,
        ));
    }
    let p99 = f
        .iter()
        .filter_map(|r| r.latency.as_ref().map(|(m, _)| m.p99_ms))
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    if let Some(p) = p99 {
        rows.push((
            "/metrics p99 <= 2 ms (worst configuration)".into(),
            format!("{p:.3} ms"),
            Some(p <= 2.0),
        ));
    }
    for (label, value, met) in a.goals() {
        rows.push((label, value, Some(met)));
    }
    rows
}

fn goal_table(rows: Rows) -> String {
    let mut s = String::from("| goal | measured | |\n|---|---|---|\n");
    for (label, value, met) in rows {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "**MISSED**",
            None => "",
        };
        let _ = writeln!(s, "| {label} | {value} | {verdict} |");
    }
    s
}
