//! Section 4: the daemon's own RSS and CPU at default cadences with 1, 10 and 100 target
//! processes and at a low and a very high event rate, next to Debian's
//! prometheus-process-exporter watching the same processes; /metrics scrape latency.
use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    tracers::Monitor,
    util::{COMM, Proc, Scratch, Stats, agent, cpu_ns, free_port, http_get, metric, rss_bytes},
};

pub struct Params {
    /// Window for the first (one target, low rate) configuration.
    pub first: Duration,
    /// Window for the others.
    pub rest: Duration,
    pub scrapes: usize,
    /// Only the one-target configurations (low and very high event rate).
    pub quick: bool,
}

/// RSS (max over the window) and CPU over the window.
#[derive(Clone, Copy)]
pub struct Usage {
    pub rss_mib: f64,
    pub cpu_percent: f64,
}

pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub n: usize,
}

pub struct Row {
    pub label: String,
    pub targets: usize,
    pub secs: f64,
    pub daemon: Usage,
    pub processes_seen: f64,
    pub syscalls_per_s: Option<f64>,
    pub exporter: Result<Usage, String>,
    pub exporter_procs: Option<f64>,
    pub latency: Option<(Latency, Result<Latency, String>)>,
}

pub struct Exporter {
    proc: Proc,
    url: String,
}

