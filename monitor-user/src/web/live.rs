//! The live feed behind the page at `/`: the last minutes of the model's readings, one point
//! per CPU/memory sample, and what is true now (limits, programs, firing alerts, top syscalls,
//! request types, the daemon's own cost). Recorded by the sampler, read by `/api/live`.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    alerts::{Alert, from_model::Routes},
    collect::ebpf::probes::ProgramStatus,
    model::Model,
};

/// How much the page is given on first load; it keeps as much client-side.
pub const KEPT: Duration = Duration::from_secs(15 * 60);
/// Routes per point: a target with hundreds of routes would otherwise make every point heavy;
/// the page shows the costliest.
const ROUTES_PER_POINT: usize = 8;
/// Syscalls listed in the status.
const TOP_SYSCALLS: usize = 10;

/// One CPU/memory sample as the page charts it. Absent values (not read yet, a family not
/// attached, the target down) are null, not zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    pub t_ms: u64,
    pub up: bool,
    pub processes: u64,
    pub cpu_percent: Option<f64>,
    pub cpu_avg_1m: Option<f64>,
    pub cpu_peak: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub memory_percent: Option<f64>,
    pub vms_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    pub syscalls_per_sec: Option<f64>,
    pub faults_per_sec: Option<f64>,
    pub switches_per_sec: Option<f64>,
    pub fd_opens_per_sec: Option<f64>,
    /// Request types of one method each (`GET /t`, `TAG n`), the costliest first.
    pub routes: Vec<RoutePoint>,
    /// The daemon's own CPU since the previous point, in percent of one CPU, and its RSS.
    pub daemon_cpu_percent: Option<f64>,
    pub daemon_rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoutePoint {
    pub route: String,
    pub requests_per_sec: f64,
    /// Of the target's CPU capacity, as `cpu_percent`.
    pub cpu_percent: f64,
    pub p99_seconds: Option<f64>,
}

