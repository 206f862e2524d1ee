//! Children that are always reaped, the workload under a name of its own, statistics, /proc
//! readers and a small Prometheus text parser.
use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::release_bin;

/// The comm every bench workload runs under, so that `--comm`-style peers (process-exporter)
/// match only our processes, never a test's `workload` running at the same time.
pub const COMM: &str = "wlbench";

/// A binary from the environment (`MONITOR_BIN`, `WORKLOAD_BIN`) or this workspace's release
/// build.
pub fn bin(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| release_bin(name));
    if !path.exists() {
        bail!("{} not found (build it, or set {var})", path.display());
    }
    Ok(path)
}

/// A scratch directory removed on drop, holding the workload symlink and logs.
pub struct Scratch {
    pub dir: PathBuf,
    pub workload: PathBuf,
    pub monitor: PathBuf,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("monitor-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let target = bin("WORKLOAD_BIN", "workload")?;
        let workload = dir.join(COMM);
        std::os::unix::fs::symlink(&target, &workload)
            .with_context(|| format!("linking {}", workload.display()))?;
        let monitor = bin("MONITOR_BIN", "monitor")?;
        Ok(Self {
            dir,
            workload,
            monitor,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A child process that is killed and reaped however the bench leaves the scope.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Self { child: Some(child) })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child taken only on drop")
    }

    /// Has it exited already? (Reaps it if so.)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Sends `signal`, waits up to 5 s, then SIGKILLs; always reaps.
    pub fn stop_with(&mut self, signal: i32) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `workload serve` (or `--wait-stdin`) process: commands in on stdin, one JSON report out per
/// command.
pub struct Served {
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub proc: Proc,
}

impl Served {
    /// `workload serve`, under the bench's comm.
    pub fn serve(scratch: &Scratch) -> anyhow::Result<Self> {
        Self::start(scratch, &["serve"])
    }

    /// `workload --wait-stdin ARGS`: `go` starts the work.
    pub fn start(scratch: &Scratch, args: &[&str]) -> anyhow::Result<Self> {
        let mut proc = Proc::spawn(
            Command::new(&scratch.workload)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
            "the workload",
        )?;
        let stdin = proc.child().stdin.take();
        let stdout = BufReader::new(proc.child().stdout.take().context("workload stdout")?);
        Ok(Self {
            stdin,
            stdout,
            proc,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Writes one line and reads the one-line JSON report.
    pub fn run(&mut self, line: &str) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("workload stdin closed")?;
        writeln!(stdin, "{line}").context("writing to the workload")?;
        stdin.flush()?;
        let mut out = String::new();
        self.stdout
            .read_line(&mut out)
            .context("reading the workload's report")?;
        serde_json::from_str(&out)
            .with_context(|| format!("workload `{line}` printed {out:?} (did it fail?)"))
    }

    /// Closes stdin (ends `serve` and `--linger`) and reaps.
    pub fn finish(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.proc.exited().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.proc.stop_with(libc::SIGKILL);
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Median and range of a sample.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    pub fn quantile(values: &[f64], q: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// CPU time of every live thread of `pid` in ns (schedstat: ns resolution, unlike ticks).
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Ok(text) = fs::read_to_string(entry?.path().join("schedstat")) {
            total += text
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// The CPUs a thread may run on: `Some(cpu)` pins it there, `None` lets it run anywhere.
fn affinity(cpu: Option<usize>) -> libc::cpu_set_t {
    // SAFETY: `cpu_set_t` is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let cpus = match cpu {
        Some(c) => c..c + 1,
        None => 0..libc::CPU_SETSIZE as usize,
    };
    for c in cpus {
        // SAFETY: `c < CPU_SETSIZE`, so the bit lies inside the set.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pins every thread of `pid` to `cpu` (`None`: every CPU again).
pub fn set_affinity(pid: u32, cpu: Option<usize>) -> anyhow::Result<()> {
    let set = affinity(cpu);
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: libc::pid_t = entry?.file_name().to_string_lossy().parse()?;
        // SAFETY: `set` is a valid, correctly sized cpu_set_t.
        if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting the CPU affinity of thread {tid} of {pid}"));
        }
    }
    Ok(())
}

/// Makes `cmd`'s process start pinned to `cpu`.
pub fn pin_command(cmd: &mut Command, cpu: usize) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    let set = affinity(Some(cpu));
    // SAFETY: sched_setaffinity is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    Ok(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64)
}

/// voluntary + nonvoluntary context switches of the task `pid` (its main thread).
pub fn status_ctxt(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

/// Sum of every sample of `name` whose labels include all of `labels`; None if there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()?;
    let mut found = None;
    for sample in &scrape.samples {
        if sample.metric != name || !labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)) {
            continue;
        }
        if let prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) = sample.value
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// GET with a short timeout; the body, or an error.
pub fn http_get(agent: &ureq::Agent, url: &str) -> anyhow::Result<String> {
    Ok(agent.get(url).call()?.body_mut().read_to_string()?)
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// The last few lines of a log file, for error messages.
/// The lines a child writes to `stdout`, read on a thread of their own so that a caller can
/// wait for them with a timeout.
pub fn line_channel(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default()
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Formats a number with a precision that suits its size.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v == v.trunc() && a >= 10.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn metric_sums_the_matching_series() {
        let text = "\
# HELP app_syscalls_total Syscalls.
# TYPE app_syscalls_total counter
app_syscalls_total{syscall=\"getppid\",target=\"a\"} 3
app_syscalls_total{syscall=\"read\",target=\"a\"} 4
app_syscalls_total{syscall=\"read\",target=\"b\"} 100
# TYPE namedprocess_namegroup_cpu_seconds_total counter
namedprocess_namegroup_cpu_seconds_total{groupname=\"wl\",mode=\"system\"} 0.25
namedprocess_namegroup_cpu_seconds_total{groupname=\"wl\",mode=\"user\"} 1.5
";
        assert_eq!(
            metric(text, "app_syscalls_total", &[("target", "a")]),
            Some(7.0)
        );
        assert_eq!(
            metric(text, "app_syscalls_total", &[("syscall", "getppid")]),
            Some(3.0)
        );
        assert_eq!(
            metric(
                text,
                "namedprocess_namegroup_cpu_seconds_total",
                &[("groupname", "wl")]
            ),
            Some(1.75)
        );
        assert_eq!(metric(text, "app_up", &[]), None);
    }
}
