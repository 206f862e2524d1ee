//! Section 5: monitor's figures against the kernel's own accounting (getrusage, schedstat, the
//! workload's own counts), `strace -f`, process-exporter and pidstat, on the same workloads.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;

use super::{
    footprint::Exporter,
    tracers::Monitor,
    util::{
        COMM, Proc, Scratch, Served, agent, cpu_ns, http_get, line_channel, metric, status_ctxt,
    },
};

/// Cadences for the accuracy runs of `monitor run`, so counters settle quickly.
const FAST: &str = "[cadence]\ncpu_memory = \"100ms\"\nvms = \"100ms\"\nfds_threads = \"100ms\"\ndiscovery = \"100ms\"\n";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Q {
    Cpu,
    Faults,
    Ctx,
    Getppid,
    Opens,
    Closes,
    OpenErrors,
}

impl Q {
    fn label(self) -> &'static str {
        match self {
            Self::Cpu => "on-CPU seconds",
            Self::Faults => "page faults (minor + major)",
            Self::Ctx => "context switches",
            Self::Getppid => "getppid calls",
            Self::Opens => "fd opens",
            Self::Closes => "fd closes",
            Self::OpenErrors => "failed opens",
        }
    }

    /// Allowed relative error for the goal (CPU 1 %, faults 2 %, counts exact).
    fn tolerance(self) -> Option<f64> {
        match self {
            Self::Cpu => Some(0.01),
            Self::Faults => Some(0.02),
            Self::Getppid | Self::Opens | Self::Closes | Self::OpenErrors => Some(0.0),
            Self::Ctx => None,
        }
    }
}

/// A figure next to the truth of the run it came from.
#[derive(Clone, Copy)]
struct Fig {
    value: f64,
    truth: f64,
}

impl Fig {
    fn err(self) -> f64 {
        if self.truth == 0.0 {
            if self.value == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (self.value - self.truth) / self.truth
        }
    }
}

struct Workload {
    name: &'static str,
    args: String,
    zero: String,
    /// A smaller run for strace, which stops the process at every syscall.
    strace_args: String,
    quantities: &'static [Q],
}

/// Each source's figure for one quantity, or why it has none.
type Figures = BTreeMap<&'static str, Result<Fig, String>>;

#[derive(Default)]
pub struct Accuracy {
    /// (workload, quantity) -> source -> figure or why not
    rows: BTreeMap<(usize, Q), Figures>,
    names: Vec<(String, String)>,
    strace: Vec<String>,
}

const SOURCES: [&str; 5] = [
    "monitor stat",
    "monitor run /metrics",
    "process-exporter",
    "pidstat",
    "strace -f",
];

