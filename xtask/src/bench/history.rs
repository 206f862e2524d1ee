//! Section 7: the history store. One synthetic history, with the series a monitored target has
//! and their texture (CPU % as the daemon computes it from nanosecond counters, RSS in pages,
//! integer and float counters, constants), is imported into monitor's store and turned into
//! Prometheus TSDB blocks by promtool, from the same file, in the same run: bytes per sample on
//! disk for both, and monitor's import rate.
use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::util::{Scratch, num};

pub struct Params {
    /// Days of history at the cadence.
    pub days: u64,
    pub cadence: Duration,
}

impl Params {
    pub fn new(quick: bool) -> Self {
        Self {
            days: if quick { 1 } else { 3 },
            cadence: Duration::from_secs(5),
        }
    }
}

/// The goal: at most this many bytes per raw sample in monitor's store.
const GOAL_BYTES_PER_SAMPLE: f64 = 4.0;
/// The goal: a million samples imported in at most this many seconds.
const GOAL_IMPORT_SECS_PER_MILLION: f64 = 10.0;
/// The goal: a report over 90 days of one-minute history in at most this many seconds.
const GOAL_REPORT_SECS: f64 = 5.0;

pub struct History {
    pub series: usize,
    pub samples: u64,
    pub file_mib: f64,
    pub import_secs: f64,
    /// Bytes of the raw chunks per raw sample.
    pub chunk_bytes_per_sample: f64,
    /// The store's file (and WAL) per raw sample: aggregates, series table and free pages in.
    pub file_bytes_per_sample: f64,
    pub store_bytes: u64,
    /// Bytes per row of the minute and hour aggregates.
    pub minute_bytes_per_row: f64,
    pub hour_bytes_per_row: f64,
    /// Prometheus' blocks (chunks and index) per sample, and how long promtool took.
    pub prometheus_bytes_per_sample: Option<f64>,
    pub promtool_secs: Option<f64>,
    pub promtool_note: Option<String>,
    /// `monitor report` over 90 days of one-minute history of one target: its samples and time.
    pub report_samples: usize,
    pub report_secs: f64,
}

/// A small deterministic generator (xorshift): the history is the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One series being generated: its exposition name and its points.
struct Gen {
    family: &'static str,
    kind: &'static str,
    series: String,
    lines: String,
}

