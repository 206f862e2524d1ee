//! `workload`: a workload that knows its own truth.
//!
//! Each subcommand does a precisely known amount of work (syscalls, file opens, page faults,
//! forks, context switches, CPU time) and then prints one JSON line with what it did, next to
//! the kernel's own accounting of it (rusage, schedstat, `/proc/self/status`). Tests and
//! benchmarks run it under `monitor` and compare the monitor's figures against that line.
//!
//! Linux x86_64 only; some modes (CPU pinning) may need root.

use std::ffi::CStr;
use std::fs;
use std::hint::black_box;
use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::str::FromStr;
use std::thread::{self, ScopedJoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

const DEV_NULL: &CStr = c"/dev/null";
const MISSING_PATH: &CStr = c"/nonexistent-monitor-workload/x";

/// Getppid calls each `fork` child makes after spinning, so per-child syscall counts are known.
const CHILD_SYSCALLS: u64 = 1000;
/// Iterations between clock reads while spinning, so the loop is dominated by arithmetic.
const SPIN_BATCH: u64 = 1024;
/// Syscalls between clock reads in `burst`, so the burst is dominated by the syscall.
const BURST_BATCH: u64 = 16;
const MIXED_TICK: Duration = Duration::from_millis(10);
const MIXED_SYSCALLS_PER_TICK: u64 = 100;

#[derive(Parser)]
#[command(
    about = "A workload that knows its own truth: does known work, then prints the \
                   kernel's accounting of it as one JSON line"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args)]
struct Common {
    /// Sleep this many milliseconds before working (after --wait-stdin), so a monitor can attach.
    #[arg(long, global = true, default_value_t = 0, value_name = "D")]
    delay_ms: u64,
    /// Block until one line is read from stdin before working.
    #[arg(long, global = true)]
    wait_stdin: bool,
    /// After reporting, stay alive (asleep) until stdin reaches EOF or SIGTERM arrives.
    #[arg(long, global = true)]
    linger: bool,
    /// Atomically write our pid to PATH at startup, before any delay or wait.
    #[arg(long, global = true, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Mode {
    /// T threads busy-loop in userspace for M ms of wall time.
    Spin {
        /// Wall-clock milliseconds each thread spins.
        #[arg(long, value_name = "M")]
        millis: u64,
        /// Number of spinning threads.
        #[arg(long, default_value_t = 1, value_name = "T")]
        threads: usize,
    },
    /// Make exactly N raw syscalls.
    Syscalls {
        /// Exact number of syscalls.
        #[arg(long, value_name = "N")]
        count: u64,
        /// Which syscall to make.
        #[arg(long, value_enum, default_value_t = Nr::Getppid)]
        nr: Nr,
    },
    /// Write N explicit tags to fd -1, alternately `monitor:begin bench` and `monitor:end`
    /// (each fails at once with EBADF: what an application pays per tag).
    Tags {
        /// Tag writes (an even number closes every unit it opens).
        #[arg(long, value_name = "N")]
        count: u64,
    },
    /// Open and close /dev/null N times, then fail to open a missing path F times.
    Files {
        /// Successful open+close pairs on /dev/null.
        #[arg(long, value_name = "N")]
        opens: u64,
        /// Opens of a missing path, each failing with ENOENT.
        #[arg(long, default_value_t = 0, value_name = "F")]
        fails: u64,
    },
    /// R times: map P anonymous pages, write one byte to each, unmap.
    Faults {
        /// Pages mapped and touched per round.
        #[arg(long, value_name = "P")]
        pages: usize,
        /// Number of map/touch/unmap rounds.
        #[arg(long, default_value_t = 1, value_name = "R")]
        rounds: usize,
    },
    /// Map M MiB of anonymous memory, write to every page and keep it until exit: resident
    /// memory a test can place against a cgroup limit. In `serve`, each call adds to the last.
    Hold {
        /// MiB mapped, touched and kept.
        #[arg(long, value_name = "M")]
        mib: usize,
    },
    /// Fork C children that each spin M ms, then make 1000 getppid calls.
    Fork {
        /// Number of children, all running at once.
        #[arg(long, value_name = "C")]
        children: usize,
        /// Wall-clock milliseconds each child spins.
        #[arg(long, value_name = "M")]
        millis: u64,
        /// Anonymous pages each child maps and touches (one fault each).
        #[arg(long, value_name = "P", default_value_t = 0)]
        pages: usize,
        /// Threads per child. The extra ones spin and touch their own P pages too, and are still
        /// spinning when the child exits (exit_group kills them all at once, on every CPU).
        #[arg(long, value_name = "K", default_value_t = 1)]
        threads: usize,
    },
    /// Two threads bounce one byte over two pipes R times, optionally pinned to CPUs A and B.
    Pingpong {
        /// Round trips.
        #[arg(long, value_name = "R")]
        rounds: u64,
        /// Pin the initiating thread to CPU A and the echoing thread to CPU B.
        #[arg(long, value_name = "A,B")]
        cpus: Option<CpuPair>,
    },
    /// Sleep I ms, then call one syscall in a tight loop for M ms.
    Burst {
        /// Idle milliseconds before the burst.
        #[arg(long, value_name = "I")]
        idle_ms: u64,
        /// Wall-clock milliseconds of the burst.
        #[arg(long, value_name = "M")]
        millis: u64,
        /// Which syscall the burst is made of.
        #[arg(long, value_enum, default_value_t = Nr::Getppid)]
        nr: Nr,
    },
    /// N raw nanosleep calls of M ms each, timed around the syscall. With two CPUs allowed, a
    /// helper thread moves the sleeper to the other CPU while it sleeps, so each call starts on
    /// one CPU and returns on the other.
    Sleeps {
        /// Number of nanosleep calls.
        #[arg(long, value_name = "N")]
        count: u64,
        /// Milliseconds each call sleeps.
        #[arg(long, value_name = "M")]
        millis: u64,
    },
    /// Steady background load for M ms: every 10 ms open/close /dev/null, fault in a fresh page
    /// and make 100 getppid calls.
    Mixed {
        /// Wall-clock milliseconds of load.
        #[arg(long, value_name = "M")]
        millis: u64,
    },
    /// Fork C children that live M ms, mostly asleep: every 100 ms each touches a page and makes
    /// 10 getppid calls. A parent with many idle children, as a pre-forking server has.
    Tree {
        /// Number of children, all alive at once.
        #[arg(long, value_name = "C")]
        children: usize,
        /// Wall-clock milliseconds each child lives.
        #[arg(long, value_name = "M")]
        millis: u64,
    },
    /// Start N short-lived threads, at most A alive at once: each spins U microseconds, waits
    /// until its whole batch of A is alive, and exits. A build or a test suite, as a process
    /// sees it: many threads over a life, few at a time (A = 1) or a burst of them (A large).
    Threads {
        /// Threads over the whole run.
        #[arg(long, value_name = "N")]
        total: usize,
        /// Threads alive at once (each batch).
        #[arg(long, default_value_t = 1, value_name = "A")]
        alive: usize,
        /// Microseconds each thread spins.
        #[arg(long, default_value_t = 50, value_name = "U")]
        spin_us: u64,
    },
    /// T threads each block C times (1 ms sleeps: voluntary switches), then stay parked while the
    /// workload reports and lingers, so their switch counts are still in /proc.
    Switches {
        /// Threads besides the main one.
        #[arg(long, value_name = "T")]
        threads: usize,
        /// Sleeps per thread.
        #[arg(long, value_name = "C")]
        count: u64,
    },
    /// Two child processes whose pids are equal modulo 65536 (chosen with clone3's set_tid: needs
    /// root and pid_max above 65536 plus the first) each make N raw nanosleep calls of M ms,
    /// timed around each call, the second half a call behind the first: a thread-indexed table
    /// of 65536 slots sees both in one slot, each entering while the other is in its call.
    Collide {
        /// Calls per child.
        #[arg(long, value_name = "N")]
        count: u64,
        /// Milliseconds each call sleeps.
        #[arg(long, value_name = "M")]
        millis: u64,
    },
    /// A minimal HTTP/1.1 keep-alive server on 127.0.0.1: one thread, epoll, read(2) and write(2),
    /// the same tiny response to every request (`200 OK`, body `ok`). Each line read on stdin
    /// is answered with one JSON line (port, connections, requests so far); it serves until
    /// stdin reaches EOF (or SIGTERM), then reports.
    HttpServer {
        /// Port to listen on (0: any free one; the stdin answers tell which).
        #[arg(long, default_value_t = 0, value_name = "P")]
        port: u16,
        /// Connections it must be able to hold open at once (RLIMIT_NOFILE is raised for them).
        #[arg(long, default_value_t = 20_000, value_name = "C")]
        max_connections: u64,
    },
    /// Keep-alive HTTP/1.1 load on 127.0.0.1:P: C connections, R requests in all, one at a time
    /// per connection. Without --rate each connection sends its next request as soon as the
    /// response arrives; with it, requests leave on a fixed schedule of RPS per second in all, each
    /// on the next idle connection in turn (so every connection gets its share).
    HttpLoad {
        /// The server's port.
        #[arg(long, value_name = "P")]
        port: u16,
        /// Keep-alive connections, opened before the clock starts.
        #[arg(long, default_value_t = 1, value_name = "C")]
        connections: usize,
        /// Requests in all.
        #[arg(long, value_name = "R")]
        requests: u64,
        /// Requests per second in all (paced); closed loop without it.
        #[arg(long, value_name = "RPS")]
        rate: Option<f64>,
    },
    /// Run workload commands read from stdin, one per line (e.g. `syscalls --count 1000`), each
    /// printing its own report line, until stdin reaches EOF. One process, many measurements: a
    /// tracer attached to its pid once sees every one of them.
    Serve,
}