/// What holds now and is not charted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub cpu_limit_cores: f64,
    pub cpu_limit_source: &'static str,
    pub memory_limit_bytes: u64,
    pub memory_limit_source: &'static str,
    pub programs: Vec<Program>,
    pub firing: Vec<Firing>,
    /// (name, calls per second, seconds inside per second), the most called first.
    pub top_syscalls: Vec<(String, f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Program {
    pub name: &'static str,
    pub mechanism: &'static str,
    pub attached: bool,
    /// Why not, when asked for and not attached.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Firing {
    pub name: String,
    pub severity: &'static str,
    pub since_ms: u64,
    pub value: f64,
    pub summary: String,
}

/// The feed, shared by the sampler (writer) and the HTTP handlers (readers).
#[derive(Clone)]
pub struct LiveFeed {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    target: String,
    interval: Duration,
    history: bool,
    /// Why the kernel programs asked for are not loaded at all (eBPF refused: /proc only).
    ebpf_missing: Option<String>,
    capacity: usize,
    points: VecDeque<Point>,
    status: Status,
    programs: Vec<Program>,
    own_cpu: Option<(SystemTime, Duration)>,
}

/// What `/api/live` answers: the points after `since`, and the status.
#[derive(Serialize)]
pub struct Snapshot {
    pub target: String,
    pub interval_ms: u64,
    /// Whether the history store is on (the page then shows its trend).
    pub history: bool,
    pub points: Vec<Point>,
    pub status: Status,
}

impl LiveFeed {
    /// `interval` is the CPU/memory cadence: one point each.
    pub fn new(
        target: &str,
        interval: Duration,
        programs: &[ProgramStatus],
        history: bool,
    ) -> Self {
        let capacity = (KEPT.as_millis() / interval.as_millis().max(1)).clamp(2, 10_000) as usize;
        let programs = programs
            .iter()
            .filter(|p| p.enabled)
            .map(|p| Program {
                name: p.name,
                mechanism: p.mechanism,
                attached: p.attached(),
                error: p.error.clone(),
            })
            .collect();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                target: target.to_owned(),
                interval,
                history,
                ebpf_missing: None,
                capacity,
                points: VecDeque::with_capacity(capacity),
                status: Status::default(),
                programs,
                own_cpu: None,
            })),
        }
    }

    /// Records the sample the model just took, at `at`, with the request types over its
    /// interval and the alerts firing after it.
    pub fn record(&self, model: &Model, routes: &Routes, firing: &[Alert], at: SystemTime) {
        let own = own_usage();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut point = point(model, routes, unix_ms(at));
        if let Some((cpu, rss)) = own {
            if let Some((then, cpu_then)) = inner.own_cpu
                && let Ok(wall) = at.duration_since(then)
                && !wall.is_zero()
            {
                point.daemon_cpu_percent =
                    Some(cpu.saturating_sub(cpu_then).as_secs_f64() / wall.as_secs_f64() * 100.0);
            }
            point.daemon_rss_bytes = Some(rss);
            inner.own_cpu = Some((at, cpu));
        }
        while inner.points.len() >= inner.capacity {
            inner.points.pop_front();
        }
        inner.points.push_back(point);
        let l = &model.limits;
        inner.status = Status {
            cpu_limit_cores: l.cpus,
            cpu_limit_source: l.cpu_source.as_str(),
            memory_limit_bytes: l.memory_bytes,
            memory_limit_source: l.memory_source.as_str(),
            programs: inner.programs.clone(),
            firing: firing
                .iter()
                .map(|a| Firing {
                    name: a.name.clone(),
                    severity: a.severity.as_str(),
                    since_ms: unix_ms(a.starts_at),
                    value: a.value,
                    summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                })
                .collect(),
            top_syscalls: top_syscalls(model),
        };
    }

    /// Kernel programs were asked for and none could be loaded (the daemon fell back to /proc).
    pub fn ebpf_unavailable(&self, why: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.ebpf_missing = Some(why.to_owned());
    }

    /// Ready when the target is being sampled (a sample within the last three cadences) and
    /// every kernel program asked for is attached; otherwise what is missing.
    pub fn readiness(&self, now: SystemTime) -> Result<(), Vec<String>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut missing = Vec::new();
        match inner.points.back() {
            None => missing.push("no sample taken yet".to_owned()),
            Some(p) => {
                let age = Duration::from_millis(unix_ms(now).saturating_sub(p.t_ms));
                if age > inner.interval * 3 + Duration::from_secs(1) {
                    missing.push(format!(
                        "the last sample is {} s old (cadence {} s)",
                        age.as_secs(),
                        inner.interval.as_secs_f64()
                    ));
                }
            }
        }
        if let Some(why) = &inner.ebpf_missing {
            missing.push(format!("kernel programs not loaded: {why}"));
        }
        for p in inner.programs.iter().filter(|p| !p.attached) {
            missing.push(format!(
                "kernel program {} not attached: {}",
                p.name,
                p.error.as_deref().unwrap_or("unknown reason")
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// The `target` label's value.
    pub fn target(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.target.clone()
    }

    /// The points taken after `since_ms` (all kept ones for 0), and the status.
    pub fn since(&self, since_ms: u64) -> Snapshot {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            target: inner.target.clone(),
            interval_ms: inner.interval.as_millis() as u64,
            history: inner.history,
            points: inner
                .points
                .iter()
                .filter(|p| p.t_ms > since_ms)
                .cloned()
                .collect(),
            status: inner.status.clone(),
        }
    }
}

fn point(model: &Model, routes: &Routes, t_ms: u64) -> Point {
    let Some(s) = &model.latest else {
        return Point {
            t_ms,
            ..Point::default()
        };
    };
    // A down target's gauges are its last process's: shown as gaps, as the exporter drops them.
    let live = |v: Option<u64>| v.filter(|_| s.up);
    let rates = model.rates.as_ref().filter(|_| s.up);
    let kernel = rates.and_then(|r| r.kernel.as_ref());
    let mut route_points: Vec<RoutePoint> = routes
        .iter()
        .filter(|(k, _)| k.contains(' '))
        .map(|(k, v)| RoutePoint {
            route: k.clone(),
            requests_per_sec: v.requests_per_sec,
            cpu_percent: v.cpu_percent,
            p99_seconds: v.p99_seconds,
        })
        .collect();
    route_points.sort_by(|a, b| {
        b.cpu_percent
            .total_cmp(&a.cpu_percent)
            .then(b.requests_per_sec.total_cmp(&a.requests_per_sec))
    });
    route_points.truncate(ROUTES_PER_POINT);
    Point {
        t_ms,
        up: s.up,
        processes: s.processes,
        cpu_percent: model.cpu_percent.filter(|_| s.up),
        cpu_avg_1m: model.cpu_avg_1m.mean(),
        cpu_peak: model.cpu_peak.peak(),
        rss_bytes: live(Some(s.rss_bytes)),
        memory_percent: model.memory_percent().filter(|_| s.up),
        vms_bytes: live(s.vms_bytes),
        open_fds: live(s.open_fds),
        threads: live(s.threads),
        syscalls_per_sec: kernel.map(|k| k.syscalls),
        faults_per_sec: rates.map(|r| r.faults),
        switches_per_sec: rates.map(|r| r.switches),
        fd_opens_per_sec: kernel.map(|k| k.fd_opens),
        routes: route_points,
        daemon_cpu_percent: None,
        daemon_rss_bytes: None,
    }
}

fn top_syscalls(model: &Model) -> Vec<(String, f64, f64)> {
    let Some(k) = model.rates.as_ref().and_then(|r| r.kernel.as_ref()) else {
        return Vec::new();
    };
    let mut top: Vec<(String, f64, f64)> = k
        .per_syscall
        .iter()
        .filter(|(_, (calls, _))| *calls > 0.0)
        .map(|(name, (calls, secs))| (name.clone(), *calls, *secs))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_SYSCALLS);
    top
}