fn u(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The kernel's accounting in a workload report.
fn truth(w: &Value, q: Q) -> f64 {
    let both = |f: &str| u(&w["rusage_self"][f]) + u(&w["rusage_children"][f]);
    match q {
        Q::Cpu => u(&w["oncpu_truth_ns"]) / 1e9,
        Q::Faults => both("minflt") + both("majflt"),
        Q::Ctx => both("nvcsw") + both("nivcsw"),
        Q::Getppid => {
            if w["mode"] == "syscalls" {
                u(&w["work"]["syscalls"])
            } else if w["mode"] == "fork" {
                u(&w["work"]["child_syscalls"])
                    * w["work"]["children"].as_array().map_or(0, Vec::len) as f64
            } else {
                0.0
            }
        }
        Q::Opens => u(&w["work"]["opens"]),
        Q::Closes => u(&w["work"]["closes"]),
        Q::OpenErrors => u(&w["work"]["failed_opens"]),
    }
}

pub fn measure(scratch: &Scratch, quick: bool) -> anyhow::Result<Accuracy> {
    let pp = if super::util::cpus() >= 2 {
        " --cpus 0,1"
    } else {
        ""
    };
    let workloads = [
        Workload {
            name: "spin",
            args: format!("spin --millis {}", if quick { 800 } else { 2000 }),
            zero: "spin --millis 0".into(),
            strace_args: "spin --millis 200".into(),
            quantities: &[Q::Cpu, Q::Faults, Q::Ctx],
        },
        Workload {
            name: "syscalls",
            args: format!(
                "syscalls --count {}",
                if quick { 1_000_000 } else { 3_000_000 }
            ),
            zero: "syscalls --count 0".into(),
            strace_args: "syscalls --count 20000".into(),
            quantities: &[Q::Getppid, Q::Cpu],
        },
        Workload {
            name: "files",
            args: format!(
                "files --opens {} --fails 100",
                if quick { 5_000 } else { 20_000 }
            ),
            zero: "files --opens 0 --fails 0".into(),
            strace_args: "files --opens 2000 --fails 100".into(),
            quantities: &[Q::Opens, Q::Closes, Q::OpenErrors],
        },
        Workload {
            name: "faults",
            args: format!(
                "faults --pages 5000 --rounds {}",
                if quick { 20 } else { 60 }
            ),
            zero: "faults --pages 1 --rounds 0".into(),
            strace_args: "faults --pages 5000 --rounds 2".into(),
            quantities: &[Q::Faults, Q::Cpu],
        },
        Workload {
            name: "pingpong",
            args: format!(
                "pingpong --rounds {}{pp}",
                if quick { 10_000 } else { 40_000 }
            ),
            zero: "pingpong --rounds 0".into(),
            strace_args: format!("pingpong --rounds 2000{pp}"),
            quantities: &[Q::Ctx, Q::Cpu],
        },
        Workload {
            name: "fork",
            args: "fork --children 4 --millis 300 --pages 500".into(),
            zero: "fork --children 0 --millis 0".into(),
            strace_args: "fork --children 4 --millis 100 --pages 500".into(),
            quantities: &[Q::Cpu, Q::Faults, Q::Getppid],
        },
    ];
    let mut acc = Accuracy::default();
    let section = std::time::Instant::now();
    for (i, w) in workloads.iter().enumerate() {
        eprintln!(
            "bench: accuracy, workload {} ({:.0} s into the section)",
            w.args,
            section.elapsed().as_secs_f64()
        );
        acc.names.push((w.name.to_string(), w.args.clone()));
        // Names are indexed by workload; rows of a skipped one are simply absent.
        if quick && !["spin", "syscalls", "files", "fork"].contains(&w.name) {
            continue;
        }
        let mut put = |q: Q, source: &'static str, v: Result<Fig, String>| {
            acc.rows.entry((i, q)).or_default().insert(source, v);
        };
        // monitor stat; strace -f and monitor stat, twice each, on a smaller run of the command.
        let (m, rep) = stat(scratch, &w.args)?;
        let zero = if w.quantities.contains(&Q::Opens) {
            Some(stat(scratch, &w.zero)?.0)
        } else {
            None
        };
        for &q in w.quantities {
            let value = match q {
                Q::Cpu => u(&m["oncpu_seconds"]),
                Q::Faults => u(&m["page_faults"]["total"]),
                Q::Ctx => {
                    u(&m["context_switches"]["voluntary"])
                        + u(&m["context_switches"]["involuntary"])
                }
                Q::Getppid => u(&m["syscalls"]["getppid"]),
                Q::Opens | Q::Closes | Q::OpenErrors => {
                    let key = match q {
                        Q::Opens => "fd_opens",
                        Q::Closes => "fd_closes",
                        _ => "fd_open_errors",
                    };
                    u(&m[key]) - zero.as_ref().map_or(0.0, |z| u(&z[key]))
                }
            };
            put(
                q,
                "monitor stat",
                Ok(Fig {
                    value,
                    truth: truth(&rep, q),
                }),
            );
        }
        let small = stat(scratch, &w.strace_args)?.0;
        let small_again = stat(scratch, &w.strace_args)?.0;
        match strace(scratch, &w.strace_args)
            .and_then(|a| Ok((a, strace(scratch, &w.strace_args)?.0)))
        {
            Ok(((counts, rep2), again)) => {
                if w.quantities.contains(&Q::Getppid) {
                    let calls = counts.get("getppid").map_or(0.0, |c| c.0 as f64);
                    put(
                        Q::Getppid,
                        "strace -f",
                        Ok(Fig {
                            value: calls,
                            truth: truth(&rep2, Q::Getppid),
                        }),
                    );
                }
                acc.strace.push(compare_with_strace(
                    &w.strace_args,
                    [&small, &small_again],
                    &counts,
                    &again,
                ));
            }
            Err(e) => acc
                .strace
                .push(format!("`{}`: strace n/a ({e:#})", w.strace_args)),
        }
        // --quick: the side-by-side run for the workloads that cover every quantity once.
        if !quick || ["spin", "files", "fork"].contains(&w.name) {
            live(scratch, w, &mut put)?;
        }
    }
    Ok(acc)
}