/// One command line read by `serve`.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct ServeLine {
    #[command(subcommand)]
    mode: Mode,
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Self::Spin { .. } => "spin",
            Self::Syscalls { .. } => "syscalls",
            Self::Tags { .. } => "tags",
            Self::Files { .. } => "files",
            Self::Faults { .. } => "faults",
            Self::Hold { .. } => "hold",
            Self::Fork { .. } => "fork",
            Self::Pingpong { .. } => "pingpong",
            Self::Burst { .. } => "burst",
            Self::Mixed { .. } => "mixed",
            Self::Sleeps { .. } => "sleeps",
            Self::Tree { .. } => "tree",
            Self::Threads { .. } => "threads",
            Self::Switches { .. } => "switches",
            Self::Collide { .. } => "collide",
            Self::HttpServer { .. } => "http-server",
            Self::HttpLoad { .. } => "http-load",
            Self::Serve => "serve",
        }
    }

    fn run(&self) -> Result<Outcome> {
        match *self {
            Self::Spin { millis, threads } => spin(millis, threads),
            Self::Syscalls { count, nr } => Ok(syscalls(count, nr)),
            Self::Tags { count } => Ok(tags(count)),
            Self::Files { opens, fails } => files(opens, fails),
            Self::Faults { pages, rounds } => faults(pages, rounds),
            Self::Hold { mib } => hold(mib),
            Self::Fork {
                children,
                millis,
                pages,
                threads,
            } => fork_children(children, millis, pages, threads),
            Self::Pingpong { rounds, cpus } => pingpong(rounds, cpus),
            Self::Burst {
                idle_ms,
                millis,
                nr,
            } => Ok(burst(idle_ms, millis, nr)),
            Self::Mixed { millis } => mixed(millis),
            Self::Sleeps { count, millis } => sleeps(count, millis),
            Self::Tree { children, millis } => tree(children, millis),
            Self::Threads {
                total,
                alive,
                spin_us,
            } => threads(total, alive, spin_us),
            Self::Switches { threads, count } => switches(threads, count),
            Self::Collide { count, millis } => collide(count, millis),
            Self::HttpServer {
                port,
                max_connections,
            } => http_server(port, max_connections),
            Self::HttpLoad {
                port,
                connections,
                requests,
                rate,
            } => http_load(port, connections, requests, rate),
            Self::Serve => bail!("serve runs other modes, not itself"),
        }
    }
}

/// Argument-less syscalls whose cost is almost pure kernel entry/exit.
#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Nr {
    Getppid,
    Getpid,
    Gettid,
    Getuid,
}

impl Nr {
    fn number(self) -> libc::c_long {
        match self {
            Self::Getppid => libc::SYS_getppid,
            Self::Getpid => libc::SYS_getpid,
            Self::Gettid => libc::SYS_gettid,
            Self::Getuid => libc::SYS_getuid,
        }
    }
}

#[derive(Clone, Copy, Serialize)]
struct CpuPair {
    first: usize,
    second: usize,
}

impl FromStr for CpuPair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once(',').ok_or("expected A,B")?;
        let cpu = |v: &str| v.trim().parse().map_err(|e| format!("bad CPU {v:?}: {e}"));
        Ok(Self {
            first: cpu(a)?,
            second: cpu(b)?,
        })
    }
}

