//! Section 6: the cost of the requests family (on by default), which follows a
//! target's HTTP/1 connections through its read/write/close syscalls and its threads' wakeups.
//!
//! (a) CPU per request of a minimal keep-alive HTTP server (`workload http-server`: one thread,
//!     epoll, read(2)/write(2), a 40-byte response), loaded by a separate `workload http-load`
//!     process: nothing attached, monitor with every family but requests (`--programs
//!     syscalls,sched,faults`), and monitor with its default programs, the requests family
//!     among them, interleaved in rounds as in sections
//!     1-3. The figure is the server process's own CPU (schedstat) over the load / requests; the
//!     client's wall ns per request is shown next to it.
//! (b) The daemon at a paced 5,000 requests/s (CPU, RSS, and whether `app_requests_total`
//!     counted every request), and its RSS with 10 and with 10,000 keep-alive connections.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    tracers::Monitor,
    util::{
        Proc, Scratch, Served, Stats, cpu_ns, line_channel, metric, num, pin_command, rss_bytes,
        set_affinity, tail,
    },
};

pub struct Params {
    pub rounds: usize,
    /// Requests of each measured closed-loop load.
    pub requests: u64,
    /// Requests before the measured loads (the daemon's first look at a serving process).
    pub warmup: u64,
    /// The measured loads, one after the other in the same server: the goal's (one
    /// connection, server and client on one CPU), then unpinned with one connection (every
    /// request wakes the server from idle) and a few (it finds more than one ready).
    pub loads: Vec<Load>,
    /// The paced run: requests per second, connections, window.
    pub rate: f64,
    pub rate_connections: usize,
    pub rate_window: Duration,
    /// The memory runs: connection counts, total requests per second, window.
    pub memory_connections: Vec<usize>,
    pub memory_rate: f64,
    pub memory_window: Duration,
}

impl Params {
    pub fn new(quick: bool) -> Self {
        Self {
            rounds: if quick { 3 } else { 9 },
            requests: if quick { 30_000 } else { 60_000 },
            warmup: 2_000,
            loads: vec![
                Load {
                    connections: 1,
                    one_cpu: true,
                },
                Load {
                    connections: 1,
                    one_cpu: false,
                },
                Load {
                    connections: 8,
                    one_cpu: false,
                },
            ],
            rate: 5_000.0,
            rate_connections: 10,
            rate_window: Duration::from_secs(if quick { 10 } else { 60 }),
            memory_connections: vec![10, 10_000],
            memory_rate: 2_000.0,
            memory_window: Duration::from_secs(if quick { 10 } else { 60 }),
        }
    }
}

/// One closed-loop load: its keep-alive connections, and whether the server and the client
/// share one CPU.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Load {
    pub connections: usize,
    /// Server and client pinned to CPU 0: each request still takes the server through
    /// epoll_wait, a wakeup, read, write and two context switches, but the CPU never goes idle
    /// between them. Unpinned, the server's CPU waits halted for each request, and waking a halted
    /// vCPU swings its CPU per request by several µs from round to round on this VM.
    pub one_cpu: bool,
}

/// The CPU a one-CPU load runs on.
const LOAD_CPU: usize = 0;

impl Load {
    fn label(self) -> String {
        if self.one_cpu {
            format!("{}, server and client on CPU {LOAD_CPU}", self.connections)
        } else {
            self.connections.to_string()
        }
    }
}

/// The goal: at most this many ns of the server's CPU per request over monitor's default
/// programs.
const GOAL_NS: f64 = 1000.0;
/// The goal: daemon CPU at the paced rate, percent of one core.
const GOAL_CPU_PERCENT: f64 = 1.0;
/// The goal: RSS with the most connections at most this many times RSS with the fewest.
const GOAL_RSS_RATIO: f64 = 1.25;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Config {
    Alone,
    Monitor,
    Requests,
}

impl Config {
    const ALL: [Self; 3] = [Self::Alone, Self::Monitor, Self::Requests];

