//! `cargo xtask bench`: overhead and footprint, measured interleaved in one run.
//!
//! Each round runs the same syscall storm (getppid, a raw syscall) three ways: nothing attached;
//! in the process `monitor` watches; in a process it does not watch while it watches another.
//! Rounds alternate (A B C A B C ...) because the machine is shared and noisy; medians and min-max
//! are reported. Then the daemon's own RSS and CPU are read over a minute at default cadences.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{release_bin, workspace_root};

const PORT: u16 = 18_931;

pub fn run(quick: bool) -> anyhow::Result<()> {
    let rounds = if quick { 5 } else { 11 };
    let calls: u64 = if quick { 1_000_000 } else { 3_000_000 };
    let footprint_secs = if quick { 20 } else { 60 };

    let (mut base, mut target, mut other) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        eprintln!("bench: syscall storm round {}/{rounds}", round + 1);
        base.push(storm(calls, Mode::Alone)?);
        target.push(storm(calls, Mode::Target)?);
        other.push(storm(calls, Mode::NotTarget)?);
    }
    let footprint = daemon_footprint(Duration::from_secs(footprint_secs))?;

    let b = Stats::of(&base);
    let t = Stats::of(&target);
    let o = Stats::of(&other);
    let mut table = String::new();
    table.push_str("| storm (getppid) | ns per call, median | min - max | ns added vs. alone |\n|---|---|---|---|\n");
    for (name, s) in [
        ("nothing attached", &b),
        ("in the target", &t),
        ("not a target (monitor watching another process)", &o),
    ] {
        table.push_str(&format!(
            "| {name} | {:.1} | {:.1} - {:.1} | {:+.1} |\n",
            s.median,
            s.min,
            s.max,
            s.median - b.median
        ));
    }
    table.push_str(&format!(
        "\n| daemon, one target, default cadences, {footprint_secs} s | value |\n|---|---|\n| RSS (MiB) | {:.1} |\n| CPU (% of one core) | {:.3} |\n",
        footprint.rss_mib, footprint.cpu_percent
    ));
    let report = format!(
        "# Benchmarks\n\nMeasured by `cargo xtask bench{}` on {} ({} CPUs), kernel {}.\n\n\
         Method: {rounds} interleaved rounds of {calls} raw getppid() calls per mode; medians and min-max of ns per call. \
         The target runs under `monitor run --pid` with every kernel program attached; the non-target storm runs while \
         `monitor` watches an idle process. The daemon footprint watches a `workload mixed` process (opens, faults, \
         syscalls every 10 ms) and reads the daemon's /proc/PID/stat and statm.\n\n{table}",
        if quick { " --quick" } else { "" },
        hostname(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    );
    std::fs::write(workspace_root().join("BENCHMARKS.md"), &report)
        .context("writing BENCHMARKS.md")?;
    println!("{report}");
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    Alone,
    Target,
    NotTarget,
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// A workload held at its start line until we write to its stdin.
fn gated_workload(args: &[&str]) -> anyhow::Result<Child> {
    Command::new(release_bin("workload"))
        .arg("--wait-stdin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the workload")
}

/// Starts `monitor run` on `pid` and waits until it serves metrics with the target up.
fn start_monitor(pid: u32, extra: &[&str]) -> anyhow::Result<Child> {
    let child = Command::new(release_bin("monitor"))
        .args([
            "run",
            "--pid",
            &pid.to_string(),
            "--listen",
            &format!("127.0.0.1:{PORT}"),
        ])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .context("starting monitor")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let body = ureq::get(&format!("http://127.0.0.1:{PORT}/metrics"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default();
        if body.contains("app_up{target=") {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("monitor did not serve /metrics within 20 s")
}

fn stop(mut child: Child) {
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

fn storm(calls: u64, mode: Mode) -> anyhow::Result<f64> {
    let mut storm = gated_workload(&["syscalls", "--count", &calls.to_string()])?;
    let mut idle = None;
    let monitor = match mode {
        Mode::Alone => None,
        Mode::Target => Some(start_monitor(storm.id(), &[])?),
        Mode::NotTarget => {
            let w = gated_workload(&["spin", "--millis", "1"])?;
            let m = start_monitor(w.id(), &[])?;
            idle = Some(w);
            Some(m)
        }
    };
    storm.stdin.take().context("stdin")?.write_all(b"go\n")?;
    let mut line = String::new();
    BufReader::new(storm.stdout.take().context("stdout")?).read_line(&mut line)?;
    storm.wait()?;
    if let Some(m) = monitor {
        stop(m);
    }
    if let Some(mut w) = idle {
        let _ = w.kill();
        let _ = w.wait();
    }
    let report: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("workload printed {line:?}"))?;
    report["ns_per_op"]
        .as_f64()
        .context("workload report has no ns_per_op")
}

struct Footprint {
    rss_mib: f64,
    cpu_percent: f64,
}

fn daemon_footprint(span: Duration) -> anyhow::Result<Footprint> {
    eprintln!("bench: daemon footprint over {} s", span.as_secs());
    let mut w = Command::new(release_bin("workload"))
        .args([
            "mixed",
            "--millis",
            &(span.as_millis() as u64 + 30_000).to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let m = start_monitor(w.id(), &[])?;
    let pid = m.id();
    let cpu0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let mut rss_max = 0u64;
    while t0.elapsed() < span {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(rss_bytes(pid)?);
    }
    let cpu1 = cpu_ticks(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    stop(m);
    let _ = w.kill();
    let _ = w.wait();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(Footprint {
        rss_mib: rss_max as f64 / (1024.0 * 1024.0),
        cpu_percent: 100.0 * (cpu1 - cpu0) as f64 / hz / wall,
    })
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    Ok(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}