/// Syscalls that never return: strace -c counts a call when it returns, so it has none of them.
const NEVER_RETURN: [&str; 2] = ["exit", "exit_group"];

/// Every syscall name: monitor stat's count against strace's, from separate runs of the same
/// command. Each ran twice; a name whose count differs between one tool's two runs (thread
/// stacks freed lazily, a join that waits on a futex or finds the thread gone) is run-to-run
/// variation of the workload, shown but not held against either tool.
fn compare_with_strace(
    args: &str,
    m: [&Value; 2],
    counts: &StraceCounts,
    again: &StraceCounts,
) -> String {
    let ours = m[0]["syscalls"].as_object().cloned().unwrap_or_default();
    let ours_again = m[1]["syscalls"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<&String> = counts
        .keys()
        .chain(again.keys())
        .chain(ours.keys())
        .chain(ours_again.keys())
        .collect();
    names.sort();
    names.dedup();
    names.retain(|n| !NEVER_RETURN.contains(&n.as_str()));
    let (mut diffs, mut varies) = (vec![], vec![]);
    for n in &names {
        let s1 = counts.get(*n).map_or(0, |c| c.0);
        let s2 = again.get(*n).map_or(0, |c| c.0);
        let o = ours.get(*n).and_then(Value::as_u64).unwrap_or(0);
        let o2 = ours_again.get(*n).and_then(Value::as_u64).unwrap_or(0);
        if s1 != s2 || o != o2 {
            varies.push(format!("{n}: monitor {o} then {o2}, strace {s1} then {s2}"));
        } else if o != s1 {
            diffs.push(format!("{n}: monitor {o}, strace {s1}"));
        }
    }
    let compared = names.len() - varies.len();
    let mut line = format!(
        "`{args}`: {} of {compared} syscall names with equal counts",
        compared - diffs.len()
    );
    if !diffs.is_empty() {
        line += &format!(" (**differ**: {})", diffs.join(", "));
    }
    if !varies.is_empty() {
        line += &format!("; varies between runs, not compared: {}", varies.join(", "));
    }
    let restarted: Vec<String> = counts
        .iter()
        .filter(|(_, c)| c.1 > 0)
        .map(|(n, c)| format!("{n} x{}", c.1))
        .collect();
    if !restarted.is_empty() {
        line += &format!(
            "; entries strace interrupted (ERESTART*), left out: {}",
            restarted.join(", ")
        );
    }
    line
}

/// `monitor stat --json -- workload ARGS`: (monitor's report, the workload's report).
/// Set for every run of the workload here: with one malloc arena, a run's syscalls do not depend
/// on which of two threads makes its arena first (glibc's aligned-heap hint goes to one of them,
/// and the other trims its mapping with one munmap more or less).
const ONE_ARENA: (&str, &str) = ("MALLOC_ARENA_MAX", "1");

fn stat(scratch: &Scratch, args: &str) -> anyhow::Result<(Value, Value)> {
    let out = Command::new(&scratch.monitor)
        .env(ONE_ARENA.0, ONE_ARENA.1)
        .args(["stat", "--json", "--"])
        .arg(&scratch.workload)
        .args(args.split_whitespace())
        .stderr(Stdio::null())
        .output()
        .context("running monitor stat")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with('{'));
    let w: Value = serde_json::from_str(lines.next().context("monitor stat: no workload report")?)?;
    let m: Value =
        serde_json::from_str(lines.next().with_context(|| {
            format!("monitor stat -- {args} printed no report ({})", out.status)
        })?)?;
    Ok((m, w))
}

/// Calls per syscall name under strace, and how many of them ended in ERESTART* and were
/// entered again (not counted in the calls).
type StraceCounts = BTreeMap<String, (u64, u64)>;