/// Mode-specific counts of the work actually done.
#[derive(Serialize)]
#[serde(untagged)]
enum Work {
    Spin {
        threads: usize,
        millis: u64,
        iterations: u64,
    },
    Syscalls {
        syscalls: u64,
        nr: Nr,
        syscall_nr: libc::c_long,
    },
    Tags {
        tags: u64,
    },
    Files {
        opens: u64,
        closes: u64,
        failed_opens: u64,
        failed_errno: Option<i32>,
    },
    Faults {
        pages: usize,
        pages_per_round: usize,
        rounds: usize,
        page_size: usize,
    },
    Hold {
        mib: usize,
        rss_bytes: u64,
    },
    Fork {
        children: Vec<u32>,
        child_millis: u64,
        child_syscalls: u64,
    },
    Pingpong {
        rounds: u64,
        cpus: Option<CpuPair>,
    },
    Burst {
        idle_ms: u64,
        millis: u64,
        burst_calls: u64,
        nr: Nr,
        syscall_nr: libc::c_long,
    },
    Mixed {
        millis: u64,
        ticks: u64,
        opens: u64,
        closes: u64,
        pages: u64,
        syscalls: u64,
    },
    Sleeps {
        sleeps: u64,
        millis: u64,
        /// Sum of the calls' durations as timed around each syscall.
        sleep_ns: u64,
        /// Calls that returned on another CPU than they entered on.
        migrated: u64,
    },
    Tree {
        children: Vec<u32>,
        child_millis: u64,
        child_wakeups: u64,
    },
    Threads {
        threads: usize,
        alive: usize,
        spin_us: u64,
    },
    Switches {
        threads: usize,
        sleeps_per_thread: u64,
    },
    Collide {
        children: Vec<u32>,
        sleeps_per_child: u64,
        millis: u64,
        /// Sum over both children of their calls' durations, timed around each syscall.
        sleep_ns: u64,
    },
    HttpServer {
        port: u16,
        /// Connections accepted over the run.
        accepted: u64,
        /// Requests answered.
        requests: u64,
    },
    HttpLoad {
        connections: usize,
        requests: u64,
        rate: Option<f64>,
        /// Time to open the connections (before the clock starts).
        connect_ns: u64,
        /// From the first request sent to the last response read.
        elapsed_ns: u64,
        /// Mean time from sending a request to reading its whole response.
        mean_latency_ns: f64,
        max_latency_ns: u64,
        /// Paced: requests sent more than 1 ms after their slot (no idle connection, or a slow
        /// wakeup).
        late: u64,
    },
}

struct Outcome {
    work: Work,
    ns_per_op: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    pid: u32,
    mode: &'static str,
    work: Work,
    ns_per_op: Option<f64>,
    #[serde(flatten)]
    truth: Truth,
}

/// The kernel's own accounting, read once the work (and every helper thread) is done.
#[derive(Serialize)]
struct Truth {
    rusage_self: Usage,
    rusage_children: Usage,
    schedstat_ns: u64,
    status: CtxtSwitches,
    oncpu_truth_ns: u64,
}

#[derive(Serialize)]
struct Usage {
    utime_us: u64,
    stime_us: u64,
    minflt: u64,
    majflt: u64,
    nvcsw: u64,
    nivcsw: u64,
    maxrss_kb: u64,
}

#[derive(Serialize)]
struct CtxtSwitches {
    voluntary_ctxt_switches: u64,
    nonvoluntary_ctxt_switches: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(path) = &cli.common.ready_file {
        write_ready_file(path)?;
    }
    wait_for_start(&cli.common)?;
    if let Mode::Serve = cli.mode {
        return serve();
    }
    run_and_report(&cli.mode)?;
    if cli.common.linger {
        linger()?;
    }
    Ok(())
}

/// Runs one command per stdin line, reporting each, until EOF.
fn serve() -> Result<()> {
    for line in io::stdin().lock().lines() {
        let line = line.context("read a command from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = ServeLine::try_parse_from(line.split_whitespace())
            .with_context(|| format!("serve: bad command {line:?}"))?;
        run_and_report(&parsed.mode)?;
    }
    Ok(())
}

/// Does the work of `mode`, then prints its report with the kernel's accounting.
fn run_and_report(mode: &Mode) -> Result<()> {
    let outcome = mode.run()?;
    // Counts are already recorded, so the files opened to read /proc cannot skew them.
    let truth = Truth::collect()?;
    print_report(&Report {
        pid: std::process::id(),
        mode: mode.name(),
        work: outcome.work,
        ns_per_op: outcome.ns_per_op,
        truth,
    })
}

fn write_ready_file(path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    // Rename so a polling test never reads a half-written pid.
    fs::write(&tmp, std::process::id().to_string())
        .with_context(|| format!("write {}", Path::new(&tmp).display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

fn wait_for_start(common: &Common) -> Result<()> {
    if common.wait_stdin {
        let mut line = String::new();
        let read = io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read start line from stdin")?;
        ensure!(read > 0, "stdin closed before the start line arrived");
    }
    thread::sleep(Duration::from_millis(common.delay_ms));
    Ok(())
}

fn print_report(report: &Report) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, report).context("serialize report")?;
    writeln!(out).context("write report")?;
    out.flush().context("flush report")
}

fn linger() -> Result<()> {
    exit_zero_on_sigterm()?;
    // A blocking read sleeps in the kernel, so lingering adds no CPU time to the figures.
    io::copy(&mut io::stdin().lock(), &mut io::sink()).context("drain stdin")?;
    Ok(())
}

extern "C" fn exit_zero(_signal: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe, and the report was flushed before lingering.
    unsafe { libc::_exit(0) }
}

fn exit_zero_on_sigterm() -> Result<()> {
    let handler = exit_zero as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only calls the async-signal-safe `_exit`.
    if unsafe { libc::signal(libc::SIGTERM, handler) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error()).context("install SIGTERM handler");
    }
    Ok(())
}

fn per_op(elapsed: Duration, ops: u64) -> Option<f64> {
    (ops > 0).then(|| elapsed.as_nanos() as f64 / ops as f64)
}

fn raw_syscall(nr: Nr) -> libc::c_long {
    // Raw, because libc wrappers may cache results (getpid did) and skip the kernel entirely.
    // SAFETY: every `Nr` is an argument-less syscall that touches no memory of ours.
    unsafe { libc::syscall(nr.number()) }
}

/// Busy-loops in userspace for `dur`; returns the iterations done. `Instant::now` reads the
/// clock through the vDSO, so no syscalls are made.
fn spin_for(dur: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 1_u64;
    let mut iterations = 0;
    while start.elapsed() < dur {
        for _ in 0..SPIN_BATCH {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        iterations += SPIN_BATCH;
    }
    iterations
}

fn join<T>(handle: ScopedJoinHandle<'_, T>) -> Result<T> {
    handle.join().map_err(|_| anyhow!("worker thread panicked"))
}

fn spin(millis: u64, threads: usize) -> Result<Outcome> {
    ensure!(threads > 0, "--threads must be at least 1");
    let dur = Duration::from_millis(millis);
    let iterations = thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| spin_for(dur))).collect();
        handles.into_iter().map(join).sum::<Result<u64>>()
    })?;
    Ok(Outcome {
        work: Work::Spin {
            threads,
            millis,
            iterations,
        },
        ns_per_op: None,
    })
}

/// Stacks of the short-lived threads: they spin and wait, nothing more, so tens of thousands fit.
const SMALL_STACK: usize = 64 * 1024;