    fn label(self) -> &'static str {
        match self {
            Self::Alone => "nothing attached",
            Self::Monitor => {
                "monitor run --pid --programs syscalls,sched,faults (every family but requests)"
            }
            Self::Requests => {
                "**monitor run --pid** (default programs, the requests family among them)"
            }
        }
    }
}

/// One measured load: the server's CPU and the client's wall time, per request.
#[derive(Clone, Copy)]
struct Sample {
    server_ns: f64,
    client_ns: f64,
}

/// The daemon (requests family on) under a paced load.
pub struct Paced {
    pub connections: usize,
    pub rate: f64,
    pub secs: f64,
    pub cpu_percent: f64,
    pub rss_mib: f64,
    /// RSS once attached and warmed up, before the load.
    pub rss_before_mib: f64,
    /// Requests the client completed (warm-up included), the server answered, monitor counted.
    pub sent: u64,
    pub served: u64,
    pub counted: Option<f64>,
    pub lost: Option<f64>,
    pub server_ns: f64,
    pub client_latency_ns: f64,
    pub late: u64,
    pub connect_s: f64,
}

#[derive(Default)]
pub struct Requests {
    /// (config, load) -> round -> sample
    samples: BTreeMap<(Config, Load), BTreeMap<usize, Sample>>,
    pub notes: Vec<String>,
    pub rate: Option<Paced>,
    pub memory: Vec<Paced>,
}

/// `workload http-server` under the bench's comm; its stdin answers give the port and counts.
struct Server {
    served: Served,
    port: u16,
}

impl Server {
    fn start(scratch: &Scratch) -> anyhow::Result<Self> {
        let mut served = Served::start(scratch, &["http-server"])?;
        let port = served.run("status")?["port"]
            .as_u64()
            .context("http-server status without a port")? as u16;
        Ok(Self { served, port })
    }

    fn pid(&self) -> u32 {
        self.served.pid()
    }

    /// Requests answered so far.
    fn requests(&mut self) -> anyhow::Result<u64> {
        self.served.run("status")?["requests"]
            .as_u64()
            .context("http-server status without requests")
    }
}

fn load_args(port: u16, connections: usize, requests: u64, rate: Option<f64>) -> Vec<String> {
    let mut args = vec![
        "http-load".to_string(),
        format!("--port={port}"),
        format!("--connections={connections}"),
        format!("--requests={requests}"),
    ];
    args.extend(rate.map(|r| format!("--rate={r}")));
    args
}

