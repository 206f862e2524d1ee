//! `monitor stat`: like `perf stat`, for one process tree: profile a running process for a while,
//! or launch a command and profile it and its children from its first instruction to its exit.
use std::{
    collections::BTreeMap,
    ffi::CString,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    collect::collector::{Collector, Due, Selector},
    collect::ebpf::{probes::Probes, selection::Selection},
    collect::procfs::ProcFs,
    collect::sample::Sample,
    collect::syscall_names::{errno_name, syscall_name},
    commands::cli::StatArgs,
    model::seconds,
};

const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: Vec<String>,
    pub pid: u32,
    pub wall_seconds: f64,
    pub oncpu_seconds: f64,
    /// On-CPU time over wall time, as a percentage of one CPU (200 = two CPUs busy).
    pub cpu_percent: f64,
    pub page_faults: Faults,
    pub fd_opens: u64,
    pub fd_closes: u64,
    pub fd_close_range_calls: u64,
    pub fd_open_errors: u64,
    pub fd_open_errors_by_errno: BTreeMap<String, u64>,
    pub context_switches: Switches,
    /// Syscall name -> count.
    pub syscalls: BTreeMap<String, u64>,
    /// Syscall name -> total seconds inside the call.
    pub syscall_seconds: BTreeMap<String, f64>,
    pub processes_forked: u64,
    pub peak_rss_bytes: u64,
    /// Kernel map -> inserts that failed for lack of room during the run (see
    /// `monitor_kernel_map_full_total`); all zero on a run nothing was lost or delayed in.
    pub kernel_map_full: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// A launched command's resource usage as wait4(2) returned it: what the kernel accounted to
    /// the command and the children it reaped over their whole lives, exit paths included (the
    /// figures `time` and `perf stat` print). An independent reading of the same kernel
    /// accounting the counts above are built from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait4: Option<Wait4Usage>,
    /// With the requests family: "METHOD /template" -> what its requests cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, RouteReport>>,
}

#[derive(Debug, Serialize)]
pub struct RouteReport {
    /// Finished requests.
    pub count: u64,
    /// On-CPU time attributed to them.
    pub cpu_seconds: f64,
    /// Syscalls made while working for them.
    pub syscalls: u64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// HTTP status -> requests ("0": closed before any response).
    pub status: BTreeMap<String, u64>,
}

/// The requests family's reader, running for the length of the profile.
struct RequestsWatch {
    tracker: crate::requests::SharedTracker,
    /// Dropped to stop the reader.
    stop: std::os::unix::net::UnixStream,
    reader: std::thread::JoinHandle<()>,
}