fn threads(total: usize, alive: usize, spin_us: u64) -> Result<Outcome> {
    ensure!(alive > 0, "--alive must be at least 1");
    let spin = Duration::from_micros(spin_us);
    let mut started = 0;
    while started < total {
        let batch = alive.min(total - started);
        let barrier = std::sync::Barrier::new(batch);
        thread::scope(|s| -> Result<()> {
            let handles = (0..batch)
                .map(|_| {
                    thread::Builder::new()
                        .stack_size(SMALL_STACK)
                        .spawn_scoped(s, || {
                            spin_for(spin);
                            barrier.wait();
                        })
                        .context("spawning a thread")
                })
                .collect::<Result<Vec<_>>>()?;
            handles.into_iter().try_for_each(join)
        })?;
        started += batch;
    }
    Ok(Outcome {
        work: Work::Threads {
            threads: total,
            alive,
            spin_us,
        },
        ns_per_op: None,
    })
}

fn switches(threads: usize, count: u64) -> Result<Outcome> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for _ in 0..threads {
        let done = done_tx.clone();
        thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn(move || {
                for _ in 0..count {
                    thread::sleep(Duration::from_millis(1));
                }
                let _ = done.send(());
                // Parked for the rest of the process's life: its counts stay in /proc.
                loop {
                    thread::park();
                }
            })
            .context("spawning a thread")?;
    }
    for _ in 0..threads {
        done_rx.recv().context("a switching thread died")?;
    }
    Ok(Outcome {
        work: Work::Switches {
            threads,
            sleeps_per_thread: count,
        },
        ns_per_op: None,
    })
}

/// One raw nanosleep call and how long it took, timed around the syscall: (return value, ns).
fn timed_nanosleep(ts: &libc::timespec) -> (libc::c_long, u64) {
    let t = Instant::now();
    // SAFETY: a valid timespec; no remainder wanted.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            ts,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
    (rc, t.elapsed().as_nanos() as u64)
}

/// struct clone_args of clone3(2), up to set_tid_size (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// Forks a child with pid `pid` (EEXIST when it is taken); the child runs `child` and exits.
fn fork_with_pid(pid: libc::pid_t, child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: (&raw const pid) as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is fork: the child has its own copy of memory, and this
    // process has one thread, so no lock is held by a thread that is not copied.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, &args, size_of::<CloneArgs>()) };
    match rc {
        0 => {
            let code = child();
            // SAFETY: leaving the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        -1 => Err(io::Error::last_os_error()),
        pid => Ok(pid as libc::pid_t),
    }
}

fn collide(count: u64, millis: u64) -> Result<Outcome> {
    const SPAN: libc::pid_t = 1 << 16;
    let pid_max: libc::pid_t = fs::read_to_string("/proc/sys/kernel/pid_max")
        .context("reading pid_max")?
        .trim()
        .parse()
        .context("parsing pid_max")?;
    let ts = libc::timespec {
        tv_sec: (millis / 1000) as libc::time_t,
        tv_nsec: ((millis % 1000) * 1_000_000) as libc::c_long,
    };
    // Each child writes its summed sleep time (8 bytes) to the pipe.
    let mut pipe = [0; 2];
    // SAFETY: a valid array of two fds.
    ensure!(
        unsafe { libc::pipe(pipe.as_mut_ptr()) } == 0,
        "pipe: {}",
        io::Error::last_os_error()
    );
    // The second child starts half a call later, so each enters and leaves while the other is
    // mid-call in the slot they share (clock_nanosleep, not counted as nanosleep).
    let sleeper = |offset: Duration| -> i32 {
        thread::sleep(offset);
        let mut total = 0u64;
        for _ in 0..count {
            let (rc, ns) = timed_nanosleep(&ts);
            total += ns;
            if rc != 0 {
                return 1;
            }
        }
        let bytes = total.to_ne_bytes();
        // SAFETY: writing our buffer to our pipe.
        let n = unsafe { libc::write(pipe[1], bytes.as_ptr().cast(), bytes.len()) };
        if n == 8 { 0 } else { 1 }
    };
    // SAFETY: getpid has no preconditions.
    let base = unsafe { libc::getpid() };
    let mut children = None;
    for candidate in (base + 100..pid_max - SPAN).step_by(37).take(200) {
        let first = match fork_with_pid(candidate, || sleeper(Duration::ZERO)) {
            Ok(pid) => pid,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e).context("clone3 with set_tid (needs root)"),
        };
        match fork_with_pid(candidate + SPAN, || {
            sleeper(Duration::from_millis(millis / 2))
        }) {
            Ok(second) => {
                children = Some([first, second]);
                break;
            }
            Err(e) => {
                reap(first)?;
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e).context("clone3 with set_tid (needs root)");
                }
            }
        }
    }
    let children = children.with_context(|| {
        format!(
            "found no two free pids 65536 apart below pid_max {pid_max} (raise it above {})",
            base + 100 + SPAN
        )
    })?;
    let mut sleep_ns = 0;
    for &child in &children {
        reap(child)?;
        let mut bytes = [0u8; 8];
        // SAFETY: reading into our buffer from our pipe.
        let n = unsafe { libc::read(pipe[0], bytes.as_mut_ptr().cast(), 8) };
        ensure!(n == 8, "a sleeper did not report");
        sleep_ns += u64::from_ne_bytes(bytes);
    }
    Ok(Outcome {
        work: Work::Collide {
            children: children.iter().map(|&p| p as u32).collect(),
            sleeps_per_child: count,
            millis,
            sleep_ns,
        },
        ns_per_op: None,
    })
}

fn syscalls(count: u64, nr: Nr) -> Outcome {
    let start = Instant::now();
    for _ in 0..count {
        black_box(raw_syscall(nr));
    }
    let elapsed = start.elapsed();
    Outcome {
        work: Work::Syscalls {
            syscalls: count,
            nr,
            syscall_nr: nr.number(),
        },
        ns_per_op: per_op(elapsed, count),
    }
}

fn tags(count: u64) -> Outcome {
    const MARKERS: [&[u8]; 2] = [b"monitor:begin bench", b"monitor:end"];
    let start = Instant::now();
    for i in 0..count {
        let marker = MARKERS[(i % 2) as usize];
        // SAFETY: writes `marker`'s bytes to fd -1, which fails with EBADF and touches nothing.
        black_box(unsafe { libc::write(-1, marker.as_ptr().cast(), marker.len()) });
    }
    let elapsed = start.elapsed();
    Outcome {
        work: Work::Tags { tags: count },
        ns_per_op: per_op(elapsed, count),
    }
}

fn open_readonly(path: &CStr) -> io::Result<libc::c_int> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