impl Exporter {
    pub fn start(scratch: &Scratch) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = scratch.path(&format!("process-exporter-{port}.log"));
        let mut proc = Proc::spawn(
            Command::new("prometheus-process-exporter")
                .args([
                    "-procnames",
                    COMM,
                    "-web.listen-address",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?),
            "prometheus-process-exporter",
        )?;
        let url = format!("http://127.0.0.1:{port}/metrics");
        let a = agent();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if proc.exited().is_some() {
                anyhow::bail!(
                    "prometheus-process-exporter exited: {}",
                    super::util::tail(&log, 3)
                );
            }
            // Serving is enough: its name-group series appear only once a process matches.
            if http_get(&a, &url).is_ok() {
                return Ok(Self { proc, url });
            }
            if Instant::now() > deadline {
                anyhow::bail!("prometheus-process-exporter did not serve metrics within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

fn latency(url: &str, n: usize) -> anyhow::Result<Latency> {
    // One keep-alive connection, as Prometheus keeps.
    let a = agent();
    http_get(&a, url)?;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let body = http_get(&a, url)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(body);
    }
    Ok(Latency {
        p50_ms: Stats::quantile(&ms, 0.5),
        p99_ms: Stats::quantile(&ms, 0.99),
        max_ms: Stats::quantile(&ms, 1.0),
        n,
    })
}

/// A headless Chromium showing the daemon's live page (it polls /api/live at the sampling
/// cadence and redraws), for as long as it lives.
struct PageOpen {
    proc: Proc,
}

impl PageOpen {
    fn start(scratch: &Scratch, port: u16) -> anyhow::Result<Self> {
        let profile = scratch.path(&format!("chromium-{port}"));
        let proc = Proc::spawn(
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(format!("http://127.0.0.1:{port}/"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "chromium (Debian package chromium, installed by `cargo xtask setup --test-deps`)",
        )?;
        Ok(Self { proc })
    }
}

pub fn measure(scratch: &Scratch, p: &Params) -> anyhow::Result<Vec<Row>> {
    // (label, target processes, workload, scrape latency measured, live page open)
    let configs: [(&str, usize, String, bool, bool); 5] = [
        (
            "1 target process, low event rate (workload mixed: every 10 ms one open/close, one page fault, 100 getppid)",
            1,
            "mixed".into(),
            true,
            false,
        ),
        (
            "1 target process, low event rate, the live page open in headless Chromium",
            1,
            "mixed".into(),
            false,
            true,
        ),
        (
            "10 target processes (workload tree: 9 children waking every 100 ms)",
            10,
            "tree --children 9".into(),
            false,
            false,
        ),
        (
            "100 target processes (workload tree: 99 children waking every 100 ms)",
            100,
            "tree --children 99".into(),
            true,
            false,
        ),
        (
            "1 target process, very high event rate (workload burst: a getppid storm on one CPU)",
            1,
            "burst --idle-ms 0".into(),
            false,
            false,
        ),
    ];
    let mut rows = vec![];
    for (i, (label, targets, args, scrape, page)) in configs.into_iter().enumerate() {
        if p.quick && targets > 1 {
            continue;
        }
        let span = if i == 0 { p.first } else { p.rest };
        eprintln!("bench: footprint, {label}, {} s", span.as_secs());
        let millis = (span + Duration::from_secs(40)).as_millis().to_string();
        let mut argv: Vec<&str> = args.split_whitespace().collect();
        argv.extend(["--millis", &millis]);
        let mut workload = Proc::spawn(
            Command::new(&scratch.workload)
                .args(&argv)
                .stdout(Stdio::null()),
            "the workload",
        )?;
        // Let a tree fork its children before the daemons look.
        std::thread::sleep(Duration::from_millis(300));
        let monitor = Monitor::start(scratch, workload.pid(), None)?;
        let exporter = Exporter::start(scratch).map_err(|e| format!("{e:#}"));
        let mut page_open = if page {
            Some(PageOpen::start(scratch, monitor.port)?)
        } else {
            None
        };
        // The page's first load (its files and the kept points) falls in the settling time:
        // what the window measures is the page left open.
        std::thread::sleep(Duration::from_secs(if page { 5 } else { 2 }));
        let a = agent();
        let mon_pid = monitor.proc.pid();
        let exp_pid = exporter.as_ref().map(Exporter::pid).ok();
        let cpu0 = cpu_ns(mon_pid)?;
        let exp_cpu0 = exp_pid.map(cpu_ns).transpose().ok().flatten();
        // (when, app_syscalls_total) of each scrape that has the series (the daemon's first
        // kernel sample comes one cadence after it starts).
        let mut syscall_points: Vec<(Instant, f64)> = vec![];
        let t0 = Instant::now();
        let (mut rss, mut exp_rss) = (0u64, 0u64);
        let mut next_scrape = t0;
        let mut last_scrape_text = String::new();
        let mut exp_text = String::new();
        while t0.elapsed() < span {
            if Instant::now() >= next_scrape {
                // Both are scraped every 5 s, as a Prometheus would scrape them.
                last_scrape_text = http_get(&a, &monitor.url()).context("scraping monitor")?;
                if let Some(v) = metric(&last_scrape_text, "app_syscalls_total", &[]) {
                    syscall_points.push((Instant::now(), v));
                }
                if let Ok(e) = &exporter {
                    exp_text = http_get(&a, e.url()).unwrap_or_default();
                }
                next_scrape += Duration::from_secs(5);
            }
            rss = rss.max(rss_bytes(mon_pid)?);
            if let Some(pid) = exp_pid {
                exp_rss = exp_rss.max(rss_bytes(pid).unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu1 = cpu_ns(mon_pid)?;
        let exp_cpu1 = exp_pid.map(cpu_ns).transpose().ok().flatten();
        if workload.exited().is_some() {
            anyhow::bail!("the {args} workload ended before the footprint window did");
        }
        if let Some(page) = page_open.as_mut() {
            if let Some(status) = page.proc.exited() {
                anyhow::bail!("chromium showing the live page exited during the window ({status})");
            }
            page.proc.stop();
        }
        let syscalls_per_s = match (syscall_points.first(), syscall_points.last()) {
            (Some((t0, a)), Some((t1, b))) if t1 > t0 => {
                Some((b - a) / t1.duration_since(*t0).as_secs_f64())
            }
            _ => None,
        };
        let latency = if scrape {
            eprintln!("bench: {} scrapes of each /metrics", p.scrapes);
            let ours = latency(&monitor.url(), p.scrapes).context("scraping monitor")?;
            let theirs = match &exporter {
                Ok(e) => latency(e.url(), p.scrapes).map_err(|e| format!("{e:#}")),
                Err(e) => Err(e.clone()),
            };
            Some((ours, theirs))
        } else {
            None
        };
        let processes_seen = metric(&last_scrape_text, "app_processes", &[]).unwrap_or(0.0);
        rows.push(Row {
            label: label.to_string(),
            targets,
            secs,
            daemon: Usage {
                rss_mib: rss as f64 / 1048576.0,
                cpu_percent: 100.0 * (cpu1 - cpu0) as f64 / 1e9 / secs,
            },
            processes_seen,
            syscalls_per_s,
            exporter: match (&exporter, exp_cpu0, exp_cpu1) {
                (Ok(_), Some(c0), Some(c1)) => Ok(Usage {
                    rss_mib: exp_rss as f64 / 1048576.0,
                    cpu_percent: 100.0 * (c1 - c0) as f64 / 1e9 / secs,
                }),
                (Err(e), _, _) => Err(e.clone()),
                _ => Err("could not read its /proc".into()),
            },
            exporter_procs: metric(
                &exp_text,
                "namedprocess_namegroup_num_procs",
                &[("groupname", COMM)],
            ),
            latency,
        });
        monitor.stop();
        if let Ok(mut e) = exporter {
            e.stop();
        }
        workload.stop_with(libc::SIGKILL);
    }
    Ok(rows)
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("### 4. Daemon footprint at default cadences (monitor) next to prometheus-process-exporter (same processes, `-procnames` on the workload's comm)\n\n");
    s.push_str("| workload | processes (monitor / exporter saw) | target syscalls/s | window | monitor RSS MiB (max) | monitor CPU % of one core | exporter RSS MiB (max) | exporter CPU % |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (er, ec) = match &r.exporter {
            Ok(u) => (format!("{:.1}", u.rss_mib), format!("{:.3}", u.cpu_percent)),
            Err(e) => (format!("n/a ({e})"), String::new()),
        };
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} | {:.0} s | {:.1} | {:.3} | {er} | {ec} |",
            r.label,
            r.processes_seen,
            r.exporter_procs.map_or("n/a".into(), |v| format!("{v}")),
            r.syscalls_per_s.map_or("n/a".into(), |v| format!("{v:.0}")),
            r.secs,
            r.daemon.rss_mib,
            r.daemon.cpu_percent,
        );
    }
    s.push_str("\n`/metrics` scrape latency, one keep-alive connection, back to back:\n\n| workload | scrapes | monitor p50 ms | monitor p99 ms | monitor max ms | exporter p50 ms | exporter p99 ms | exporter max ms |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        if let Some((m, e)) = &r.latency {
            let exp = match e {
                Ok(e) => format!("{:.3} | {:.3} | {:.3}", e.p50_ms, e.p99_ms, e.max_ms),
                Err(e) => format!("n/a ({e}) | | "),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {exp} |",
                r.label, m.n, m.p50_ms, m.p99_ms, m.max_ms
            );
        }
    }
    s.push('\n');
    s
}