/// `strace -f` on a run of the workload, its log counted per syscall name. The log, not `-c`:
/// under ptrace a blocking call such as wait4 is interrupted by the tracer's own stops, ends in
/// ERESTARTSYS and is entered again; `-c` counts both entries, though the process without strace
/// makes the call once. Those interrupted entries are left out here.
fn strace(scratch: &Scratch, args: &str) -> anyhow::Result<(StraceCounts, Value)> {
    let file = scratch.path("strace.txt");
    let out = Command::new("strace")
        .env(ONE_ARENA.0, ONE_ARENA.1)
        .args(["-f", "-qq", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&scratch.workload)
        .args(args.split_whitespace())
        .stderr(Stdio::null())
        .output()
        .context("running strace")?;
    let rep: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .context("no workload report under strace")?,
    )?;
    Ok((count_strace_log(&fs::read_to_string(&file)?), rep))
}

fn count_strace_log(text: &str) -> StraceCounts {
    let mut counts: StraceCounts = BTreeMap::new();
    for line in text.lines() {
        // "PID name(args) = ret", "PID name(args <unfinished ...>", "PID <... name resumed>...) = ret"
        let Some((_, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let (name, done) = if let Some(r) = rest.strip_prefix("<... ") {
            (r.split(' ').next().unwrap_or(""), true)
        } else if rest.ends_with("<unfinished ...>") {
            continue;
        } else {
            (rest.split('(').next().unwrap_or(""), rest.contains('('))
        };
        if !done || name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let e = counts.entry(name.to_string()).or_default();
        if rest.contains("= ? ERESTART") {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    counts
}

/// pidstat -u -r -w on one pid, one-second reports, read as they come.
struct Pidstat {
    proc: Proc,
    lines: mpsc::Receiver<String>,
}

impl Pidstat {
    fn start(pid: u32) -> anyhow::Result<Self> {
        let mut proc = Proc::spawn(
            Command::new("pidstat")
                .args(["-h", "-u", "-r", "-w", "-p", &pid.to_string(), "1"])
                .env("LC_ALL", "C")
                .env("S_TIME_FORMAT", "ISO")
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
            "pidstat",
        )?;
        let stdout = proc.child().stdout.take().context("pidstat stdout")?;
        let lines = line_channel(stdout);
        Ok(Self { proc, lines })
    }

    /// Sums over the one-second reports: (CPU s, faults, context switches).
    fn finish(mut self) -> anyhow::Result<(f64, f64, f64)> {
        self.proc.stop_with(libc::SIGINT);
        let mut header: Vec<String> = vec![];
        let (mut cpu, mut faults, mut ctx) = (0.0, 0.0, 0.0);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with('#') {
                header = f[1..].iter().map(|s| s.to_string()).collect();
                continue;
            }
            if header.is_empty() || f.len() != header.len() || line.starts_with("Average") {
                continue;
            }
            let col = |name: &str| -> f64 {
                header
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| f[i].parse().ok())
                    .unwrap_or(0.0)
            };
            cpu += col("%CPU") / 100.0;
            faults += col("minflt/s") + col("majflt/s");
            ctx += col("cswch/s") + col("nvcswch/s");
        }
        anyhow::ensure!(!header.is_empty(), "pidstat printed no report");
        Ok((cpu, faults, ctx))
    }
}

fn stat_faults(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let f: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
        .split_whitespace()
        .collect();
    Ok(f[7].parse::<f64>()? + f[9].parse::<f64>()?)
}

/// A `workload serve` watched at once by `monitor run`, process-exporter and pidstat: first the
/// zero-work variant, then the work. Counts are (after work - after zero) - (after zero -
/// before), so the report's own /proc reads cancel; CPU and faults are totals.
fn live(
    scratch: &Scratch,
    w: &Workload,
    put: &mut impl FnMut(Q, &'static str, Result<Fig, String>),
) -> anyhow::Result<()> {
    // The exporter first, so it sees the process start and counts all of it.
    let exporter = Exporter::start(scratch).map_err(|e| format!("{e:#}"));
    let mut p = Served::serve(scratch)?;
    let pid = p.pid();
    let monitor = Monitor::start(scratch, pid, Some(FAST))?;
    let pidstat = Pidstat::start(pid).map_err(|e| format!("{e:#}"));
    let a = agent();
    let gap = Duration::from_millis(250);
    let read = |q: Q| -> anyhow::Result<f64> {
        match q {
            Q::Cpu => monitor.settled("app_oncpu_seconds_total", &[], gap),
            Q::Faults => monitor.settled("app_page_faults_total", &[], gap),
            Q::Ctx => monitor.settled("app_context_switches_total", &[], gap),
            Q::Getppid => monitor.settled("app_syscalls_total", &[("syscall", "getppid")], gap),
            Q::Opens => monitor.settled("app_fd_opens_total", &[], gap),
            Q::Closes => monitor.settled("app_fd_closes_total", &[], gap),
            Q::OpenErrors => monitor.settled("app_fd_open_errors_total", &[], gap),
        }
    };
    let exp = |q: Q| -> Option<f64> {
        let text = http_get(&a, exporter.as_ref().ok()?.url()).ok()?;
        let g = [("groupname", COMM)];
        match q {
            Q::Cpu => metric(&text, "namedprocess_namegroup_cpu_seconds_total", &g),
            Q::Faults => Some(
                metric(&text, "namedprocess_namegroup_minor_page_faults_total", &g)?
                    + metric(&text, "namedprocess_namegroup_major_page_faults_total", &g)?,
            ),
            Q::Ctx => metric(&text, "namedprocess_namegroup_context_switches_total", &g),
            _ => None,
        }
    };
    std::thread::sleep(Duration::from_millis(1200));
    let counts = [Q::Getppid, Q::Opens, Q::Closes, Q::OpenErrors];
    let mut r0 = BTreeMap::new();
    for &q in w.quantities {
        r0.insert(q, read(q)?);
    }
    let exp_ctx0 = exp(Q::Ctx);
    let (cpu0, faults0, ctx0) = (
        cpu_ns(pid)? as f64 / 1e9,
        stat_faults(pid)?,
        status_ctxt(pid)? as f64,
    );
    p.run(&w.zero)?;
    let mut r1 = BTreeMap::new();
    for &q in w.quantities.iter().filter(|q| counts.contains(q)) {
        r1.insert(q, read(q)?);
    }
    let rep = p.run(&w.args)?;
    std::thread::sleep(Duration::from_millis(1300));
    for &q in w.quantities {
        let r2 = read(q)?;
        let t = truth(&rep, q);
        let fig = if counts.contains(&q) {
            Fig {
                value: (r2 - r1[&q]) - (r1[&q] - r0[&q]),
                truth: t,
            }
        } else if q == Q::Ctx {
            // Switches are events: monitor sees those after it attached.
            Fig {
                value: r2 - r0[&q],
                truth: t - ctx0,
            }
        } else {
            Fig {
                value: r2,
                truth: t,
            }
        };
        put(q, "monitor run /metrics", Ok(fig));
        if !counts.contains(&q) {
            let e = match (&exporter, exp(q)) {
                (Err(e), _) => Err(e.clone()),
                (Ok(_), None) => Err("no such series".into()),
                (Ok(_), Some(v)) if q == Q::Ctx => Ok(Fig {
                    value: v - exp_ctx0.unwrap_or(0.0),
                    truth: t - ctx0,
                }),
                (Ok(_), Some(v)) => Ok(Fig { value: v, truth: t }),
            };
            put(q, "process-exporter", e);
        }
    }
    let stats = match pidstat {
        Ok(ps) => ps.finish().map_err(|e| format!("{e:#}")),
        Err(e) => Err(e),
    };
    for &q in w.quantities.iter().filter(|q| !counts.contains(q)) {
        let t = truth(&rep, q);
        let v = stats.clone().map(|(cpu, faults, ctx)| match q {
            Q::Cpu => Fig {
                value: cpu,
                truth: t - cpu0,
            },
            Q::Faults => Fig {
                value: faults,
                truth: t - faults0,
            },
            _ => Fig {
                value: ctx,
                truth: t - ctx0,
            },
        });
        put(q, "pidstat", v);
    }
    monitor.stop();
    p.finish();
    if let Ok(mut e) = exporter {
        e.stop();
    }
    Ok(())
}

impl Accuracy {
    /// (quantity, worst relative error of monitor's figures, all within its tolerance)
    fn worst(&self) -> BTreeMap<Q, f64> {
        let mut out: BTreeMap<Q, f64> = BTreeMap::new();
        for ((_, q), sources) in &self.rows {
            for (source, fig) in sources {
                if source.starts_with("monitor")
                    && let Ok(f) = fig
                {
                    let e = out.entry(*q).or_default();
                    *e = e.max(f.err().abs());
                }
            }
        }
        out
    }

    pub fn goals(&self) -> Vec<(String, String, bool)> {
        let worst = self.worst();
        let mut out = vec![];
        let group = |qs: &[Q]| -> Option<(f64, f64)> {
            let errs: Vec<f64> = qs.iter().filter_map(|q| worst.get(q).copied()).collect();
            let tol = qs[0].tolerance()?;
            (!errs.is_empty()).then(|| (errs.into_iter().fold(0.0, f64::max), tol))
        };
        for (label, qs) in [
            (
                "Accuracy: on-CPU time within 1 % (monitor stat and run, worst case)",
                &[Q::Cpu][..],
            ),
            (
                "Accuracy: page faults within 2 % (worst case)",
                &[Q::Faults][..],
            ),
            (
                "Accuracy: fd and syscall counts exact (worst case)",
                &[Q::Getppid, Q::Opens, Q::Closes, Q::OpenErrors][..],
            ),
        ] {
            if let Some((err, tol)) = group(qs) {
                out.push((
                    label.to_string(),
                    format!("{:.3} % off", err * 100.0),
                    err <= tol + 1e-12,
                ));
            }
        }
        let exact_strace = self
            .strace
            .iter()
            .all(|l| !l.contains("**differ**") && !l.contains("n/a"));
        out.push((
            "Accuracy: per-syscall counts equal to strace -f".into(),
            if exact_strace {
                "all equal (section 5)".into()
            } else {
                "see section 5".into()
            },
            exact_strace,
        ));
        out
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("### 5. Accuracy against the kernel's own accounting\n\n");
        s.push_str("Each cell: the figure, and its error against the truth of the run it came from (getrusage / schedstat / the workload's own counts). The truth column shows the `monitor stat` run's truth.\n\n");
        let _ = writeln!(
            s,
            "| workload | quantity | truth | {} |",
            SOURCES.join(" | ")
        );
        let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(SOURCES.len()));
        for ((i, q), sources) in &self.rows {
            let truth = sources
                .get("monitor stat")
                .and_then(|f| f.as_ref().ok())
                .map_or(String::new(), |f| fmt(f.truth));
            let cells: Vec<String> = SOURCES
                .iter()
                .map(|src| match sources.get(src) {
                    None => "-".into(),
                    Some(Err(e)) => format!("n/a ({e})"),
                    Some(Ok(f)) => {
                        let e = f.err();
                        if e.is_infinite() {
                            format!("{} (truth 0)", fmt(f.value))
                        } else {
                            format!("{} ({:+.2} %)", fmt(f.value), e * 100.0)
                        }
                    }
                })
                .collect();
            let _ = writeln!(
                s,
                "| `{}` | {} | {truth} | {} |",
                self.names[*i].1,
                q.label(),
                cells.join(" | ")
            );
        }
        s.push_str("\nPer-syscall counts, `monitor stat --json` against `strace -f` (its log counted per name; separate runs of the same command; each tool ran twice, and names whose count differs between one tool's two runs are listed apart; exit and exit_group are left out, as they never return; calls that strace's own ptrace stops interrupted with ERESTART* and that were entered again count once, as the process makes them without strace):\n\n");
        for l in &self.strace {
            let _ = writeln!(s, "- {l}");
        }
        s.push('\n');
        s
    }
}

fn fmt(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() < 100.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_log_counts_restarted_calls_once() {
        let log = "\
10 getppid() = 9
10 wait4(11,  <unfinished ...>
11 exit_group(0) = ?
10 <... wait4 resumed>0x7ffc, 0, NULL) = ? ERESTARTSYS (To be restarted if SA_RESTART is set)
10 --- SIGCHLD {si_signo=SIGCHLD} ---
10 wait4(11,  <unfinished ...>
10 <... wait4 resumed>[{WIFEXITED(s)}], 0, NULL) = 11
10 openat(AT_FDCWD, \"/nope\", O_RDONLY) = -1 ENOENT (No such file or directory)
10 +++ exited with 0 +++
";
        let c = count_strace_log(log);
        assert_eq!(c["getppid"], (1, 0));
        assert_eq!(c["wait4"], (1, 1));
        assert_eq!(c["openat"], (1, 0));
        assert_eq!(c["exit_group"], (1, 0));
        assert_eq!(c.len(), 4, "{c:?}");
    }
}