fn close(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: the caller owns `fd` and never uses it again.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_close_dev_null() -> Result<()> {
    let fd = open_readonly(DEV_NULL).context("open /dev/null")?;
    close(fd).context("close /dev/null")
}

fn files(opens: u64, fails: u64) -> Result<Outcome> {
    let (mut opened, mut closed) = (0, 0);
    let start = Instant::now();
    for _ in 0..opens {
        let fd = open_readonly(DEV_NULL).context("open /dev/null")?;
        opened += 1;
        close(fd).context("close /dev/null")?;
        closed += 1;
    }
    let elapsed = start.elapsed();

    let mut failed = 0;
    for _ in 0..fails {
        match open_readonly(MISSING_PATH) {
            Ok(fd) => {
                close(fd).ok();
                bail!("{MISSING_PATH:?} unexpectedly exists");
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => failed += 1,
            Err(e) => return Err(e).context(format!("open {MISSING_PATH:?}: expected ENOENT")),
        }
    }

    Ok(Outcome {
        work: Work::Files {
            opens: opened,
            closes: closed,
            failed_opens: failed,
            failed_errno: (failed > 0).then_some(libc::ENOENT),
        },
        ns_per_op: per_op(elapsed, opens),
    })
}

fn page_size() -> Result<usize> {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).context("sysconf(_SC_PAGESIZE)")
}

/// A private anonymous mapping, unmapped on drop.
struct AnonPages {
    ptr: NonNull<u8>,
    len: usize,
}

impl AnonPages {
    fn map(len: usize) -> Result<Self> {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context(format!("mmap {len} bytes"));
        }
        // Transparent huge pages would satisfy 512 touches with one fault; we promise one fault
        // per page. Best effort: the call fails harmlessly on kernels without THP.
        // SAFETY: the range is exactly the mapping we just created.
        unsafe { libc::madvise(addr, len, libc::MADV_NOHUGEPAGE) };
        let ptr = NonNull::new(addr.cast()).context("mmap returned null")?;
        Ok(Self { ptr, len })
    }

    /// Writes one byte to each page, faulting each one in.
    fn touch(&mut self, page_size: usize) {
        for offset in (0..self.len).step_by(page_size) {
            // SAFETY: `offset < len`, inside our writable mapping.
            unsafe { self.ptr.add(offset).write_volatile(1) };
        }
    }
}

impl Drop for AnonPages {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping we own; nothing borrows it past `self`.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap failed");
    }
}

fn faults(pages: usize, rounds: usize) -> Result<Outcome> {
    ensure!(pages > 0, "--pages must be at least 1");
    let page_size = page_size()?;
    let len = pages.checked_mul(page_size).context("--pages too large")?;
    let mut touching = Duration::ZERO;
    for _ in 0..rounds {
        let mut region = AnonPages::map(len)?;
        let start = Instant::now();
        region.touch(page_size);
        touching += start.elapsed();
    }
    let total = pages * rounds;
    Ok(Outcome {
        work: Work::Faults {
            pages: total,
            pages_per_round: pages,
            rounds,
            page_size,
        },
        ns_per_op: per_op(touching, total as u64),
    })
}

fn hold(mib: usize) -> Result<Outcome> {
    let page_size = page_size()?;
    let len = mib.checked_mul(1 << 20).context("--mib too large")?;
    let mut region = AnonPages::map(len)?;
    let start = Instant::now();
    region.touch(page_size);
    let took = start.elapsed();
    // Kept until the process exits: that is the point.
    std::mem::forget(region);
    Ok(Outcome {
        work: Work::Hold {
            mib,
            rss_bytes: resident_bytes()?,
        },
        ns_per_op: per_op(took, (len / page_size) as u64),
    })
}

/// VmRSS of this process, after the work.
fn resident_bytes() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

fn fork_children(children: usize, millis: u64, pages: usize, threads: usize) -> Result<Outcome> {
    let dur = Duration::from_millis(millis);
    let page_size = page_size()?;
    let len = pages.checked_mul(page_size).context("--pages too large")?;
    let mut pids = Vec::with_capacity(children);
    for _ in 0..children {
        match fork_spinner(dur, len, page_size, threads) {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                // Reap what we started so no child outlives a failed run; the fork error matters more.
                let _ = pids.iter().try_for_each(|&pid| reap(pid));
                return Err(e);
            }
        }
    }
    pids.iter().try_for_each(|&pid| reap(pid))?;
    Ok(Outcome {
        work: Work::Fork {
            children: pids.iter().map(|&pid| pid.unsigned_abs()).collect(),
            child_millis: millis,
            child_syscalls: CHILD_SYSCALLS,
        },
        ns_per_op: None,
    })
}

fn fork_spinner(
    dur: Duration,
    len: usize,
    page_size: usize,
    threads: usize,
) -> Result<libc::pid_t> {
    // SAFETY: this process is single-threaded here, so no lock is held across the fork and the
    // child may allocate (to start its threads); it never unwinds and leaves with `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()).context("fork"),
        0 => child_main(dur, len, page_size, threads),
        pid => Ok(pid),
    }
}

fn child_main(dur: Duration, len: usize, page_size: usize, threads: usize) -> ! {
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 1..threads {
        let ready = ready.clone();
        let spawned = std::thread::Builder::new().spawn(move || {
            spin_for(dur);
            if len > 0 {
                match AnonPages::map(len) {
                    Ok(mut region) => region.touch(page_size),
                    // SAFETY: as below.
                    Err(_) => unsafe { libc::_exit(1) },
                }
            }
            ready.fetch_add(1, std::sync::atomic::Ordering::Release);
            // Still running when the main thread exits the process.
            loop {
                spin_for(Duration::from_millis(10));
            }
        });
        if spawned.is_err() {
            // SAFETY: as below.
            unsafe { libc::_exit(1) }
        }
    }
    spin_for(dur);
    // mmap/munmap are raw syscalls; only a failure would allocate (for its error message).
    if len > 0 {
        match AnonPages::map(len) {
            Ok(mut region) => region.touch(page_size),
            // SAFETY: as below.
            Err(_) => unsafe { libc::_exit(1) },
        }
    }
    for _ in 0..CHILD_SYSCALLS {
        black_box(raw_syscall(Nr::Getppid));
    }
    while ready.load(std::sync::atomic::Ordering::Acquire) + 1 < threads {
        std::thread::yield_now();
    }
    // SAFETY: `_exit` skips the parent's atexit handlers and stdio buffers, which the child
    // must not run or flush a second time.
    unsafe { libc::_exit(0) }
}

fn reap(pid: libc::pid_t) -> Result<()> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for the duration of the call.
    while unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context(format!("waitpid {pid}"));
        }
    }
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid} did not exit cleanly (wait status {status:#x})"
    );
    Ok(())
}

/// The CPUs this process may run on, so bad `--cpus` fail up front with a clear message.
fn allowed_cpus() -> Result<libc::cpu_set_t> {
    // SAFETY: `cpu_set_t` is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, correctly sized out-buffer.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error()).context("sched_getaffinity");
    }
    Ok(set)
}

