//! What gets attached: `monitor run`, bpftrace programs, and hand-loaded empty BPF programs (the
//! floor any tracing costs). Plus per-program kernel run time from `kernel.bpf_stats_enabled`.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::util::{Proc, Scratch, agent, free_port, http_get, line_channel, metric, tail};

/// `monitor run --pid PID` on a free loopback port, up and attached.
pub struct Monitor {
    pub proc: Proc,
    pub port: u16,
    agent: ureq::Agent,
}

impl Monitor {
    /// Starts the daemon and waits until `/metrics` shows the target up with every kernel program
    /// attached. Any failure here is monitor's own: the caller aborts the bench.
    pub fn start(scratch: &Scratch, pid: u32, config: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(scratch, pid, config, None)
    }

    /// As `start`, attaching only the program families in `programs` (`--programs`).
    pub fn start_with(
        scratch: &Scratch,
        pid: u32,
        config: Option<&str>,
        programs: Option<&str>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = scratch.path(&format!("monitor-{port}.log"));
        let mut cmd = Command::new(&scratch.monitor);
        cmd.args([
            "run",
            "--pid",
            &pid.to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--require-ebpf",
        ])
        .args(programs.map(|p| format!("--programs={p}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?);
        // Its state (alert outbox, the history store, which is on) in the scratch directory,
        // not the host's /var/lib/monitor.
        let mut text = config.unwrap_or("").to_owned();
        if !text.contains("[alerting]") {
            let state = scratch.path(&format!("monitor-{port}-state"));
            text.push_str(&format!(
                "\n[alerting]\nstate_dir = \"{}\"\n",
                state.display()
            ));
        }
        let path = scratch.path(&format!("monitor-{port}.toml"));
        fs::write(&path, text)?;
        cmd.arg("--config").arg(path);
        let mut proc = Proc::spawn(&mut cmd, "monitor")?;
        let agent = agent();
        let url = format!("http://127.0.0.1:{port}/metrics");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = proc.exited() {
                bail!(
                    "monitor run --pid {pid} exited ({status}) before serving metrics:\n{}",
                    tail(&log, 15)
                );
            }
            let body = http_get(&agent, &url).unwrap_or_default();
            if metric(&body, "app_up", &[]) == Some(1.0) {
                let unattached: Vec<&str> = body
                    .lines()
                    .filter(|l| l.starts_with("monitor_ebpf_attached{") && l.ends_with(" 0"))
                    .collect();
                if programs.is_none() && !unattached.is_empty() {
                    bail!("monitor did not attach every kernel program: {unattached:?}");
                }
                return Ok(Self { proc, port, agent });
            }
            if Instant::now() > deadline {
                bail!(
                    "monitor run --pid {pid} did not report app_up 1 within 30 s:\n{}",
                    tail(&log, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    pub fn metrics(&self) -> anyhow::Result<String> {
        http_get(&self.agent, &self.url()).context("scraping monitor")
    }

    /// Polls one value until it is the same on two reads `gap` apart (the daemon samples at its
    /// cadence).
    pub fn settled(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        gap: Duration,
    ) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(15);
        // A series that does not exist yet (no failed open so far, say) is settled at 0.
        let mut last = metric(&self.metrics()?, name, labels);
        loop {
            std::thread::sleep(gap);
            let v = metric(&self.metrics()?, name, labels);
            if v == last {
                return Ok(v.unwrap_or_default());
            }
            if Instant::now() > deadline {
                return Ok(v.unwrap_or_default());
            }
            last = v;
        }
    }

    pub fn stop(mut self) {
        self.proc.stop();
    }
}

/// A running bpftrace program.
pub struct Bpftrace {
    pub proc: Proc,
    lines: mpsc::Receiver<String>,
}

impl Bpftrace {
    /// Starts `bpftrace FILE` and waits for its "Attaching N probes..." line (then a short grace:
    /// bpftrace prints it just before attaching). Errors are the peer's: shown as n/a.
    pub fn start(scratch: &Scratch, name: &str, program: &str) -> anyhow::Result<Self> {
        let file = scratch.path(&format!("{name}.bt"));
        fs::write(&file, program)?;
        let log = scratch.path(&format!("{name}.bpftrace.log"));
        let mut proc = Proc::spawn(
            Command::new("bpftrace")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(fs::File::create(&log)?),
            "bpftrace",
        )?;
        let stdout = proc.child().stdout.take().context("bpftrace stdout")?;
        let lines = line_channel(stdout);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("Attaching") => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    proc.stop();
                    bail!("bpftrace failed: {}", last_error(&log));
                }
            }
            if Instant::now() > deadline {
                bail!("bpftrace did not attach within 60 s: {}", last_error(&log));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
        if proc.exited().is_some() {
            bail!("bpftrace exited after attaching: {}", last_error(&log));
        }
        Ok(Self { proc, lines })
    }

    /// SIGINT (bpftrace prints its maps and exits); returns what it printed.
    pub fn stop(mut self) -> String {
        self.proc.stop_with(libc::SIGINT);
        let mut out = String::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

fn last_error(log: &std::path::Path) -> String {
    let text = tail(log, 20);
    text.lines()
        .rev()
        .find(|l| l.contains("ERROR") && !l.contains("RLIMIT_MEMLOCK"))
        .or_else(|| text.lines().last())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// Value of `@map[key]: N` in bpftrace's exit output.
pub fn bpftrace_map(out: &str, map: &str, key: &str) -> Option<u64> {
    let prefix = format!("{map}[{key}]: ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// The bpftrace programs a user would write for each job. bpftrace 0.17 syntax (`args->`).
pub mod programs {
    /// Count per syscall id and sum latency, for one pid.
    pub fn syscalls(pid: u32) -> String {
        format!(
            "tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @start[tid] = nsecs; @count[args->id] = count(); }}\n\
             tracepoint:raw_syscalls:sys_exit /pid == {pid} && @start[tid]/ {{ @lat[args->id] = sum(nsecs - @start[tid]); delete(@start[tid]); }}\n"
        )
    }

    /// Empty probes on the same tracepoints (bpftrace compiles them to `return 1`).
    pub fn empty() -> String {
        "tracepoint:raw_syscalls:sys_enter { }\ntracepoint:raw_syscalls:sys_exit { }\n".into()
    }

    /// The fd syscalls monitor tracks (monitor-common's `fd_effect`), by how bpftrace counts them.
    const OPENS_PATH: &[&str] = &["open", "openat", "openat2", "creat", "open_by_handle_at"];
    const OPENS_TWO: &[&str] = &["pipe", "pipe2", "socketpair"];
    const OPENS_ONE: &[&str] = &[
        "dup",
        "dup2",
        "dup3",
        "socket",
        "accept",
        "accept4",
        "epoll_create",
        "epoll_create1",
        "eventfd",
        "eventfd2",
        "signalfd",
        "signalfd4",
        "timerfd_create",
        "memfd_create",
        "memfd_secret",
        "inotify_init",
        "inotify_init1",
        "perf_event_open",
        "fanotify_init",
        "userfaultfd",
        "io_uring_setup",
        "open_tree",
        "fsopen",
        "fsmount",
        "fspick",
        "pidfd_open",
        "pidfd_getfd",
        "mq_open",
        "landlock_create_ruleset",
    ];

    /// `tracepoint:syscalls:sys_exit_NAME` probes of the names this kernel has (bpftrace
    /// refuses a program naming a missing tracepoint).
    fn exits(names: &[&str]) -> String {
        names
            .iter()
            .filter(|n| {
                std::path::Path::new(&format!("/sys/kernel/tracing/events/syscalls/sys_exit_{n}"))
                    .exists()
            })
            .map(|n| format!("tracepoint:syscalls:sys_exit_{n}"))
            .collect::<Vec<_>>()
            .join(",\n")
    }

    /// fd tracking, the job monitor's fd counters do: new descriptors from every fd-creating
    /// syscall (fcntl only for F_DUPFD*), failed path opens by errno, closes, close_range calls.
    pub fn files(pid: u32) -> String {
        format!(
            "{path} /pid == {pid}/ {{ if (args->ret >= 0) {{ @opens = sum(1); }} else {{ @open_errors[-args->ret] = count(); }} }}\n\
             {two} /pid == {pid} && args->ret == 0/ {{ @opens = sum(2); }}\n\
             {one} /pid == {pid} && args->ret >= 0/ {{ @opens = sum(1); }}\n\
             tracepoint:syscalls:sys_enter_fcntl /pid == {pid}/ {{ @dupfd[tid] = (args->cmd == 0 || args->cmd == 1030); }}\n\
             tracepoint:syscalls:sys_exit_fcntl /pid == {pid}/ {{ if (@dupfd[tid] && args->ret >= 0) {{ @opens = sum(1); }} delete(@dupfd[tid]); }}\n\
             tracepoint:syscalls:sys_exit_close /pid == {pid} && args->ret == 0/ {{ @closes = count(); }}\n\
             tracepoint:syscalls:sys_exit_close_range /pid == {pid} && args->ret == 0/ {{ @close_ranges = count(); }}\n",
            path = exits(OPENS_PATH),
            two = exits(OPENS_TWO),
            one = exits(OPENS_ONE),
        )
    }

    /// What monitor does for every syscall of the target: count and latency per id, plus fds.
    pub fn all(pid: u32) -> String {
        syscalls(pid) + &files(pid)
    }

    pub fn faults(pid: u32) -> String {
        format!("tracepoint:exceptions:page_fault_user /pid == {pid}/ {{ @ = count(); }}\n")
    }

    /// On-CPU time and switches: start time per tid at switch-in, accounted at switch-out of a
    /// thread of the pid.
    pub fn sched(pid: u32) -> String {
        format!(
            "tracepoint:sched:sched_switch {{\n\
             \x20 if (pid == {pid}) {{ $s = @start[tid]; if ($s) {{ @oncpu = sum(nsecs - $s); }} @switches = count(); }}\n\
             \x20 @start[args->next_pid] = nsecs;\n\
             }}\n"
        )
    }
}

// --- Hand-loaded empty programs: `r0 = 0; exit` ------------------------------------------------

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Empty BPF programs returning 0 on raw_syscalls sys_enter and sys_exit, attached while this
/// lives. `raw` picks raw tracepoints (monitor's attach type) over classic ones.
pub struct Floor {
    _fds: Vec<OwnedFd>,
}

impl Floor {
    pub fn attach(raw: bool) -> anyhow::Result<Self> {
        let mut fds = vec![];
        for tp in ["sys_enter", "sys_exit"] {
            let prog = load_return_zero(if raw {
                BPF_PROG_TYPE_RAW_TRACEPOINT
            } else {
                BPF_PROG_TYPE_TRACEPOINT
            })?;
            let link = if raw {
                raw_tracepoint_open(tp, &prog)?
            } else {
                perf_tracepoint_attach(tp, &prog)?
            };
            fds.push(prog);
            fds.push(link);
        }
        Ok(Self { _fds: fds })
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr of 128 bytes for this command.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u64; 16]>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load_return_zero(prog_type: u32) -> anyhow::Result<OwnedFd> {
    // mov r0, 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    // prog_type, insn_cnt | insns | license | log_level, log_size | log_buf | kern_version,
    // prog_flags | prog_name[16]
    attr[0] = u64::from(prog_type) | (2u64 << 32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let name = b"bench_floor\0\0\0\0\0";
    attr[6] = u64::from_ne_bytes(name[..8].try_into()?);
    attr[7] = u64::from_ne_bytes(name[8..].try_into()?);
    bpf(BPF_PROG_LOAD, &mut attr).context("loading an empty BPF program")
}

fn raw_tracepoint_open(tp: &str, prog: &OwnedFd) -> anyhow::Result<OwnedFd> {
    let name = CString::new(tp)?;
    let mut attr = [0u64; 16];
    attr[0] = name.as_ptr() as u64;
    attr[1] = prog.as_raw_fd() as u64;
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).with_context(|| format!("raw tracepoint {tp}"))
}

fn perf_tracepoint_attach(tp: &str, prog: &OwnedFd) -> anyhow::Result<OwnedFd> {
    let id: u64 = fs::read_to_string(format!("/sys/kernel/tracing/events/raw_syscalls/{tp}/id"))
        .with_context(|| format!("tracefs id of raw_syscalls:{tp} (is tracefs mounted?)"))?
        .trim()
        .parse()?;
    // perf_event_attr (PERF_ATTR_SIZE_VER7 = 128 bytes): type, size | config | sample_period |
    // sample_type | read_format | flag bits (all 0: enabled) ...
    let mut attr = [0u64; 16];
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | (128u64 << 32);
    attr[1] = id;
    attr[2] = 1;
    attr[3] = 1 << 10; // PERF_SAMPLE_RAW, as bcc and bpftrace open it
    // One event, on CPU 0, as bcc does: the program runs for the tracepoint on every CPU.
    // SAFETY: `attr` is a valid perf_event_attr; pid -1 with cpu 0 is a system-wide event.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("perf_event_open {tp}"));
    }
    // SAFETY: a new fd we own.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: ioctls on our perf event fd with an fd argument.
    unsafe {
        if libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) != 0 {
            return Err(std::io::Error::last_os_error()).context("PERF_EVENT_IOC_SET_BPF");
        }
        libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0);
    }
    Ok(event)
}

// --- Per-program kernel run time --------------------------------------------------------------

/// Turns `kernel.bpf_stats_enabled` on while it lives, then back to what it was.
pub struct BpfStatsOn {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStatsOn {
    pub fn enable() -> anyhow::Result<Self> {
        let old = fs::read_to_string(BPF_STATS)
            .context("reading kernel.bpf_stats_enabled")?
            .trim()
            .to_string();
        fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(Self { old })
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.old);
    }
}

/// One kernel program's counters while a tracer held it.
#[derive(Clone, Debug)]
pub struct ProgRun {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The BPF programs process `pid` holds (its bpf-prog fds), with names and counters from
/// `bpftool -j prog show`.
pub fn prog_runs(pid: u32) -> anyhow::Result<Vec<ProgRun>> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let link = fs::read_link(entry.path()).unwrap_or_default();
        if link.to_string_lossy() != "anon_inode:bpf-prog" {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            ids.insert(id);
        }
    }
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool -j prog show")?;
    let progs: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing bpftool -j prog show")?;
    let mut runs = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let Some(id) = p["id"].as_u64() else { continue };
        if !ids.contains(&id) {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("?").to_string();
        let e = runs.entry(name.clone()).or_insert(ProgRun {
            name,
            run_time_ns: 0,
            run_cnt: 0,
        });
        e.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
        e.run_cnt += p["run_cnt"].as_u64().unwrap_or(0);
    }
    Ok(runs.into_values().collect())
}
