//! Sections 1-3: ns added per operation in a target and in a non-target, monitor against the
//! bpftrace program a user would otherwise run and against empty programs (the floor).
//!
//! A round runs every configuration once, each in fresh `workload serve` processes: P (the
//! pid the tracer is pointed at) and, where asked, Q (a process it is not pointed at). Rounds
//! alternate the order of configurations (A B C ... C B A ...), so drift on this shared machine
//! spreads over all of them; each added figure is the median over rounds of (config - nothing
//! attached) in the same round.
use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;

use super::{
    tracers::{self, BpfStatsOn, Bpftrace, Floor, Monitor, ProgRun, programs},
    util::{Scratch, Served, Stats, num},
};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Storm {
    Syscalls,
    Files,
    Faults,
    Pingpong,
    Tags,
}

impl Storm {
    fn line(self, p: &Params) -> String {
        match self {
            Self::Syscalls => format!("syscalls --count {}", p.syscalls),
            Self::Files => format!("files --opens {}", p.opens),
            Self::Faults => format!(
                "faults --pages {} --rounds {}",
                p.fault_pages, p.fault_rounds
            ),
            Self::Pingpong => match &p.cpus {
                Some(c) => format!("pingpong --rounds {} --cpus {c}", p.pingpong),
                None => format!("pingpong --rounds {}", p.pingpong),
            },
            Self::Tags => format!("tags --count {}", p.tags),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Syscalls => "getppid call",
            Self::Files => "open+close pair",
            Self::Faults => "page fault",
            Self::Pingpong => "pipe round trip (2 context switches)",
            Self::Tags => "explicit tag (write(-1, marker))",
        }
    }