fn check_cpu(allowed: &libc::cpu_set_t, cpu: usize) -> Result<()> {
    ensure!(cpu < libc::CPU_SETSIZE as usize, "CPU {cpu} out of range");
    // SAFETY: `cpu` is within the set's bounds, checked above.
    ensure!(
        unsafe { libc::CPU_ISSET(cpu, allowed) },
        "CPU {cpu} is not available to us"
    );
    Ok(())
}

/// Pins the calling thread to `cpu`, which `check_cpu` has validated.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: `cpu_set_t` is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE`, so the bit lies inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid, correctly sized cpu_set_t; tid 0 means the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("pin to CPU {cpu}"));
    }
    Ok(())
}

fn pingpong(rounds: u64, cpus: Option<CpuPair>) -> Result<Outcome> {
    if let Some(pair) = cpus {
        let allowed = allowed_cpus()?;
        check_cpu(&allowed, pair.first)?;
        check_cpu(&allowed, pair.second)?;
    }
    let (mut ping_rx, mut ping_tx) = io::pipe().context("create ping pipe")?;
    let (mut pong_rx, mut pong_tx) = io::pipe().context("create pong pipe")?;
    // Each thread says when its rounds are done, and the main thread gives them time to exit
    // before it joins: a join that finds its thread still running waits on a futex, one that
    // does not makes no call, and that race (lost under strace, won without it) would make
    // the counts of the same command differ from run to run. One-byte reads: each is one call.
    let (mut done_rx, done_tx) = io::pipe().context("create done pipe")?;
    let mut server_done = done_tx.try_clone().context("clone done pipe")?;
    let mut client_done = done_tx;

    // Each thread owns its pipe ends: if one fails, the other sees EOF or EPIPE instead of
    // blocking forever.
    let (client, server) = thread::scope(|s| {
        let server = s.spawn(move || -> Result<()> {
            if let Some(pair) = cpus {
                pin_to_cpu(pair.second)?;
            }
            let mut byte = [0_u8];
            for _ in 0..rounds {
                ping_rx.read_exact(&mut byte).context("server read")?;
                pong_tx.write_all(&byte).context("server write")?;
            }
            server_done.write_all(&[0]).context("server done")?;
            Ok(())
        });
        let client = s.spawn(move || -> Result<Duration> {
            if let Some(pair) = cpus {
                pin_to_cpu(pair.first)?;
            }
            let mut byte = [1_u8];
            let start = Instant::now();
            for _ in 0..rounds {
                ping_tx.write_all(&byte).context("client write")?;
                pong_rx.read_exact(&mut byte).context("client read")?;
            }
            let elapsed = start.elapsed();
            client_done.write_all(&[0]).context("client done")?;
            Ok(elapsed)
        });
        let mut byte = [0_u8];
        for _ in 0..2 {
            // A thread that failed closes its end before writing: EOF, and the join reports.
            if done_rx.read_exact(&mut byte).is_err() {
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
        (join(client), join(server))
    });
    server??;
    let elapsed = client??;
    Ok(Outcome {
        work: Work::Pingpong { rounds, cpus },
        ns_per_op: per_op(elapsed, rounds),
    })
}

fn burst(idle_ms: u64, millis: u64, nr: Nr) -> Outcome {
    thread::sleep(Duration::from_millis(idle_ms));
    let dur = Duration::from_millis(millis);
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < dur {
        for _ in 0..BURST_BATCH {
            black_box(raw_syscall(nr));
        }
        calls += BURST_BATCH;
    }
    let elapsed = start.elapsed();
    Outcome {
        work: Work::Burst {
            idle_ms,
            millis,
            burst_calls: calls,
            nr,
            syscall_nr: nr.number(),
        },
        ns_per_op: per_op(elapsed, calls),
    }
}

fn mixed(millis: u64) -> Result<Outcome> {
    let page_size = page_size()?;
    let start = Instant::now();
    let end = start + Duration::from_millis(millis);
    let mut next = start;
    let mut ticks = 0;
    while next < end {
        open_close_dev_null()?;
        AnonPages::map(page_size)?.touch(page_size);
        for _ in 0..MIXED_SYSCALLS_PER_TICK {
            black_box(raw_syscall(Nr::Getppid));
        }
        ticks += 1;
        // Absolute deadlines keep the rate steady however long each tick's work takes.
        next += MIXED_TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    // Any failure aborts the run, so every completed tick did each piece of work exactly once.
    Ok(Outcome {
        work: Work::Mixed {
            millis,
            ticks,
            opens: ticks,
            closes: ticks,
            pages: ticks,
            syscalls: ticks * MIXED_SYSCALLS_PER_TICK,
        },
        ns_per_op: None,
    })
}

fn sleeps(count: u64, millis: u64) -> Result<Outcome> {
    let allowed = allowed_cpus()?;
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is within the set's bounds.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
        .take(2)
        .collect();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let nap = Duration::from_millis(millis);
    // The mover waits on a channel (futex), never in nanosleep, so the calls counted are ours.
    let (moves, to_move) = std::sync::mpsc::channel::<usize>();
    let mover = thread::spawn(move || -> Result<()> {
        let (_keep, idle) = std::sync::mpsc::channel::<()>();
        for cpu in to_move {
            // Half the nap in: the sleeper is in the kernel by now.
            let _ = idle.recv_timeout(nap / 2);
            // SAFETY: as in pin_to_cpu.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(cpu, &mut set) };
            // SAFETY: a valid set for a thread of this process.
            if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) } != 0 {
                return Err(io::Error::last_os_error()).context("moving the sleeper");
            }
        }
        Ok(())
    });
    let ts = libc::timespec {
        tv_sec: (millis / 1000) as libc::time_t,
        tv_nsec: ((millis % 1000) * 1_000_000) as libc::c_long,
    };
    let (mut sleep_ns, mut migrated) = (0u64, 0u64);
    for i in 0..count {
        if let [a, b] = cpus[..] {
            let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
            pin_to_cpu(from)?;
            let _ = moves.send(to);
        }
        // SAFETY: sched_getcpu has no preconditions.
        let before = unsafe { libc::sched_getcpu() };
        let (rc, ns) = timed_nanosleep(&ts);
        sleep_ns += ns;
        ensure!(rc == 0, "nanosleep failed: {}", io::Error::last_os_error());
        // SAFETY: as above.
        if unsafe { libc::sched_getcpu() } != before {
            migrated += 1;
        }
    }
    drop(moves);
    mover
        .join()
        .map_err(|_| anyhow!("mover thread panicked"))??;
    Ok(Outcome {
        work: Work::Sleeps {
            sleeps: count,
            millis,
            sleep_ns,
            migrated,
        },
        ns_per_op: None,
    })
}

/// Wakeup interval of `tree` children.
const TREE_TICK: Duration = Duration::from_millis(100);

fn tree(children: usize, millis: u64) -> Result<Outcome> {
    let dur = Duration::from_millis(millis);
    let mut pids = Vec::with_capacity(children);
    for _ in 0..children {
        // SAFETY: as in `fork_spinner`: this process is single-threaded here, and the child only
        // sleeps, touches its own stack, makes raw syscalls and `_exit`s.
        match unsafe { libc::fork() } {
            -1 => {
                let err = io::Error::last_os_error();
                // SAFETY: kill(2) on children we forked; they are reaped below.
                pids.iter().for_each(|&pid| unsafe {
                    libc::kill(pid, libc::SIGKILL);
                });
                let _ = pids.iter().try_for_each(|&pid| reap(pid));
                return Err(err).context("fork");
            }
            0 => tree_child(dur),
            pid => pids.push(pid),
        }
    }
    pids.iter().try_for_each(|&pid| reap(pid))?;
    Ok(Outcome {
        work: Work::Tree {
            children: pids.iter().map(|&pid| pid.unsigned_abs()).collect(),
            child_millis: millis,
            child_wakeups: (millis / TREE_TICK.as_millis() as u64).max(1),
        },
        ns_per_op: None,
    })
}

fn tree_child(dur: Duration) -> ! {
    // Die with the parent, so a killed tree leaves no orphans behind.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let start = Instant::now();
    let mut page = [0_u8; 8192];
    let mut tick = 0_usize;
    while start.elapsed() < dur {
        // Sleeps in the kernel (nanosleep): no allocation after the fork.
        thread::sleep(TREE_TICK.min(dur.saturating_sub(start.elapsed())));
        black_box(&mut page)[tick % 2 * 4096] ^= 1;
        for _ in 0..10 {
            black_box(raw_syscall(Nr::Getppid));
        }
        tick += 1;
    }
    // SAFETY: as in `child_main`.
    unsafe { libc::_exit(0) }
}

/// The one response `http-server` gives: tiny, so the server's cost is the syscalls around it.
const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// The one request `http-load` sends.
const HTTP_REQUEST: &[u8] = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
/// fds besides the connections (std streams, epoll, listener, /proc reads).
const SPARE_FDS: u64 = 64;

/// Raises RLIMIT_NOFILE to `want` fds, the hard limit too when allowed (root); otherwise to
/// the hard limit.
fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(());
    }
    let soft = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: a valid rlimit, within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(())
}