/// A closed-loop `workload http-load` to its end (on `cpu` if given): its report.
fn load(
    scratch: &Scratch,
    port: u16,
    connections: usize,
    requests: u64,
    cpu: Option<usize>,
) -> anyhow::Result<Value> {
    let mut cmd = Command::new(&scratch.workload);
    if let Some(cpu) = cpu {
        pin_command(&mut cmd, cpu);
    }
    let out = cmd
        .args(load_args(port, connections, requests, None))
        .stdin(Stdio::null())
        .output()
        .context("running workload http-load")?;
    if !out.status.success() {
        bail!(
            "workload http-load failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the http-load report")
}

fn done(report: &Value) -> anyhow::Result<u64> {
    report["work"]["requests"]
        .as_u64()
        .context("http-load report without requests")
}

/// monitor with every program, the requests family among them (checked attached).
fn monitor_with_requests(scratch: &Scratch, pid: u32) -> anyhow::Result<Monitor> {
    let m = Monitor::start(scratch, pid, None)?;
    let body = m.metrics()?;
    if metric(&body, "monitor_ebpf_attached", &[("program", "requests")]) != Some(1.0) {
        bail!("monitor with its default programs did not attach the requests family");
    }
    Ok(m)
}

/// app_requests_total once every response is complete (a response is done after 1 s without a
/// write on its connection, or when the connection closes) and two reads agree.
fn counted(m: &Monitor) -> anyhow::Result<Option<f64>> {
    std::thread::sleep(Duration::from_millis(1500));
    let v = m.settled("app_requests_total", &[], Duration::from_millis(500))?;
    Ok(metric(&m.metrics()?, "app_requests_total", &[]).map(|_| v))
}

/// One configuration once: a fresh server, attach, warm up, the measured loads, detach.
fn run_config(
    scratch: &Scratch,
    p: &Params,
    config: Config,
    notes: &mut Vec<String>,
    round: usize,
) -> anyhow::Result<Vec<(Load, Sample)>> {
    let mut server = Server::start(scratch)?;
    let mut monitor = match config {
        Config::Alone => None,
        Config::Monitor => Some(Monitor::start_with(
            scratch,
            server.pid(),
            None,
            Some("syscalls,sched,faults"),
        )?),
        Config::Requests => Some(monitor_with_requests(scratch, server.pid())?),
    };
    let widest = p.loads.iter().map(|l| l.connections).max().unwrap_or(1);
    let mut sent = done(&load(scratch, server.port, widest, p.warmup, None)?)?;
    // The daemon's first look at a serving process (its OpenAPI fetch) is not in the figures.
    std::thread::sleep(Duration::from_millis(300));
    let mut out = vec![];
    for &l in &p.loads {
        let cpu = l.one_cpu.then_some(LOAD_CPU);
        set_affinity(server.pid(), cpu)?;
        let cpu0 = cpu_ns(server.pid())?;
        let report = load(scratch, server.port, l.connections, p.requests, cpu)?;
        let cpu1 = cpu_ns(server.pid())?;
        set_affinity(server.pid(), None)?;
        let n = done(&report)?;
        sent += n;
        out.push((
            l,
            Sample {
                server_ns: (cpu1 - cpu0) as f64 / n as f64,
                client_ns: report["ns_per_op"]
                    .as_f64()
                    .context("http-load report without ns_per_op")?,
            },
        ));
    }
    let served = server.requests()?;
    // With the family, the daemon reads the server's OpenAPI document twice: when it starts
    // (the server is listening) and at the server's first request.
    let fetches = if config == Config::Requests { 2 } else { 0 };
    if served != sent + fetches {
        notes.push(format!(
            "round {}, {}: the server answered {served} requests of {sent} sent (and {fetches} OpenAPI fetches expected)",
            round + 1,
            config.label()
        ));
    }
    if let Some(m) = &mut monitor {
        if let Some(status) = m.proc.exited() {
            bail!("monitor exited ({status}) while the HTTP loads ran");
        }
        if config == Config::Requests {
            let c = counted(m)?.unwrap_or(0.0);
            if c != sent as f64 {
                notes.push(format!(
                    "round {}: app_requests_total {c} of {sent} requests sent",
                    round + 1
                ));
            }
        }
    }
    if let Some(m) = monitor {
        m.stop();
    }
    server.served.finish();
    Ok(out)
}

/// A paced load against a fresh server watched by monitor with the requests family: the
/// daemon's CPU and RSS over the client's life.
fn paced(
    scratch: &Scratch,
    connections: usize,
    rate: f64,
    window: Duration,
) -> anyhow::Result<Paced> {
    let mut server = Server::start(scratch)?;
    let monitor = monitor_with_requests(scratch, server.pid())?;
    let mon = monitor.proc.pid();
    let warm = done(&load(scratch, server.port, 1, 100, None)?)?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_bytes(mon)?;
    let requests = (rate * window.as_secs_f64()).round() as u64;
    let log = scratch.path(&format!("http-load-{connections}.log"));
    let mut client = Proc::spawn(
        Command::new(&scratch.workload)
            .args(load_args(server.port, connections, requests, Some(rate)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?),
        "workload http-load",
    )?;
    let lines = line_channel(client.child().stdout.take().context("http-load stdout")?);
    let (cpu0, server0, t0) = (cpu_ns(mon)?, cpu_ns(server.pid())?, Instant::now());
    let mut rss = rss_before;
    let status = loop {
        if let Some(status) = client.exited() {
            break status;
        }
        rss = rss.max(rss_bytes(mon)?);
        if t0.elapsed() > window * 3 + Duration::from_secs(60) {
            bail!("workload http-load ({connections} connections) did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, server1) = (cpu_ns(mon)?, cpu_ns(server.pid())?);
    rss = rss.max(rss_bytes(mon)?);
    if !status.success() {
        bail!("workload http-load failed ({status}): {}", tail(&log, 5));
    }
    let line = lines
        .recv_timeout(Duration::from_secs(5))
        .context("no http-load report")?;
    let report: Value = serde_json::from_str(&line).context("parsing the http-load report")?;
    let n = done(&report)?;
    let counted = counted(&monitor)?;
    let body = monitor.metrics()?;
    let lost = metric(&body, "monitor_request_events_lost_total", &[]);
    let served = server.requests()?;
    let work = &report["work"];
    let paced = Paced {
        connections,
        rate,
        secs,
        cpu_percent: 100.0 * (cpu1 - cpu0) as f64 / 1e9 / secs,
        rss_mib: rss as f64 / 1048576.0,
        rss_before_mib: rss_before as f64 / 1048576.0,
        sent: warm + n,
        served,
        counted,
        lost,
        server_ns: (server1 - server0) as f64 / n.max(1) as f64,
        client_latency_ns: work["mean_latency_ns"].as_f64().unwrap_or(f64::NAN),
        late: work["late"].as_u64().unwrap_or(0),
        connect_s: work["connect_ns"].as_f64().unwrap_or(0.0) / 1e9,
    };
    monitor.stop();
    server.served.finish();
    Ok(paced)
}

pub fn measure(scratch: &Scratch, p: &Params) -> anyhow::Result<Requests> {
    let mut r = Requests::default();
    for round in 0..p.rounds {
        let mut order = Config::ALL.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        eprintln!("bench: requests round {}/{}", round + 1, p.rounds);
        for config in order {
            for (l, sample) in run_config(scratch, p, config, &mut r.notes, round)? {
                r.samples
                    .entry((config, l))
                    .or_default()
                    .insert(round, sample);
            }
        }
    }
    eprintln!(
        "bench: requests, {} requests/s for {} s",
        p.rate,
        p.rate_window.as_secs()
    );
    r.rate = Some(paced(scratch, p.rate_connections, p.rate, p.rate_window)?);
    for &connections in &p.memory_connections {
        eprintln!(
            "bench: requests, {connections} connections at {} requests/s in all for {} s",
            p.memory_rate,
            p.memory_window.as_secs()
        );
        r.memory
            .push(paced(scratch, connections, p.memory_rate, p.memory_window)?);
    }
    Ok(r)
}

/// Per-round figures of one configuration and their differences from another, same round.
struct Cell {
    server: Stats,
    client: Stats,
    /// Server ns per request over nothing attached.
    added: Stats,
    /// Client ns per request over nothing attached.
    client_added: Stats,
}

impl Requests {
    fn diff(&self, a: Config, b: Config, l: Load, f: fn(&Sample) -> f64) -> Option<Stats> {
        let a = self.samples.get(&(a, l))?;
        let b = self.samples.get(&(b, l))?;
        let d: Vec<f64> = a
            .iter()
            .filter_map(|(round, s)| Some(f(s) - f(b.get(round)?)))
            .collect();
        Stats::of(&d)
    }

    fn cell(&self, config: Config, l: Load) -> Option<Cell> {
        let s = self.samples.get(&(config, l))?;
        let values = |f: fn(&Sample) -> f64| s.values().map(f).collect::<Vec<_>>();
        Some(Cell {
            server: Stats::of(&values(|s| s.server_ns))?,
            client: Stats::of(&values(|s| s.client_ns))?,
            added: self.diff(config, Config::Alone, l, |s| s.server_ns)?,
            client_added: self.diff(config, Config::Alone, l, |s| s.client_ns)?,
        })
    }

    /// The goal figure: server ns per request, with the family minus without, same round.
    fn family(&self, l: Load) -> Option<Stats> {
        self.diff(Config::Requests, Config::Monitor, l, |s| s.server_ns)
    }

    /// (label, measured, met) rows for the Goals table.
    pub fn goals(&self, p: &Params) -> Vec<(String, String, Option<bool>)> {
        let mut rows = vec![];
        match p.loads.first().and_then(|&l| Some((l, self.family(l)?))) {
            Some((l, d)) => rows.push((
                format!(
                    "Requests family, per HTTP request (server CPU; keep-alive connections: {}): <= {GOAL_NS:.0} ns over monitor's other programs (Beyla publishes about 500 ns)",
                    l.label()
                ),
                format!("{:+.0} ns ({:+.0} .. {:+.0})", d.median, d.min, d.max),
                Some(d.median <= GOAL_NS),
            )),
            None => rows.push((
                "Requests family, per HTTP request".into(),
                "n/a (not measured)".into(),
                None,
            )),
        }
        for &l in p.loads.iter().skip(1) {
            if let Some(d) = self.family(l) {
                rows.push((
                    format!(
                        "Requests family, per HTTP request, keep-alive connections: {} (informational)",
                        l.label()
                    ),
                    format!("{:+.0} ns ({:+.0} .. {:+.0})", d.median, d.min, d.max),
                    None,
                ));
            }
        }
        if let Some(r) = &self.rate {
            rows.push((
                format!(
                    "Daemon CPU <= {GOAL_CPU_PERCENT} % of one core at {} requests/s, requests family on",
                    num(r.rate)
                ),
                format!("{:.3} %", r.cpu_percent),
                Some(r.cpu_percent <= GOAL_CPU_PERCENT),
            ));
            rows.push((
                format!(
                    "app_requests_total counts every request at {} requests/s",
                    num(r.rate)
                ),
                format!(
                    "{} of {} sent",
                    r.counted.map_or("none".into(), |c| format!("{c:.0}")),
                    r.sent
                ),
                Some(r.counted == Some(r.sent as f64)),
            ));
        }
        if let (Some(few), Some(many)) = (self.memory.first(), self.memory.last())
            && self.memory.len() > 1
        {
            rows.push((
                format!(
                    "Daemon RSS bounded whatever the connections: with {} keep-alive connections <= {GOAL_RSS_RATIO}x RSS with {}",
                    many.connections, few.connections
                ),
                format!(
                    "{:.1} MiB with {} -> {:.1} MiB with {} ({:.2}x)",
                    few.rss_mib,
                    few.connections,
                    many.rss_mib,
                    many.connections,
                    many.rss_mib / few.rss_mib
                ),
                Some(many.rss_mib <= few.rss_mib * GOAL_RSS_RATIO),
            ));
        }
        rows
    }

    /// The Method line.
    pub fn method(&self, p: &Params) -> String {
        format!(
            "- **Requests family (6).** `workload http-server`: a minimal HTTP/1.1 keep-alive server on 127.0.0.1, one \
             thread, level-triggered epoll, read(2) of each request and one write(2) of a 40-byte `200 OK` (body `ok`); \
             the load is `workload http-load` in a separate process (not a target), one request outstanding per \
             connection. Each configuration (nothing attached; `monitor run --pid SERVER --programs syscalls,sched,faults`: \
             every family but requests; `monitor run --pid SERVER`, the default programs, requests among them) runs in a fresh server: attach and \
             wait as in 1-3, {} warm-up requests, 300 ms, then closed-loop loads of {} requests, one after the other, \
             on {} keep-alive connection(s). The goal's load has the server and the client pinned to one CPU \
             (sched_setaffinity, the server's threads only for that load): every request still takes the server \
             through epoll_wait, a wakeup, read, write and two context switches, but its CPU never goes idle; \
             unpinned, the server's vCPU halts while it waits and waking it swings the server's CPU per request by \
             several µs from round to round (the one-connection rows below show it), more than the goal. Server CPU per request = growth of the server's summed \
             `/proc/PID/task/*/schedstat` run time over the load / requests; client ns per request = the load's wall \
             time / requests. {} rounds, order reversed on every other round; \"added\" figures are medians over rounds \
             of the same-round difference (min .. max shown); the family's figure is (default programs) - (every \
             family but requests). With the family, `app_requests_total` (summed over series, read 1.5 s after the load when two \
             reads 500 ms apart agree) is checked against the requests sent in every round. Paced runs (a fresh server \
             and monitor with the family each; 100 warm-up requests and 1 s first): {} requests/s on {} connections \
             for {} s; then {} requests/s in all on {} connections for {} s each, every connection in turn (each \
             sends a request every connections/rate seconds). Daemon CPU = growth of its schedstat run time over the \
             client's life / wall time; RSS = max of `/proc/PID/statm` resident, read every 250 ms (the client's \
             connects included). Both processes raise RLIMIT_NOFILE for their connections. The server answers 2 \
             requests more than the client sent when the family is on: the daemon's OpenAPI fetches (at its start and at \
             the server's first request), which monitor does not count.\n",
            p.warmup,
            p.requests,
            p.loads
                .iter()
                .map(|l| l.label())
                .collect::<Vec<_>>()
                .join("; "),
            p.rounds,
            num(p.rate),
            p.rate_connections,
            p.rate_window.as_secs(),
            num(p.memory_rate),
            p.memory_connections
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            p.memory_window.as_secs(),
        )
    }

    pub fn table(&self, p: &Params) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### 6. Requests family: a minimal keep-alive HTTP server, {} requests per load\n",
            p.requests
        );
        s.push_str(
            "| configuration | connections | server CPU ns per request, median | min - max | ns added vs nothing, median | added min .. max | client ns per request, median | client ns added |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for &l in &p.loads {
            for config in Config::ALL {
                match self.cell(config, l) {
                    Some(c) => {
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {} - {} | {:+.0} | {:+.0} .. {:+.0} | {} | {:+.0} |",
                            config.label(),
                            l.label(),
                            num(c.server.median),
                            num(c.server.min),
                            num(c.server.max),
                            c.added.median,
                            c.added.min,
                            c.added.max,
                            num(c.client.median),
                            c.client_added.median,
                        );
                    }
                    None => {
                        let _ =
                            writeln!(s, "| {} | {} | n/a | | | | | |", config.label(), l.label());
                    }
                }
            }
        }
        let family: Vec<String> = p
            .loads
            .iter()
            .filter_map(|&l| {
                let d = self.family(l)?;
                let client = self.diff(Config::Requests, Config::Monitor, l, |s| s.client_ns)?;
                Some(format!(
                    "{} connection(s): **{:+.0} ns** of server CPU ({:+.0} .. {:+.0}), {:+.0} ns of client wall time",
                    l.label(),
                    d.median, d.min, d.max, client.median
                ))
            })
            .collect();
        let _ = writeln!(
            s,
            "\nThe requests family's own cost per request (default programs - every family but requests, same round, medians): {}.\n",
            family.join("; ")
        );
        if !self.notes.is_empty() {
            let _ = writeln!(s, "Checks: {}.\n", self.notes.join("; "));
        }
        s.push_str(
            "Paced, monitor with the requests family (daemon CPU and RSS over the client's life):\n\n\
             | load | window | daemon CPU % of one core | daemon RSS MiB, max (before the load) | requests sent / answered / counted by monitor | events lost | server CPU ns per request | client mean latency us | sent > 1 ms late | connect time |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in self.rate.iter().chain(&self.memory) {
            let _ = writeln!(
                s,
                "| {} requests/s on {} connections | {:.0} s | {:.3} | {:.1} ({:.1}) | {} / {} / {} | {} | {} | {:.0} | {} | {:.2} s |",
                num(r.rate),
                r.connections,
                r.secs,
                r.cpu_percent,
                r.rss_mib,
                r.rss_before_mib,
                r.sent,
                r.served,
                r.counted.map_or("none".into(), |c| format!("{c:.0}")),
                r.lost.map_or("n/a".into(), |l| format!("{l:.0}")),
                num(r.server_ns),
                r.client_latency_ns / 1000.0,
                r.late,
                r.connect_s,
            );
        }
        s.push('\n');
        s
    }
}