/// The history: `days` ending now at `cadence`. Returns (text, series, samples).
fn generate(days: u64, cadence: Duration) -> (String, usize, u64) {
    let step_ms = cadence.as_millis() as i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let n = (days * 86_400_000 / step_ms as u64) as i64;
    let start = (now - n * step_ms) / step_ms * step_ms;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = |g: &str| format!("{{target=\"trading-api\"{g}}}");
    let mut gens: Vec<Gen> = Vec::new();
    let mut add = |family: &'static str, kind: &'static str, name: &str, labels: &str| {
        gens.push(Gen {
            family,
            kind,
            series: format!("{name}{}", t(labels)),
            lines: String::new(),
        });
        gens.len() - 1
    };
    let up = add("app_up", "gauge", "app_up", "");
    let procs = add("app_processes", "gauge", "app_processes", "");
    let cpu = add(
        "app_cpu_usage_percent",
        "gauge",
        "app_cpu_usage_percent",
        "",
    );
    let cpu_avg = add(
        "app_cpu_usage_percent_avg_1m",
        "gauge",
        "app_cpu_usage_percent_avg_1m",
        "",
    );
    let cpu_peak = add(
        "app_cpu_usage_percent_peak",
        "gauge",
        "app_cpu_usage_percent_peak",
        "",
    );
    let limit = add("app_cpu_limit_cores", "gauge", "app_cpu_limit_cores", "");
    let mem_limit = add(
        "app_memory_limit_bytes",
        "gauge",
        "app_memory_limit_bytes",
        "",
    );
    let rss = add(
        "app_resident_memory_bytes",
        "gauge",
        "app_resident_memory_bytes",
        "",
    );
    let rss_mb = add("app_memory_usage_mb", "gauge", "app_memory_usage_mb", "");
    let mem_pct = add(
        "app_memory_usage_percent",
        "gauge",
        "app_memory_usage_percent",
        "",
    );
    let vms = add(
        "app_virtual_memory_bytes",
        "gauge",
        "app_virtual_memory_bytes",
        "",
    );
    let fds = add("app_open_fds", "gauge", "app_open_fds", "");
    let threads = add("app_threads", "gauge", "app_threads", "");
    let oncpu = add(
        "app_oncpu_seconds",
        "counter",
        "app_oncpu_seconds_total",
        "",
    );
    let faults = add("app_page_faults", "counter", "app_page_faults_total", "");
    let vol = add(
        "app_context_switches",
        "counter",
        "app_context_switches_total",
        ",kind=\"voluntary\"",
    );
    let invol = add(
        "app_context_switches",
        "counter",
        "app_context_switches_total",
        ",kind=\"involuntary\"",
    );
    let opens = add("app_fd_opens", "counter", "app_fd_opens_total", "");
    let closes = add("app_fd_closes", "counter", "app_fd_closes_total", "");
    const SYSCALLS: [(&str, f64); 12] = [
        ("read", 40.0),
        ("write", 35.0),
        ("epoll_wait", 30.0),
        ("recvfrom", 20.0),
        ("sendto", 18.0),
        ("futex", 15.0),
        ("openat", 2.0),
        ("close", 2.0),
        ("mmap", 0.5),
        ("munmap", 0.5),
        ("getpid", 0.2),
        ("clock_nanosleep", 1.0),
    ];
    let sys: Vec<usize> = SYSCALLS
        .iter()
        .map(|(s, _)| {
            add(
                "app_syscalls",
                "counter",
                "app_syscalls_total",
                &format!(",syscall=\"{s}\""),
            )
        })
        .collect();
    let sys_secs: Vec<usize> = SYSCALLS
        .iter()
        .map(|(s, _)| {
            add(
                "app_syscall_seconds",
                "counter",
                "app_syscall_seconds_total",
                &format!(",syscall=\"{s}\""),
            )
        })
        .collect();
    const ROUTES: [(&str, f64, f64); 4] = [
        ("GET /api/orders/{order_id}", 10.0, 0.002),
        ("POST /api/orders", 4.0, 0.004),
        ("GET /api/analysis/{symbol}", 1.0, 0.05),
        ("GET /health", 2.0, 0.0001),
    ];
    let routes: Vec<(usize, usize)> = ROUTES
        .iter()
        .map(|(r, _, _)| {
            let (method, route) = r.split_once(' ').unwrap();
            let l = format!(",method=\"{method}\",route=\"{route}\"");
            (
                add(
                    "app_requests",
                    "counter",
                    "app_requests_total",
                    &format!("{l},status=\"200\""),
                ),
                add(
                    "app_request_cpu_seconds",
                    "counter",
                    "app_request_cpu_seconds_total",
                    &l,
                ),
            )
        })
        .collect();

    let mut totals = vec![0.0f64; gens.len()];
    let mut oncpu_ns: u64 = 0;
    let mut rss_pages: f64 = 60_000.0;
    let mut open_fds = 40.0;
    let mut recent: Vec<f64> = Vec::new();
    let limit_bytes = 4.0 * 1024.0 * 1024.0 * 1024.0;
    for i in 0..n {
        let at = start + i * step_ms;
        let hour = (at / 3_600_000 % 24) as f64;
        // Load: a trading day (busy 8:00-17:00 UTC), noise on top.
        let load = 0.2 + 0.8 * (((hour - 8.0) / 9.0 * std::f64::consts::PI).sin()).max(0.0);
        let load = load * (0.8 + 0.4 * rng.next());
        let ran = (load * 0.6 * step_ms as f64 * 1e6 * (0.9 + 0.2 * rng.next())) as u64;
        oncpu_ns += ran;
        let cpu_now = 100.0 * ran as f64 / (step_ms as f64 * 1e6);
        recent.push(cpu_now);
        if recent.len() > 60 {
            recent.remove(0);
        }
        if rng.next() < 0.05 {
            rss_pages += (rng.next() * 40.0 - 18.0).round();
        }
        if rng.next() < 0.02 {
            open_fds += (rng.next() * 4.0 - 2.0).round();
            open_fds = open_fds.max(10.0);
        }
        let rss_bytes = rss_pages * 4096.0;
        let mut set = |g: usize, v: f64| {
            let series = &mut gens[g];
            series.lines.push_str(&series.series);
            series.lines.push(' ');
            let mut s = String::new();
            if v.fract() == 0.0 && v.abs() < 1e15 {
                let _ = write!(s, "{}", v as i64);
            } else {
                let _ = write!(s, "{v}");
            }
            let _ = writeln!(series.lines, "{s} {}.{:03}", at / 1000, at % 1000);
        };
        set(up, 1.0);
        set(procs, 5.0);
        set(cpu, cpu_now);
        let avg: f64 = recent[recent.len().saturating_sub(12)..]
            .iter()
            .sum::<f64>()
            / recent.len().min(12) as f64;
        set(cpu_avg, avg);
        set(cpu_peak, recent.iter().copied().fold(0.0, f64::max));
        set(limit, 2.0);
        set(mem_limit, limit_bytes);
        set(rss, rss_bytes);
        set(rss_mb, rss_bytes / 1_048_576.0);
        set(mem_pct, 100.0 * rss_bytes / limit_bytes);
        set(vms, 1_200_000.0 * 4096.0);
        set(fds, open_fds);
        set(threads, 12.0);
        set(oncpu, oncpu_ns as f64 / 1e9);
        let mut bump = |g: usize, by: f64| {
            totals[g] += by;
            totals[g]
        };
        let step_s = step_ms as f64 / 1000.0;
        let v = bump(faults, (load * 30.0 * rng.next()).round());
        set(faults, v);
        let v = bump(
            vol,
            (load * 900.0 * step_s * (0.9 + 0.2 * rng.next())).round(),
        );
        set(vol, v);
        let v = bump(invol, (load * 20.0 * step_s * rng.next()).round());
        set(invol, v);
        let o = (load * 2.0 * step_s * rng.next()).round();
        let v = bump(opens, o);
        set(opens, v);
        let v = bump(closes, o);
        set(closes, v);
        for (k, (_, rate)) in SYSCALLS.iter().enumerate() {
            let calls = (load * rate * step_s * (0.9 + 0.2 * rng.next())).round();
            let v = bump(sys[k], calls);
            set(sys[k], v);
            let v = bump(sys_secs[k], calls * 2e-6 * (0.5 + rng.next()));
            set(sys_secs[k], v);
        }
        for (k, (_, rate, cost)) in ROUTES.iter().enumerate() {
            let reqs = (load * rate * step_s * (0.8 + 0.4 * rng.next())).round();
            let v = bump(routes[k].0, reqs);
            set(routes[k].0, v);
            let v = bump(routes[k].1, reqs * cost * (0.9 + 0.2 * rng.next()));
            set(routes[k].1, v);
        }
    }
    let mut text = String::new();
    let mut family = "";
    let mut order: Vec<usize> = (0..gens.len()).collect();
    order.sort_by_key(|&i| (gens[i].family, gens[i].series.clone()));
    for i in order {
        let g = &gens[i];
        if g.family != family {
            let _ = writeln!(text, "# TYPE {} {}", g.family, g.kind);
            family = g.family;
        }
        text.push_str(&g.lines);
    }
    text.push_str("# EOF\n");
    (text, gens.len(), n as u64 * gens.len() as u64)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                p.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

pub fn measure(scratch: &Scratch, p: &Params) -> anyhow::Result<History> {
    let (text, series, samples) = generate(p.days, p.cadence);
    let file = scratch.path("history.om");
    fs::write(&file, &text).context("writing the synthetic history")?;
    let file_mib = text.len() as f64 / 1_048_576.0;
    drop(text);
    let store = scratch.path("history-bench.db");
    let t = Instant::now();
    let out = Command::new(&scratch.monitor)
        .args(["history", "import"])
        .arg(&file)
        .arg("--store")
        .arg(&store)
        .output()
        .context("running monitor history import")?;
    let import_secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "monitor history import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stats = Command::new(&scratch.monitor)
        .args(["history", "stats", "--store"])
        .arg(&store)
        .output()
        .context("running monitor history stats")?;
    let stats = String::from_utf8_lossy(&stats.stdout).to_string();
    // "TIER: C chunks, R rows, B bytes (...)": (rows, bytes)
    let tier = |name: &str| -> anyhow::Result<(f64, f64)> {
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .with_context(|| format!("no {name} line in history stats:\n{stats}"))?;
        let nums: Vec<f64> = line
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .filter_map(|w| w.parse().ok())
            .collect();
        Ok((nums[1], nums[2]))
    };
    let (rows, bytes) = tier("raw")?;
    let (minute_rows, minute_bytes) = tier("minute")?;
    let (hour_rows, hour_bytes) = tier("hour")?;
    if rows as u64 != samples {
        bail!("the store holds {rows} raw samples of the {samples} imported:\n{stats}");
    }
    let store_bytes: u64 = ["", "-wal"]
        .iter()
        .map(|ext| {
            fs::metadata(format!("{}{ext}", store.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let blocks = scratch.path("promtool-blocks");
    let t = Instant::now();
    let prom = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&blocks)
        .output();
    let (prometheus_bytes_per_sample, promtool_secs, promtool_note) = match prom {
        Ok(o) if o.status.success() => (
            Some(dir_bytes(&blocks) as f64 / samples as f64),
            Some(t.elapsed().as_secs_f64()),
            None,
        ),
        Ok(o) => (
            None,
            None,
            Some(format!(
                "promtool failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        ),
        Err(e) => (None, None, Some(format!("promtool not run: {e}"))),
    };
    let _ = fs::remove_file(&file);
    let (report_samples, report_secs) = time_report(scratch)?;
    Ok(History {
        series,
        samples,
        file_mib,
        import_secs,
        chunk_bytes_per_sample: bytes / rows,
        file_bytes_per_sample: store_bytes as f64 / samples as f64,
        store_bytes,
        minute_bytes_per_row: minute_bytes / minute_rows.max(1.0),
        hour_bytes_per_row: hour_bytes / hour_rows.max(1.0),
        prometheus_bytes_per_sample,
        promtool_secs,
        promtool_note,
        report_samples,
        report_secs,
    })
}

/// Imports 90 days of one-minute history of the series a report reads (CPU %, memory % and MB,
/// the request counter of 4 routes) ending now, and times `monitor report --json` over it.
fn time_report(scratch: &Scratch) -> anyhow::Result<(usize, f64)> {
    const MINUTE_MS: u64 = 60_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        / MINUTE_MS
        * MINUTE_MS;
    let n = 90 * 1440;
    let start = now - n * MINUTE_MS;
    let mut rng = Rng(0x5eed_7e57);
    let mut text = String::new();
    let mut samples = 0;
    let mut gauge = |text: &mut String, name: &str, f: &mut dyn FnMut(u64) -> f64| {
        let _ = writeln!(text, "# TYPE {name} gauge");
        for i in 0..n {
            let t = start + i * MINUTE_MS;
            let _ = writeln!(
                text,
                "{name}{{target=\"api\"}} {:.3} {}.{:03}",
                f(i),
                t / 1000,
                t % 1000
            );
        }
        samples += n as usize;
    };
    let day = |i: u64| (2.0 * std::f64::consts::PI * (i % 1440) as f64 / 1440.0).sin();
    gauge(&mut text, "app_cpu_usage_percent", &mut |i| {
        30.0 + 20.0 * day(i) + 3.0 * rng.next()
    });
    gauge(&mut text, "app_memory_usage_percent", &mut |i| {
        40.0 + i as f64 / 5000.0 + 2.0 * day(i)
    });
    gauge(&mut text, "app_memory_usage_mb", &mut |i| {
        400.0 + (i % 30) as f64 * 3.0 + i as f64 / 1440.0
    });
    let _ = writeln!(text, "# TYPE app_requests counter");
    for route in ["/a", "/b", "/c", "/d"] {
        let mut count = 0.0;
        for i in 0..n {
            let t = start + i * MINUTE_MS;
            count += (3000.0 + 2000.0 * day(i)).round();
            let _ = writeln!(
                text,
                "app_requests_total{{target=\"api\",method=\"GET\",route=\"{route}\",status=\"200\"}} {count} {}.{:03}",
                t / 1000,
                t % 1000
            );
        }
        samples += n as usize;
    }
    text.push_str("# EOF\n");
    let file = scratch.path("report-history.om");
    fs::write(&file, &text)?;
    drop(text);
    let store = scratch.path("report-bench.db");
    let out = Command::new(&scratch.monitor)
        .args(["history", "import"])
        .arg(&file)
        .arg("--store")
        .arg(&store)
        .output()?;
    let _ = fs::remove_file(&file);
    if !out.status.success() {
        bail!(
            "monitor history import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = Instant::now();
    let out = Command::new(&scratch.monitor)
        .args(["report", "--json", "--timezone", "UTC", "--store"])
        .arg(&store)
        .output()
        .context("running monitor report")?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "monitor report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((samples, secs))
}

impl History {
    pub fn goals(&self) -> Vec<(String, String, Option<bool>)> {
        let per_million = self.import_secs / (self.samples as f64 / 1e6);
        vec![
            (
                format!(
                    "History store: <= {GOAL_BYTES_PER_SAMPLE} bytes per raw sample on disk (the store's file)"
                ),
                format!(
                    "{:.2} bytes (raw chunks alone {:.2}; Prometheus blocks {})",
                    self.file_bytes_per_sample,
                    self.chunk_bytes_per_sample,
                    self.prometheus_bytes_per_sample
                        .map_or("n/a".into(), |b| format!("{b:.2}"))
                ),
                Some(self.file_bytes_per_sample <= GOAL_BYTES_PER_SAMPLE),
            ),
            (
                format!("History import: 1 million samples in <= {GOAL_IMPORT_SECS_PER_MILLION} s"),
                format!("{per_million:.2} s per million"),
                Some(per_million <= GOAL_IMPORT_SECS_PER_MILLION),
            ),
            (
                format!("Report: 90 days of one-minute history in <= {GOAL_REPORT_SECS} s"),
                format!(
                    "{:.2} s ({} samples)",
                    self.report_secs,
                    num(self.report_samples as f64)
                ),
                Some(self.report_secs <= GOAL_REPORT_SECS),
            ),
        ]
    }

    pub fn method(&self, p: &Params) -> String {
        format!(
            "- **History (7).** One synthetic history generated by the bench (the same in every run): {} days at {} s \
             of the {} series a monitored FastAPI-style target exports (CPU % computed from nanosecond on-CPU \
             increments, its 1-minute average and peak, RSS in 4 KiB pages and its MB and % forms, limits, fds, \
             threads, context switches, faults, fd opens/closes, 12 syscalls' counts and seconds, 4 routes' requests \
             and CPU seconds; load follows a trading day), written as OpenMetrics text with timestamps \
             ({:.0} MiB). `monitor history import` loads it into a new store (timed, parse included); its size is the \
             store's file plus WAL after the import, per raw sample (it holds the minute and hour aggregates too). \
             `promtool tsdb create-blocks-from openmetrics` turns the same file into Prometheus blocks, whose \
             directory size (chunks and index) per sample is shown next to it. The report row imports 90 days \
             of one-minute history of one target (CPU %, memory % and MB, 4 routes' request counters) ending now \
             and times `monitor report --json` over it (read, peaks, load correlation, leak, both forecasts).\n",
            p.days,
            p.cadence.as_secs(),
            self.series,
            self.file_mib
        )
    }

    pub fn table(&self) -> String {
        let mut s = String::from(
            "### 7. History store: the same synthetic history in monitor's store and in Prometheus blocks\n\n",
        );
        s.push_str(
            "| | samples | bytes on disk | bytes per sample | time |\n|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            s,
            "| monitor history import (store file + WAL) | {} | {} | **{:.2}** (raw chunks alone {:.2}) | {:.1} s ({:.0} samples/s) |",
            num(self.samples as f64),
            num(self.store_bytes as f64),
            self.file_bytes_per_sample,
            self.chunk_bytes_per_sample,
            self.import_secs,
            self.samples as f64 / self.import_secs
        );
        match (self.prometheus_bytes_per_sample, self.promtool_secs) {
            (Some(b), Some(t)) => {
                let _ = writeln!(
                    s,
                    "| promtool tsdb create-blocks-from openmetrics (blocks: chunks + index) | {} | {} | {:.2} | {:.1} s |",
                    num(self.samples as f64),
                    num(b * self.samples as f64),
                    b,
                    t
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "| promtool | | | n/a: {} | |",
                    self.promtool_note.as_deref().unwrap_or("not run")
                );
            }
        }
        let mib = 1_048_576.0;
        let series = self.series as f64;
        let per_day = self.file_bytes_per_sample * 86_400.0 / 5.0 * series / mib;
        let minutes = 90.0 * 1440.0 * series * self.minute_bytes_per_row / mib;
        let hours = 730.0 * 24.0 * series * self.hour_bytes_per_row / mib;
        let _ = writeln!(
            s,
            "\nOne target ({} series every 5 s) takes {per_day:.1} MiB a day of raw history at this rate. At steady state \
             under the default retention: 14 days raw {:.0} MiB, 90 days of minutes {minutes:.0} MiB ({:.1} bytes a \
             row), 2 years of hours {hours:.0} MiB ({:.1} bytes a row, from chunks this short history leaves part \
             empty): about {:.0} MiB.\n",
            self.series,
            per_day * 14.0,
            self.minute_bytes_per_row,
            self.hour_bytes_per_row,
            per_day * 14.0 + minutes + hours
        );
        s
    }
}