/// The daemon's CPU time (user + system, all threads) and resident memory.
fn own_usage() -> Option<(Duration, u64)> {
    // SAFETY: getrusage writes into the struct it is given; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    // statm's second field: resident pages (ru_maxrss is the peak, not the current size).
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some((cpu, pages * page))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        collect::{limits::Limits, sample::Sample},
        model::route_rates::RouteInterval,
    };

    fn sample(at_s: u64, up: bool, oncpu_ms: u64) -> Sample {
        Sample {
            at_ns: at_s * 1_000_000_000,
            up,
            processes: u64::from(up),
            oncpu_ns: oncpu_ms * 1_000_000,
            rss_bytes: 64 << 20,
            vms_bytes: Some(256 << 20),
            open_fds: Some(9),
            threads: Some(3),
            ..Sample::default()
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn keeps_the_last_minutes_and_answers_what_came_after_a_time() {
        let feed = LiveFeed::new("api", Duration::from_secs(300), &[], false);
        let mut model = Model::new(Limits::host(1 << 30, 2.0), 60_000_000_000);
        for i in 0..5 {
            model.update(sample(i * 300, true, i * 30_000));
            feed.record(&model, &Routes::new(), &[], at(i * 300));
        }
        // 15 minutes at a 5-minute cadence: three points.
        let all = feed.since(0);
        assert_eq!(all.points.len(), 3);
        assert_eq!(all.points[0].t_ms, unix_ms(at(600)));
        let newer = feed.since(unix_ms(at(900)));
        assert_eq!(newer.points.len(), 1);
        // 30 s of CPU in 300 s on 2 CPUs.
        assert_eq!(newer.points[0].cpu_percent, Some(5.0));
        assert_eq!(newer.points[0].rss_bytes, Some(64 << 20));
        assert_eq!(newer.status.cpu_limit_cores, 2.0);
        assert_eq!(newer.status.memory_limit_source, "host");
        assert!(newer.points[0].daemon_rss_bytes.unwrap() > 0);
    }

    #[test]
    fn ready_once_sampled_with_every_program_asked_for_attached() {
        let program = |name, error: Option<&str>| ProgramStatus {
            name,
            mechanism: "raw tracepoint",
            enabled: true,
            error: error.map(str::to_owned),
        };
        let left_out = ProgramStatus {
            enabled: false,
            ..program("page_fault_user", None)
        };
        let feed = LiveFeed::new(
            "api",
            Duration::from_secs(5),
            &[program("sched_switch", None), left_out],
            false,
        );
        let err = feed.readiness(at(0)).unwrap_err();
        assert_eq!(err, ["no sample taken yet"]);
        let mut model = Model::new(Limits::host(1 << 30, 1.0), 60_000_000_000);
        model.update(sample(0, true, 0));
        feed.record(&model, &Routes::new(), &[], at(0));
        assert_eq!(feed.readiness(at(16)), Ok(()));
        // Three cadences and a second without a sample: the sampler is stuck.
        let err = feed.readiness(at(17)).unwrap_err();
        assert!(err[0].contains("17 s old"), "{err:?}");

        let refused = LiveFeed::new(
            "api",
            Duration::from_secs(5),
            &[program("sys_exit", Some("EPERM"))],
            false,
        );
        refused.record(&model, &Routes::new(), &[], at(0));
        assert_eq!(
            refused.readiness(at(1)).unwrap_err(),
            ["kernel program sys_exit not attached: EPERM"]
        );
        let fallback = LiveFeed::new("api", Duration::from_secs(5), &[], false);
        fallback.record(&model, &Routes::new(), &[], at(0));
        fallback.ebpf_unavailable("BPF refused");
        assert_eq!(
            fallback.readiness(at(1)).unwrap_err(),
            ["kernel programs not loaded: BPF refused"]
        );
    }

    #[test]
    fn a_down_target_has_gaps_not_its_last_values() {
        let feed = LiveFeed::new("api", Duration::from_secs(5), &[], false);
        let mut model = Model::new(Limits::host(1 << 30, 1.0), 60_000_000_000);
        model.update(sample(0, true, 0));
        model.update(sample(5, false, 100));
        feed.record(&model, &Routes::new(), &[], at(5));
        let p = &feed.since(0).points[0];
        assert!(!p.up);
        assert_eq!(
            (p.cpu_percent, p.rss_bytes, p.open_fds, p.faults_per_sec),
            (None, None, None, None)
        );
    }

    #[test]
    fn routes_are_the_costliest_of_one_method_each() {
        let feed = LiveFeed::new("api", Duration::from_secs(5), &[], false);
        let mut model = Model::new(Limits::host(1 << 30, 1.0), 60_000_000_000);
        model.update(sample(0, true, 0));
        let mut routes = Routes::new();
        for i in 0..12 {
            let r = RouteInterval {
                requests_per_sec: 1.0,
                cpu_percent: f64::from(i),
                p99_seconds: Some(0.01),
            };
            routes.insert(format!("GET /r{i}"), r.clone());
            // The per-template and all-routes sums are not routes of their own.
            routes.insert(format!("/r{i}"), r);
        }
        routes.insert(String::new(), RouteInterval::default());
        feed.record(&model, &routes, &[], at(0));
        let names: Vec<String> = feed.since(0).points[0]
            .routes
            .iter()
            .map(|r| r.route.clone())
            .collect();
        assert_eq!(
            names,
            [
                "GET /r11", "GET /r10", "GET /r9", "GET /r8", "GET /r7", "GET /r6", "GET /r5",
                "GET /r4"
            ]
        );
    }
}