impl RequestsWatch {
    fn start(events: crate::collect::ebpf::request_events::RequestEvents) -> anyhow::Result<Self> {
        let config = crate::config::RequestsConfig::default();
        let tracker = crate::commands::run::requests_reader::tracker(&config)?;
        let (stop, stop_rx) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| anyhow::anyhow!("making the requests reader's stop: {e}"))?;
        let reader = crate::commands::run::requests_reader::start(
            events,
            tracker.clone(),
            &config,
            &[],
            stop_rx,
        )?;
        Ok(Self {
            tracker,
            stop,
            reader,
        })
    }

    /// Stops reading, ends every response still open, and reports the routes.
    fn finish(self) -> BTreeMap<String, RouteReport> {
        // Let the last events (and responses still being written) arrive.
        std::thread::sleep(Duration::from_millis(100));
        drop(self.stop);
        let _ = self.reader.join();
        let Ok(mut tracker) = self.tracker.lock() else {
            return BTreeMap::new();
        };
        let procfs = crate::collect::procfs::ProcFs::new("/proc");
        tracker.tick(u64::MAX / 2, &mut |tgid, tid| {
            procfs.thread_schedstat_ns(tgid, tid).ok()
        });
        let Some(target) = tracker.target(0) else {
            return BTreeMap::new();
        };
        target
            .ledger
            .routes
            .iter()
            .map(|(route, s)| {
                (
                    format!("{} {}", route.method.as_str(), route.template),
                    RouteReport {
                        count: s.count(),
                        cpu_seconds: s.cpu_ns as f64 / 1e9,
                        syscalls: s.syscalls,
                        p50_seconds: s.quantile_since(0, 0.5),
                        p99_seconds: s.quantile_since(0, 0.99),
                        status: s
                            .statuses
                            .iter()
                            .map(|(k, v)| (k.to_string(), *v))
                            .collect(),
                    },
                )
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct Wait4Usage {
    /// ru_utime + ru_stime (microsecond resolution).
    pub oncpu_seconds: f64,
    pub minor_faults: u64,
    pub major_faults: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl From<&libc::rusage> for Wait4Usage {
    fn from(r: &libc::rusage) -> Self {
        let us = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Self {
            oncpu_seconds: us(r.ru_utime) + us(r.ru_stime),
            minor_faults: r.ru_minflt as u64,
            major_faults: r.ru_majflt as u64,
            voluntary_switches: r.ru_nvcsw as u64,
            involuntary_switches: r.ru_nivcsw as u64,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Faults {
    pub minor: u64,
    pub major: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

pub fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let mut probes = Probes::load(&Selection::new(&args.programs))
        .context("monitor stat needs the kernel programs")?;
    let procfs = ProcFs::system();
    let requests = match probes.requests.take() {
        Some(events) => Some(RequestsWatch::start(events)?),
        None => None,
    };
    let mut report = match args.pid {
        Some(pid) => stat_running(procfs, probes, pid, args.duration)?,
        None => stat_command(procfs, probes, &args.command)?,
    };
    if let Some(watch) = requests {
        report.requests = Some(watch.finish());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(match report.exit_code {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None => ExitCode::SUCCESS,
    })
}

fn stat_running(
    procfs: ProcFs,
    probes: Probes,
    pid: u32,
    duration: Duration,
) -> anyhow::Result<Report> {
    let mut collector = Collector::new(procfs, Some(probes), Selector::Pid(pid), 0)?;
    let started = Instant::now();
    let first = collector.sample(Due::default())?;
    let mut peak = peak_rss(&collector);
    // Always one sample after the first: a first sample that took longer than the whole
    // duration (monitor waiting for a CPU the target holds) would otherwise report first - first.
    let last = loop {
        std::thread::sleep(POLL.min(duration.saturating_sub(started.elapsed())));
        let last = collector.sample(Due::default())?;
        peak = peak.max(peak_rss(&collector));
        if !last.up || started.elapsed() >= duration {
            break last;
        }
    };
    let wall = started.elapsed();
    Ok(report(vec![], pid, wall, &first, &last, peak, None))
}

/// Forks, holds the child at a gate until it is in the target set, then lets it exec, so its
/// counts start at its first instruction.
fn stat_command(procfs: ProcFs, probes: Probes, command: &[String]) -> anyhow::Result<Report> {
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("command arguments must not contain NUL bytes")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut gate = [0; 2];
    // SAFETY: valid array of two fds.
    anyhow::ensure!(
        unsafe { libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) } == 0,
        "pipe2 failed"
    );
    // SAFETY: the child only calls async-signal-safe functions (read, close, execvp, _exit).
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            libc::close(gate[1]);
            let mut byte = 0u8;
            if libc::read(gate[0], (&raw mut byte).cast(), 1) != 1 {
                libc::_exit(126);
            }
            libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    anyhow::ensure!(
        child > 0,
        "fork failed: {}",
        std::io::Error::last_os_error()
    );
    let child = child as u32;
    // SAFETY: our copy of the read end.
    unsafe { libc::close(gate[0]) };
    let release = || {
        // SAFETY: writing one byte to our pipe, then closing it.
        unsafe {
            libc::write(gate[1], [1u8].as_ptr().cast(), 1);
            libc::close(gate[1]);
        }
    };
    // Join only once the child waits at the gate, so what it does between fork and exec (closing
    // the pipe's other end) is ours, not the command's: the command's counts then match what
    // strace sees from the exec on.
    wait_at_gate(child);
    let mut collector = match Collector::new(procfs, Some(probes), Selector::Pid(child), 0) {
        Ok(c) => c,
        Err(e) => {
            release();
            return Err(e);
        }
    };
    // A launched command is profiled over its whole life (from the fork), like getrusage.
    let first = Sample::default();
    let started = Instant::now();
    release();
    wait_for_exec(child);
    let mut peak = 0;
    let (status, rusage) = loop {
        if let Some(done) = try_wait(child)? {
            break done;
        }
        peak = peak.max(peak_rss(&collector));
        // Drops members whose exit the kernel side did not see, before their pid can be reused.
        collector.refresh_members()?;
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed();
    let last = collector.sample(Due::default())?;
    // ru_maxrss is not used: it includes our own RSS, inherited by the child between fork and
    // exec.
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    if exit_code == 127 {
        eprintln!("monitor: could not execute {:?}", command[0]);
    }
    let mut report = report(
        command.to_vec(),
        child,
        wall,
        &first,
        &last,
        peak,
        Some(exit_code),
    );
    report.wait4 = Some(Wait4Usage::from(&rusage));
    Ok(report)
}

/// The larger of the summed RSS of the target's processes now and the kernel's high-water mark
/// (VmHWM) of each one, which catches peaks between polls.
fn peak_rss(collector: &Collector) -> u64 {
    let procfs = collector.procfs();
    let members = collector.members();
    let rss: u64 = members
        .iter()
        .filter_map(|&p| procfs.process(p).ok())
        .map(|s| s.rss_bytes)
        .sum();
    let hwm = members
        .iter()
        .filter_map(|&p| procfs.status(p).ok())
        .map(|s| s.vm_hwm_bytes)
        .max();
    rss.max(hwm.unwrap_or(0))
}

/// Waits (1 s at most) until the child is blocked in read(2) on the gate pipe.
fn wait_at_gate(child: u32) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        // /proc/PID/syscall: "0 0x<fd> ..." while blocked in read (syscall 0 on x86_64).
        match std::fs::read_to_string(format!("/proc/{child}/syscall")) {
            Ok(s) if s.starts_with("0 ") => return,
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => return,
        }
    }
}

/// Until the child has exec'd, its RSS is a copy-on-write view of ours: do not count it as a peak.
fn wait_for_exec(child: u32) {
    let ours = std::fs::read_link("/proc/self/exe").ok();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match std::fs::read_link(format!("/proc/{child}/exe")) {
            Ok(exe) if Some(&exe) != ours.as_ref() => return,
            Err(_) => return, // exited (or a zombie): nothing left to measure
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Reaps the child if it exited, with its rusage.
fn try_wait(pid: u32) -> anyhow::Result<Option<(i32, libc::rusage)>> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut rusage) };
    match r {
        0 => Ok(None),
        r if r == pid as i32 => Ok(Some((status, rusage))),
        _ => Err(std::io::Error::last_os_error()).context("waiting for the command"),
    }
}

fn report(
    command: Vec<String>,
    pid: u32,
    wall: Duration,
    first: &Sample,
    last: &Sample,
    peak_rss_bytes: u64,
    exit_code: Option<i32>,
) -> Report {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let oncpu = d(first.oncpu_ns, last.oncpu_ns);
    let (k0, k1) = (
        first.kernel.clone().unwrap_or_default(),
        last.kernel.clone().unwrap_or_default(),
    );
    let before_sys: BTreeMap<u32, (u64, u64)> = k0
        .syscalls
        .iter()
        .map(|(nr, s)| (*nr, (s.count, s.total_ns)))
        .collect();
    let mut syscalls = BTreeMap::new();
    let mut syscall_seconds = BTreeMap::new();
    for (nr, s) in &k1.syscalls {
        let (c0, t0) = before_sys.get(nr).copied().unwrap_or_default();
        if s.count > c0 {
            syscalls.insert(syscall_name(*nr).into_owned(), s.count - c0);
            syscall_seconds.insert(syscall_name(*nr).into_owned(), seconds(d(t0, s.total_ns)));
        }
    }
    let before_err: BTreeMap<u32, u64> = k0.fd_open_errors_by_errno.iter().copied().collect();
    let fd_open_errors_by_errno = k1
        .fd_open_errors_by_errno
        .iter()
        .filter_map(|&(e, n)| {
            let n = n.saturating_sub(before_err.get(&e).copied().unwrap_or(0));
            (n > 0).then(|| (errno_name(e), n))
        })
        .collect();
    let minor = d(first.minor_faults, last.minor_faults);
    let major = d(first.major_faults, last.major_faults);
    Report {
        command,
        pid,
        wall_seconds: wall.as_secs_f64(),
        oncpu_seconds: seconds(oncpu),
        cpu_percent: 100.0 * oncpu as f64 / (wall.as_nanos().max(1) as f64),
        page_faults: Faults {
            minor,
            major,
            total: minor + major,
        },
        fd_opens: d(k0.fd_opens, k1.fd_opens),
        fd_closes: d(k0.fd_closes, k1.fd_closes),
        fd_close_range_calls: d(k0.fd_close_range_calls, k1.fd_close_range_calls),
        fd_open_errors: d(k0.fd_open_errors, k1.fd_open_errors),
        fd_open_errors_by_errno,
        context_switches: Switches {
            voluntary: d(first.switches_voluntary, last.switches_voluntary),
            involuntary: d(first.switches_involuntary, last.switches_involuntary),
        },
        syscalls,
        syscall_seconds,
        processes_forked: d(k0.process_forks, k1.process_forks),
        peak_rss_bytes,
        kernel_map_full: k1
            .map_full
            .iter()
            .map(|&(map, n)| {
                let before = k0
                    .map_full
                    .iter()
                    .find(|(m, _)| *m == map)
                    .map_or(0, |p| p.1);
                (map, n.saturating_sub(before))
            })
            .collect(),
        exit_code,
        wait4: None,
        requests: None,
    }
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let what = if r.command.is_empty() {
        format!("pid {}", r.pid)
    } else {
        r.command.join(" ")
    };
    let _ = writeln!(out, "\n Profile of '{what}':\n");
    let _ = writeln!(
        out,
        "{:>16.6}  seconds on CPU      ({:.1} % of one CPU over {:.3} s)",
        r.oncpu_seconds, r.cpu_percent, r.wall_seconds
    );
    let _ = writeln!(
        out,
        "{:>16}  page faults         ({} minor, {} major)",
        r.page_faults.total, r.page_faults.minor, r.page_faults.major
    );
    let _ = writeln!(
        out,
        "{:>16}  context switches    ({} voluntary, {} involuntary)",
        r.context_switches.voluntary + r.context_switches.involuntary,
        r.context_switches.voluntary,
        r.context_switches.involuntary
    );
    let _ = writeln!(
        out,
        "{:>16}  fds opened          ({} closed, {} close_range calls)",
        r.fd_opens, r.fd_closes, r.fd_close_range_calls
    );
    let errs: Vec<String> = r
        .fd_open_errors_by_errno
        .iter()
        .map(|(e, n)| format!("{e} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "{:>16}  failed opens        ({})",
        r.fd_open_errors,
        errs.join(", ")
    );
    let _ = writeln!(out, "{:>16}  processes forked", r.processes_forked);
    let _ = writeln!(
        out,
        "{:>16.1}  MiB peak RSS",
        r.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    let mut top: Vec<(&String, &u64)> = r.syscalls.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let total: u64 = r.syscalls.values().sum();
    let _ = writeln!(out, "\n{total:>16}  syscalls; top by count:");
    let _ = writeln!(
        out,
        "{:>16}  {:<20} {:>12} {:>12}",
        "count", "syscall", "total ms", "avg us"
    );
    for (name, count) in top.into_iter().take(15) {
        let secs = r.syscall_seconds.get(name).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "{count:>16}  {name:<20} {:>12.3} {:>12.3}",
            secs * 1e3,
            secs * 1e6 / *count as f64
        );
    }
    // A command that served no HTTP and wrote no tag gets no table (the JSON says `{}`).
    if let Some(routes) = r.requests.as_ref().filter(|r| !r.is_empty()) {
        let mut rows: Vec<_> = routes.iter().collect();
        rows.sort_by(|a, b| {
            b.1.cpu_seconds
                .total_cmp(&a.1.cpu_seconds)
                .then(a.0.cmp(b.0))
        });
        let total: u64 = routes.values().map(|x| x.count).sum();
        let _ = writeln!(out, "\n{total:>16}  requests; routes by CPU:");
        let _ = writeln!(
            out,
            "{:>16}  {:>12} {:>12} {:>10} {:>10} {:>9}  route",
            "requests", "CPU ms/req", "syscalls/req", "p50 ms", "p99 ms", "CPU %"
        );
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.3}", s * 1e3));
        for (route, x) in rows {
            let _ = writeln!(
                out,
                "{:>16}  {:>12.3} {:>12.1} {:>10} {:>10} {:>9.1}  {route}",
                x.count,
                x.cpu_seconds * 1e3 / x.count.max(1) as f64,
                x.syscalls as f64 / x.count.max(1) as f64,
                ms(x.p50_seconds),
                ms(x.p99_seconds),
                100.0 * x.cpu_seconds / r.oncpu_seconds.max(1e-9)
            );
        }
    }
    if let Some(code) = r.exit_code {
        let _ = writeln!(out, "\n exit code {code}");
    }
    if let Some(w) = &r.wait4 {
        let _ = writeln!(
            out,
            " wait4: {:.6} s on CPU, {} minor + {} major faults (the kernel's totals for the command and the children it reaped)",
            w.oncpu_seconds, w.minor_faults, w.major_faults
        );
    }
    out
}