    const ALL: [Self; 5] = [
        Self::Syscalls,
        Self::Files,
        Self::Faults,
        Self::Pingpong,
        Self::Tags,
    ];
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Config {
    Alone,
    Monitor,
    MonitorNoRequests,
    MonitorFds,
    MonitorSched,
    BtSyscalls,
    BtEmpty,
    FloorTp,
    FloorRaw,
    BtFiles,
    BtFaults,
    BtSched,
    BtAll,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Role {
    Target,
    Other,
}

impl Config {
    const ALL: [Self; 13] = [
        Self::Alone,
        Self::Monitor,
        Self::MonitorNoRequests,
        Self::MonitorFds,
        Self::MonitorSched,
        Self::BtSyscalls,
        Self::BtEmpty,
        Self::FloorTp,
        Self::FloorRaw,
        Self::BtFiles,
        Self::BtFaults,
        Self::BtSched,
        Self::BtAll,
    ];

    fn storms(self, role: Role) -> &'static [Storm] {
        match (self, role) {
            (Self::Alone, Role::Target) => &Storm::ALL,
            (Self::Monitor, Role::Target) => &[
                Storm::Syscalls,
                Storm::Files,
                Storm::Faults,
                Storm::Pingpong,
                Storm::Tags,
            ],
            // What the requests family adds: per syscall of the target, per context switch.
            (Self::MonitorNoRequests, Role::Target) => &[Storm::Syscalls, Storm::Pingpong],
            (Self::Monitor, Role::Other) => &[Storm::Syscalls, Storm::Pingpong],
            (Self::MonitorFds, Role::Target) => &[Storm::Files],
            (Self::MonitorSched, Role::Target) => &[Storm::Pingpong],
            (Self::BtSyscalls, _) => &[Storm::Syscalls],
            (Self::BtEmpty | Self::FloorTp | Self::FloorRaw, Role::Target) => &[Storm::Syscalls],
            (Self::BtFiles, Role::Target) => &[Storm::Files],
            (Self::BtFaults, Role::Target) => &[Storm::Faults],
            (Self::BtSched, _) => &[Storm::Pingpong],
            (Self::BtAll, Role::Target) => &[Storm::Syscalls, Storm::Files],
            _ => &[],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Alone => "nothing attached",
            Self::Monitor => "monitor run --pid",
            Self::MonitorNoRequests => {
                "monitor run --pid --programs syscalls,sched,faults (every family but requests)"
            }
            Self::MonitorFds => "monitor run --pid --programs fds (fd tracking alone: sys_exit)",
            Self::MonitorSched => {
                "monitor run --pid --programs sched (on-CPU accounting alone: sched_switch)"
            }
            Self::BtSyscalls => "bpftrace: count per syscall id + sum latency, pid filter",
            Self::BtEmpty => "bpftrace: empty probes on raw_syscalls sys_enter/sys_exit (return 1)",
            Self::FloorTp => {
                "floor: empty program returning 0, classic tracepoints sys_enter/sys_exit"
            }
            Self::FloorRaw => {
                "floor: empty program returning 0, raw tracepoints sys_enter/sys_exit"
            }
            Self::BtFiles => {
                "bpftrace: fd opens, failed opens by errno, closes (sys_exit of every fd syscall monitor tracks), pid filter"
            }
            Self::BtFaults => "bpftrace: page_fault_user count, pid filter",
            Self::BtSched => "bpftrace: sched_switch on-CPU time (start per tid) + switches",
            Self::BtAll => {
                "bpftrace: monitor's whole syscall job (count + latency per id, and the fd program above)"
            }
        }
    }
}

pub struct Params {
    pub rounds: usize,
    pub syscalls: u64,
    pub opens: u64,
    pub fault_pages: u64,
    pub fault_rounds: u64,
    pub pingpong: u64,
    /// Explicit tag writes (the requests family reads each one).
    pub tags: u64,
    pub cpus: Option<String>,
    /// Run the bpf_stats pass.
    pub profile: bool,
}

/// Everything sections 1-3 measured.
#[derive(Default)]
pub struct Overhead {
    /// (config, role, storm) -> per round ns/op
    samples: BTreeMap<(Config, Role, Storm), BTreeMap<usize, f64>>,
    /// Why a peer has no figures.
    errors: BTreeMap<Config, String>,
    /// Checks that bpftrace saw the whole storm.
    pub notes: Vec<String>,
    /// Kernel run time per program, per tracer (bpf_stats pass).
    pub profile: Vec<(Config, Vec<ProgRun>)>,
    pub profile_error: Option<String>,
}

enum Attached {
    Nothing,
    Monitor(Monitor),
    Bpftrace(Bpftrace),
    /// Held for its Drop, which detaches the programs.
    Floor {
        _programs: Floor,
    },
}

impl Attached {
    fn pid(&self) -> u32 {
        match self {
            Self::Monitor(m) => m.proc.pid(),
            Self::Bpftrace(b) => b.proc.pid(),
            Self::Nothing | Self::Floor { .. } => std::process::id(),
        }
    }
}

/// Attaches `config` to `pid`. The outer error is monitor's (abort); the inner one a peer's.
fn attach(scratch: &Scratch, config: Config, pid: u32) -> anyhow::Result<Result<Attached, String>> {
    let peer = |r: anyhow::Result<Attached>| r.map_err(|e| format!("{e:#}"));
    Ok(match config {
        Config::Alone => Ok(Attached::Nothing),
        Config::Monitor => Ok(Attached::Monitor(Monitor::start(scratch, pid, None)?)),
        Config::MonitorNoRequests => Ok(Attached::Monitor(Monitor::start_with(
            scratch,
            pid,
            None,
            Some("syscalls,sched,faults"),
        )?)),
        Config::MonitorFds => Ok(Attached::Monitor(Monitor::start_with(
            scratch,
            pid,
            None,
            Some("fds"),
        )?)),
        Config::MonitorSched => Ok(Attached::Monitor(Monitor::start_with(
            scratch,
            pid,
            None,
            Some("sched"),
        )?)),
        Config::FloorTp => peer(Floor::attach(false).map(|f| Attached::Floor { _programs: f })),
        Config::FloorRaw => peer(Floor::attach(true).map(|f| Attached::Floor { _programs: f })),
        Config::BtSyscalls
        | Config::BtEmpty
        | Config::BtFiles
        | Config::BtFaults
        | Config::BtSched
        | Config::BtAll => {
            let program = match config {
                Config::BtSyscalls => programs::syscalls(pid),
                Config::BtEmpty => programs::empty(),
                Config::BtFiles => programs::files(pid),
                Config::BtFaults => programs::faults(pid),
                Config::BtAll => programs::all(pid),
                _ => programs::sched(pid),
            };
            peer(Bpftrace::start(scratch, &format!("{config:?}"), &program).map(Attached::Bpftrace))
        }
    })
}

/// What one configuration's run gave.
struct ConfigRun {
    /// ns per op of each storm, by the role of the process that ran it.
    results: Vec<(Role, Storm, f64)>,
    /// Kernel run time of the tracer's programs, when profiling.
    runs: Option<Vec<ProgRun>>,
    /// What the tracer printed when stopped (bpftrace's maps).
    printed: String,
}

/// One configuration once: fresh P (and Q), attach, storms, detach. The outer error is
/// monitor's (abort); the inner one a peer's (n/a).
fn run_config(
    scratch: &Scratch,
    p: &Params,
    config: Config,
    profile: bool,
) -> anyhow::Result<Result<ConfigRun, String>> {
    let mut target = Served::serve(scratch)?;
    let mut other = if config.storms(Role::Other).is_empty() {
        None
    } else {
        Some(Served::serve(scratch)?)
    };
    let mut attached = match attach(scratch, config, target.pid())? {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let mut out = vec![];
    let mut work = || -> anyhow::Result<()> {
        for (role, proc) in [
            (Role::Target, Some(&mut target)),
            (Role::Other, other.as_mut()),
        ] {
            let Some(proc) = proc else { continue };
            for &storm in config.storms(role) {
                let report = proc.run(&storm.line(p))?;
                let ns = report["ns_per_op"]
                    .as_f64()
                    .context("the workload report has no ns_per_op")?;
                out.push((role, storm, ns));
            }
        }
        Ok(())
    };
    let worked = work();
    let runs = if profile {
        Some(tracers::prog_runs(attached.pid()).unwrap_or_default())
    } else {
        None
    };
    if let Attached::Monitor(m) = &mut attached
        && let Some(status) = m.proc.exited()
    {
        anyhow::bail!("monitor exited ({status}) while the storms ran");
    }
    let printed = match attached {
        Attached::Monitor(m) => {
            m.stop();
            String::new()
        }
        Attached::Bpftrace(b) => b.stop(),
        Attached::Nothing | Attached::Floor { .. } => String::new(),
    };
    target.finish();
    if let Some(q) = other {
        q.finish();
    }
    worked?;
    Ok(Ok(ConfigRun {
        results: out,
        runs,
        printed,
    }))
}

pub fn measure(scratch: &Scratch, p: &Params) -> anyhow::Result<Overhead> {
    let mut o = Overhead::default();
    for round in 0..p.rounds {
        let mut order = Config::ALL.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        eprintln!("bench: overhead round {}/{}", round + 1, p.rounds);
        for config in order {
            match run_config(scratch, p, config, false)? {
                Ok(ConfigRun {
                    results, printed, ..
                }) => {
                    for (role, storm, ns) in results {
                        o.samples
                            .entry((config, role, storm))
                            .or_default()
                            .insert(round, ns);
                    }
                    if config == Config::BtSyscalls {
                        let seen = tracers::bpftrace_map(&printed, "@count", "110").unwrap_or(0);
                        if seen != p.syscalls {
                            o.notes.push(format!(
                                "round {}: bpftrace counted {seen} getppid calls of {} in the target",
                                round + 1,
                                p.syscalls
                            ));
                        }
                    }
                }
                Err(e) => {
                    eprintln!("bench: {} n/a: {e}", config.label());
                    o.errors.entry(config).or_insert(e);
                }
            }
        }
    }
    // Profiling pass: kernel time per program, with bpf_stats on (it adds two clock reads per
    // program run, so these runs are kept out of the timing figures above).
    if !p.profile {
        o.profile_error = Some("left out by --quick".into());
        return Ok(o);
    }
    eprintln!("bench: kernel programs' run time (bpf_stats_enabled pass)");
    match BpfStatsOn::enable() {
        Ok(_on) => {
            for config in Config::ALL.into_iter().skip(1) {
                if let Ok(ConfigRun {
                    runs: Some(runs), ..
                }) = run_config(scratch, p, config, true)?
                {
                    o.profile.push((config, runs));
                }
            }
        }
        Err(e) => o.profile_error = Some(format!("{e:#}")),
    }
    Ok(o)
}

/// Per-round ns/op and per-round added ns (against nothing attached, same round).
pub struct Cell {
    pub raw: Stats,
    pub added: Stats,
}

impl Overhead {
    pub fn cell(&self, config: Config, role: Role, storm: Storm) -> Result<Cell, String> {
        if let Some(e) = self.errors.get(&config)
            && !self.samples.contains_key(&(config, role, storm))
        {
            return Err(e.clone());
        }
        let samples = self
            .samples
            .get(&(config, role, storm))
            .ok_or("not measured")?;
        let base = self
            .samples
            .get(&(Config::Alone, Role::Target, storm))
            .ok_or("no baseline")?;
        let raw: Vec<f64> = samples.values().copied().collect();
        let added: Vec<f64> = samples
            .iter()
            .filter_map(|(r, v)| Some(v - base.get(r)?))
            .collect();
        Ok(Cell {
            raw: Stats::of(&raw).ok_or("no samples")?,
            added: Stats::of(&added).ok_or("no paired samples")?,
        })
    }

    /// Median added ns of a over b.
    pub fn ratio(&self, a: (Config, Role, Storm), b: (Config, Role, Storm)) -> Result<f64, String> {
        let x = self.cell(a.0, a.1, a.2)?.added.median;
        let y = self.cell(b.0, b.1, b.2)?.added.median;
        if y <= 0.0 {
            return Err(format!(
                "{} adds {} ns: no overhead to compare with",
                b.0.label(),
                num(y)
            ));
        }
        Ok(x / y)
    }

    pub fn tables(&self, p: &Params) -> String {
        let mut s = String::new();
        let row = |s: &mut String, label: &str, c: Result<Cell, String>| match c {
            Ok(c) => {
                let _ = writeln!(
                    s,
                    "| {label} | {} | {} - {} | {:+.1} | {:+.1} .. {:+.1} |",
                    num(c.raw.median),
                    num(c.raw.min),
                    num(c.raw.max),
                    c.added.median,
                    c.added.min,
                    c.added.max
                );
            }
            Err(e) => {
                let _ = writeln!(s, "| {label} | n/a ({e}) | | | |");
            }
        };
        let header = "| configuration | ns per op, median | min - max | ns added, median | added min .. max |\n|---|---|---|---|---|\n";
        let _ = writeln!(
            s,
            "### 1-2. Syscall storm: {} raw getppid() calls, ns per call\n",
            p.syscalls
        );
        s.push_str(header);
        for (label, config, role) in [
            ("nothing attached", Config::Alone, Role::Target),
            (
                "**monitor**, in the target (default programs, the requests family among them)",
                Config::Monitor,
                Role::Target,
            ),
            (
                "monitor --programs syscalls,sched,faults, in the target (every family but requests)",
                Config::MonitorNoRequests,
                Role::Target,
            ),
            (Config::BtSyscalls.label(), Config::BtSyscalls, Role::Target),
            (Config::FloorTp.label(), Config::FloorTp, Role::Target),
            (Config::FloorRaw.label(), Config::FloorRaw, Role::Target),
            (Config::BtEmpty.label(), Config::BtEmpty, Role::Target),
            (Config::BtAll.label(), Config::BtAll, Role::Target),
            (
                "**monitor**, NOT the target (watching another process)",
                Config::Monitor,
                Role::Other,
            ),
            (
                "bpftrace count + latency, pid filter not matching",
                Config::BtSyscalls,
                Role::Other,
            ),
        ] {
            row(&mut s, label, self.cell(config, role, Storm::Syscalls));
        }
        let r = |v: Result<f64, String>| {
            v.map_or_else(|e| format!("n/a ({e})"), |x| format!("{x:.2}x"))
        };
        let sc = Storm::Syscalls;
        let _ = writeln!(
            s,
            "\nRatios of ns added (medians): monitor / bpftrace in the target **{}**; monitor / floor (classic tracepoints) {}; \
             monitor / floor (raw tracepoints) {}; not a target: monitor / bpftrace (pid filter not matching) **{}**, \
             monitor not-a-target / bpftrace in its target {}.\n",
            r(self.ratio(
                (Config::Monitor, Role::Target, sc),
                (Config::BtSyscalls, Role::Target, sc)
            )),
            r(self.ratio(
                (Config::Monitor, Role::Target, sc),
                (Config::FloorTp, Role::Target, sc)
            )),
            r(self.ratio(
                (Config::Monitor, Role::Target, sc),
                (Config::FloorRaw, Role::Target, sc)
            )),
            r(self.ratio(
                (Config::Monitor, Role::Other, sc),
                (Config::BtSyscalls, Role::Other, sc)
            )),
            r(self.ratio(
                (Config::Monitor, Role::Other, sc),
                (Config::BtSyscalls, Role::Target, sc)
            )),
        );
        for (storm, peer, title) in [
            (
                Storm::Files,
                Config::BtFiles,
                format!(
                    "open+close storm: {} opens and closes of /dev/null, ns per pair",
                    p.opens
                ),
            ),
            (
                Storm::Faults,
                Config::BtFaults,
                format!(
                    "page-fault storm: {} rounds of {} fresh anonymous pages, ns per fault",
                    p.fault_rounds, p.fault_pages
                ),
            ),
            (
                Storm::Pingpong,
                Config::BtSched,
                format!(
                    "context-switch storm: {} pipe round trips between two threads{}, ns per round trip (two context switches, each switching a target thread out)",
                    p.pingpong,
                    p.cpus
                        .as_ref()
                        .map(|c| format!(" pinned to CPUs {c}"))
                        .unwrap_or_default()
                ),
            ),
        ] {
            let whole_job = storm == Storm::Files;
            // monitor with only the programs this job needs, where it has such a mode.
            let job_only = match storm {
                Storm::Files => Some(Config::MonitorFds),
                Storm::Pingpong => Some(Config::MonitorSched),
                _ => None,
            };
            let _ = writeln!(s, "### 3. {title}\n");
            s.push_str(header);
            row(
                &mut s,
                "nothing attached",
                self.cell(Config::Alone, Role::Target, storm),
            );
            row(
                &mut s,
                "**monitor**, in the target (default programs: syscalls, fds, sched, faults, requests)",
                self.cell(Config::Monitor, Role::Target, storm),
            );
            if storm == Storm::Pingpong {
                row(
                    &mut s,
                    "monitor --programs syscalls,sched,faults, in the target (every family but requests: what the family's per-switch slice record costs)",
                    self.cell(Config::MonitorNoRequests, Role::Target, storm),
                );
            }
            if let Some(c) = job_only {
                row(
                    &mut s,
                    &format!("**{}**", c.label()),
                    self.cell(c, Role::Target, storm),
                );
            }
            row(&mut s, peer.label(), self.cell(peer, Role::Target, storm));
            if whole_job {
                row(
                    &mut s,
                    Config::BtAll.label(),
                    self.cell(Config::BtAll, Role::Target, storm),
                );
            }
            if storm == Storm::Pingpong {
                row(
                    &mut s,
                    "**monitor**, NOT the target",
                    self.cell(Config::Monitor, Role::Other, storm),
                );
                row(
                    &mut s,
                    "bpftrace sched_switch program, pid filter not matching",
                    self.cell(peer, Role::Other, storm),
                );
            }
            let _ = write!(s, "\nRatios of ns added per {}:", storm.unit());
            if let Some(c) = job_only {
                let _ = write!(
                    s,
                    " monitor with only this job's programs / bpftrace **{}**;",
                    r(self.ratio((c, Role::Target, storm), (peer, Role::Target, storm)))
                );
            }
            let _ = write!(
                s,
                " all of monitor / bpftrace {}",
                r(self.ratio(
                    (Config::Monitor, Role::Target, storm),
                    (peer, Role::Target, storm)
                ))
            );
            if whole_job {
                let _ = write!(
                    s,
                    "; monitor / bpftrace doing monitor's whole syscall job {} (monitor's figure \
                     includes counting and timing both syscalls, which the fd-only program does not do)",
                    r(self.ratio(
                        (Config::Monitor, Role::Target, storm),
                        (Config::BtAll, Role::Target, storm)
                    ))
                );
            }
            s.push_str(".\n\n");
        }
        let _ = writeln!(
            s,
            "### 3. Explicit tags: {} writes of `monitor:begin bench` / `monitor:end` to fd -1, ns per tag\n",
            p.tags
        );
        s.push_str(header);
        row(
            &mut s,
            "nothing attached (the write fails with EBADF)",
            self.cell(Config::Alone, Role::Target, Storm::Tags),
        );
        row(
            &mut s,
            "**monitor**, in the target (the requests family sends each tag to the daemon)",
            self.cell(Config::Monitor, Role::Target, Storm::Tags),
        );
        s.push('\n');
        if !self.notes.is_empty() {
            let _ = writeln!(s, "Checks: {}.\n", self.notes.join("; "));
        }
        s.push_str(
            "### Kernel programs: ns per run (separate pass with `kernel.bpf_stats_enabled=1`)\n\n",
        );
        if let Some(e) = &self.profile_error {
            let _ = writeln!(s, "n/a ({e})\n");
        } else {
            s.push_str("| tracer | program | runs | ns per run |\n|---|---|---|---|\n");
            for (config, runs) in &self.profile {
                // Programs that never ran (bpftrace's probes on other fd syscalls) say nothing.
                for run in runs.iter().filter(|r| r.run_cnt > 0) {
                    let per = if run.run_cnt > 0 {
                        format!("{:.1}", run.run_time_ns as f64 / run.run_cnt as f64)
                    } else {
                        "-".into()
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {per} |",
                        config.label(),
                        run.name,
                        run.run_cnt
                    );
                }
            }
            s.push('\n');
        }
        s
    }
}