/// A level-triggered epoll instance; each fd is registered with a token of the caller's.
struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> Result<Self> {
        // SAFETY: no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input; the events come back with `token`.
    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: a valid event for the call's duration.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ready events into `events`; 0 on a timeout or a signal. `timeout_ms` -1 blocks.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> Result<usize> {
        // SAFETY: `events` is valid for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err).context("epoll_wait");
        }
        Ok(n as usize)
    }
}

/// read(2) into `buf`: the bytes read (0 at EOF), or the error (WouldBlock included).
fn sys_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// write(2) of all of `data` on a non-blocking fd, waiting in poll(2) when the socket is full
/// (on loopback with these sizes, never).
fn sys_write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, -1) };
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// Counts the ends of request heads ("\r\n\r\n") in `data`; `matched` carries how much of the
/// terminator the previous read ended with, so a head split across reads is counted once.
fn count_heads(data: &[u8], matched: &mut u8) -> u64 {
    const END: &[u8; 4] = b"\r\n\r\n";
    let mut heads = 0;
    for &b in data {
        *matched = if b == END[*matched as usize] {
            *matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if *matched == 4 {
            heads += 1;
            *matched = 0;
        }
    }
    heads
}

fn http_server(port: u16, max_connections: u64) -> Result<Outcome> {
    raise_nofile(max_connections + SPARE_FDS)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).context("bind 127.0.0.1")?;
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // Again, with a backlog that a burst of thousands of connects does not overflow.
    // SAFETY: a bound socket of ours.
    unsafe { libc::listen(lfd, 4096) };
    let port = listener.local_addr()?.port();
    let epoll = Epoll::new()?;
    const STDIN: u64 = u64::MAX;
    const LISTENER: u64 = u64::MAX - 1;
    epoll.add(lfd, LISTENER).context("epoll add listener")?;
    // A pipe or a terminal can be watched; /dev/null cannot (EPERM): then SIGTERM ends it.
    let _ = epoll.add(0, STDIN);
    // Per fd: how much of a request head's terminator its last read ended with.
    let mut matched: Vec<u8> = vec![];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0_u8; 16 * 1024];
    let mut out: Vec<u8> = vec![];
    let (mut accepted, mut open, mut requests) = (0_u64, 0_u64, 0_u64);
    'serve: loop {
        let n = epoll.wait(&mut events, -1)?;
        for ev in &events[..n] {
            match ev.u64 {
                LISTENER => loop {
                    // SAFETY: a listening socket; no address wanted.
                    let fd = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if fd < 0 {
                        let err = io::Error::last_os_error();
                        match err.kind() {
                            io::ErrorKind::WouldBlock => break,
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {
                                continue;
                            }
                            _ => return Err(err).context("accept4"),
                        }
                    }
                    epoll.add(fd, fd as u64).context("epoll add connection")?;
                    if matched.len() <= fd as usize {
                        matched.resize(fd as usize + 1, 0);
                    }
                    matched[fd as usize] = 0;
                    accepted += 1;
                    open += 1;
                },
                STDIN => {
                    let got = match sys_read(0, &mut buf) {
                        Ok(got) => got,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e).context("read stdin"),
                    };
                    if got == 0 {
                        break 'serve;
                    }
                    for _ in buf[..got].iter().filter(|&&b| b == b'\n') {
                        let status = serde_json::json!({
                            "port": port,
                            "accepted": accepted,
                            "open": open,
                            "requests": requests,
                        });
                        let mut stdout = io::stdout().lock();
                        writeln!(stdout, "{status}")?;
                        stdout.flush()?;
                    }
                }
                token => {
                    let fd = token as RawFd;
                    let heads = match sys_read(fd, &mut buf) {
                        Ok(0) => None,
                        Ok(got) => Some(count_heads(&buf[..got], &mut matched[fd as usize])),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) =>
                        {
                            Some(0)
                        }
                        Err(_) => None,
                    };
                    let alive = match heads {
                        Some(0) => true,
                        Some(1) => sys_write_all(fd, HTTP_RESPONSE).is_ok(),
                        Some(k) => {
                            // Pipelined: the responses in order, in one write.
                            out.clear();
                            for _ in 0..k {
                                out.extend_from_slice(HTTP_RESPONSE);
                            }
                            sys_write_all(fd, &out).is_ok()
                        }
                        None => false,
                    };
                    requests += heads.unwrap_or(0);
                    if !alive {
                        // close(2) also takes it out of the epoll set.
                        // SAFETY: an accepted fd of ours, closed once.
                        unsafe { libc::close(fd) };
                        open -= 1;
                    }
                }
            }
        }
    }
    Ok(Outcome {
        work: Work::HttpServer {
            port,
            accepted,
            requests,
        },
        ns_per_op: None,
    })
}

fn http_load(port: u16, connections: usize, requests: u64, rate: Option<f64>) -> Result<Outcome> {
    ensure!(connections > 0, "--connections must be at least 1");
    if let Some(r) = rate {
        ensure!(r.is_finite() && r > 0.0, "--rate must be positive");
    }
    raise_nofile(connections as u64 + SPARE_FDS)?;
    let connecting = Instant::now();
    let mut socks = Vec::with_capacity(connections);
    for i in 0..connections {
        let s = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connection {} of {connections} to port {port}", i + 1))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    let connect_ns = connecting.elapsed().as_nanos() as u64;
    let epoll = Epoll::new()?;
    for (i, s) in socks.iter().enumerate() {
        epoll
            .add(s.as_raw_fd(), i as u64)
            .context("epoll add connection")?;
    }
    // Per connection: when its outstanding request left (None: idle), response bytes so far.
    let mut sent_at: Vec<Option<Instant>> = vec![None; connections];
    let mut got = vec![0_usize; connections];
    // When request k is due: k / rate after the start.
    let slot = rate.map(|r| move |k: u64| Duration::from_nanos((k as f64 * 1e9 / r) as u64));
    let (mut sent, mut done, mut late) = (0_u64, 0_u64, 0_u64);
    let (mut latency_sum, mut latency_max) = (0_u128, 0_u64);
    let mut cursor = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0_u8; 4096];
    let start = Instant::now();
    let send = |i: usize, sent_at: &mut [Option<Instant>]| -> Result<()> {
        sys_write_all(socks[i].as_raw_fd(), HTTP_REQUEST).context("send a request")?;
        sent_at[i] = Some(Instant::now());
        Ok(())
    };
    if slot.is_none() {
        for i in 0..connections.min(requests as usize) {
            send(i, &mut sent_at)?;
            sent += 1;
        }
    }
    while done < requests {
        let mut timeout = -1;
        if let Some(slot) = slot {
            let now = Instant::now();
            while sent < requests {
                let due = start + slot(sent);
                if due > now {
                    let wait = due - now;
                    // Round up: waking early would only spin.
                    timeout = wait.as_micros().div_ceil(1000) as i32;
                    break;
                }
                // The next idle connection in turn; none: wait for a response.
                let Some(i) = (0..connections)
                    .map(|k| (cursor + k) % connections)
                    .find(|&i| sent_at[i].is_none())
                else {
                    break;
                };
                if now - due > Duration::from_millis(1) {
                    late += 1;
                }
                send(i, &mut sent_at)?;
                sent += 1;
                cursor = (i + 1) % connections;
            }
        }
        let n = epoll.wait(&mut events, timeout)?;
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let read = match sys_read(socks[i].as_raw_fd(), &mut buf) {
                Ok(0) => bail!("the server closed connection {i}"),
                Ok(read) => read,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e).context("read a response"),
            };
            got[i] += read;
            if got[i] < HTTP_RESPONSE.len() {
                continue;
            }
            ensure!(
                got[i] == HTTP_RESPONSE.len(),
                "connection {i}: {} bytes for one request",
                got[i]
            );
            got[i] = 0;
            let at = sent_at[i].take().context("a response to no request")?;
            let ns = at.elapsed().as_nanos();
            latency_sum += ns;
            latency_max = latency_max.max(ns as u64);
            done += 1;
            if slot.is_none() && sent < requests {
                send(i, &mut sent_at)?;
                sent += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    drop(socks);
    Ok(Outcome {
        work: Work::HttpLoad {
            connections,
            requests: done,
            rate,
            connect_ns,
            elapsed_ns: elapsed.as_nanos() as u64,
            mean_latency_ns: latency_sum as f64 / done.max(1) as f64,
            max_latency_ns: latency_max,
            late,
        },
        ns_per_op: per_op(elapsed, done),
    })
}

impl Truth {
    fn collect() -> Result<Self> {
        // rusage first: it needs no file, so nothing below can leak into it.
        let rusage_self = Usage::read(libc::RUSAGE_SELF)?;
        let rusage_children = Usage::read(libc::RUSAGE_CHILDREN)?;
        let oncpu_truth_ns = rusage_self.oncpu_ns() + rusage_children.oncpu_ns();
        Ok(Self {
            rusage_self,
            rusage_children,
            schedstat_ns: schedstat_ns()?,
            status: CtxtSwitches::read()?,
            oncpu_truth_ns,
        })
    }
}

fn nonneg(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Usage {
    fn read(who: libc::c_int) -> Result<Self> {
        // SAFETY: `rusage` is plain data; all-zero is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid out-pointer.
        if unsafe { libc::getrusage(who, &mut ru) } != 0 {
            return Err(io::Error::last_os_error()).context("getrusage");
        }
        let micros = |tv: libc::timeval| nonneg(tv.tv_sec) * 1_000_000 + nonneg(tv.tv_usec);
        Ok(Self {
            utime_us: micros(ru.ru_utime),
            stime_us: micros(ru.ru_stime),
            minflt: nonneg(ru.ru_minflt),
            majflt: nonneg(ru.ru_majflt),
            nvcsw: nonneg(ru.ru_nvcsw),
            nivcsw: nonneg(ru.ru_nivcsw),
            // Linux reports ru_maxrss in kilobytes.
            maxrss_kb: nonneg(ru.ru_maxrss),
        })
    }

    fn oncpu_ns(&self) -> u64 {
        (self.utime_us + self.stime_us) * 1000
    }
}

/// Sum of on-CPU time of our live threads. Exited threads' time is gone from /proc, so with
/// helper threads joined this is the main thread's share; `oncpu_truth_ns` covers everything.
fn schedstat_ns() -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir("/proc/self/task").context("list /proc/self/task")? {
        let path = entry
            .context("list /proc/self/task")?
            .path()
            .join("schedstat");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let first = text.split_whitespace().next().unwrap_or_default();
                total += first
                    .parse::<u64>()
                    .with_context(|| format!("parse {}: {text:?}", path.display()))?;
            }
            // A just-joined thread can still be listed for a moment before the kernel reaps it.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
    }
    Ok(total)
}

impl CtxtSwitches {
    fn read() -> Result<Self> {
        let status = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
        let field = |name: &str| -> Result<u64> {
            let value = status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .with_context(|| format!("no {name} in /proc/self/status"))?;
            value
                .trim()
                .parse()
                .with_context(|| format!("parse {name}: {value:?}"))
        };
        Ok(Self {
            voluntary_ctxt_switches: field("voluntary_ctxt_switches")?,
            nonvoluntary_ctxt_switches: field("nonvoluntary_ctxt_switches")?,
        })
    }
}
