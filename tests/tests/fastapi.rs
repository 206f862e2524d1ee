//! Request types end to end on real servers: the tests' FastAPI app (tests/servers/app.py),
//! whose routes measure their own CPU work, served by uvicorn (uvloop + httptools, asyncio +
//! h11) and by gunicorn with uvicorn workers, driven by one and by four keep-alive clients.
//!
//! Ground truth: request counts from the client and the app; each route's work from the app
//! (thread CPU time around its work loop); what one request of each route costs, work and
//! framework together, from the kernel's accounting of the whole process tree (/proc
//! schedstat) while only that route is requested; and the tree's on-CPU time during the mixed
//! load for the sum of the routes.
mod common;

use std::{
    collections::BTreeMap,
    fs,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const ANALYSIS: &str = "/api/analysis/{symbol}";
const ORDER: &str = "/api/orders/{order_id}";
const HEALTH: &str = "/health";

/// Work per request the app does (ms of its own thread's CPU).
const WORK_ANALYSIS_MS: &str = "30";
const WORK_ORDER_MS: &str = "8";

#[derive(Clone, Copy, Debug)]
enum Server {
    Uvloop,
    Asyncio,
    Gunicorn,
}

struct App {
    child: Child,
    port: u16,
    stats: tempfile::TempDir,
    /// Each thread's last on-CPU total seen: a thread that exits (anyio ends workers idle for
    /// 10 s) keeps counting with what it had, so the tree's total never goes back.
    threads_oncpu: std::cell::RefCell<BTreeMap<u32, u64>>,
}

impl App {
    fn start(server: Server) -> Self {
        Self::start_env(server, &[])
    }

    fn start_env(server: Server, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let stats = tempfile::tempdir().unwrap();
        let p = port.to_string();
        let mut cmd = Command::new(python());
        match server {
            Server::Uvloop => cmd.args([
                "-m",
                "uvicorn",
                "app:app",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ]),
            Server::Asyncio => cmd.args([
                "-m", "uvicorn", "app:app", "--loop", "asyncio", "--http", "h11",
            ]),
            Server::Gunicorn => cmd.args([
                "-m",
                "gunicorn",
                "-k",
                "uvicorn.workers.UvicornWorker",
                "-w",
                "2",
                "--no-control-socket",
                "app:app",
            ]),
        };
        match server {
            Server::Gunicorn => cmd.args(["-b", &format!("127.0.0.1:{p}")]),
            _ => cmd.args(["--host", "127.0.0.1", "--port", &p, "--no-access-log"]),
        };
        let child = cmd
            .current_dir(servers_dir())
            .env("APP_WORK_ANALYSIS_MS", WORK_ANALYSIS_MS)
            .env("APP_WORK_ORDER_MS", WORK_ORDER_MS)
            .env("APP_STATS_DIR", stats.path())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the FastAPI server");
        let app = Self {
            child,
            port,
            stats,
            threads_oncpu: Default::default(),
        };
        wait_listening(port, &format!("{server:?}"));
        app
    }

    /// Every process of the server (gunicorn's master and workers).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        let mut i = 0;
        while i < pids.len() {
            let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", pids[i]))
                .unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
            i += 1;
        }
        pids
    }

    /// On-CPU seconds of every thread of the tree, as the scheduler accounts them, those that
    /// exited included.
    fn oncpu_s(&self) -> f64 {
        let mut seen = self.threads_oncpu.borrow_mut();
        for pid in self.pids() {
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let s = fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
                if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
                    let last = seen.entry(tid).or_insert(0);
                    *last = (*last).max(ns);
                }
            }
        }
        seen.values().sum::<u64>() as f64 / 1e9
    }

    /// (count, work seconds) per "METHOD /template", summed over the workers' files.
    fn work(&self) -> BTreeMap<String, (u64, f64)> {
        let mut out = BTreeMap::new();
        for f in fs::read_dir(self.stats.path()).unwrap().flatten() {
            if f.path().extension().is_none_or(|e| e != "json") {
                continue;
            }
            let v: Value = serde_json::from_str(&fs::read_to_string(f.path()).unwrap()).unwrap();
            for (route, t) in v["routes"].as_object().unwrap() {
                let e = out.entry(route.clone()).or_insert((0, 0.0));
                e.0 += t["count"].as_u64().unwrap();
                e.1 += t["work_ns"].as_f64().unwrap() / 1e9;
            }
        }
        out
    }

    /// Runs the load client; returns requests sent per "METHOD /template".
    fn load(&self, clients: u32, requests: u32, mix: &str) -> BTreeMap<String, u64> {
        let out = Command::new(python())
            .current_dir(servers_dir())
            .args(["load.py", "--port", &self.port.to_string()])
            .args([
                "--clients",
                &clients.to_string(),
                "--requests",
                &requests.to_string(),
            ])
            .args(["--mix", mix])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "load.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["routes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(r, t)| (r.clone(), t["sent"].as_u64().unwrap()))
            .collect()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // SAFETY: plain kill of our child; gunicorn's master takes its workers down on TERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn route_value(m: &str, name: &str, route: &str) -> f64 {
    metric_value(m, name, &[("method", "GET"), ("route", route)]).unwrap_or(0.0)
}

fn requests_of(m: &str, route: &str) -> f64 {
    metric_value(
        m,
        "app_requests_total",
        &[("method", "GET"), ("route", route), ("status", "200")],
    )
    .unwrap_or(0.0)
}

/// The kernel's on-CPU time of the whole tree per request while only `kind` requests run: what
/// one request of that route costs, work and framework together.
/// The tree's own background CPU (gunicorn's arbiter and heartbeats, idle workers, timers) is
/// measured while nothing is requested and taken out, pro rata of the phase's length.
fn cost_per_request(app: &App, clients: u32, kind: &str, idle_per_s: f64) -> f64 {
    // Enough requests that a stray millisecond of the tree's own (a timer, a GC) is noise.
    let n = if clients == 1 { 40 } else { 25 };
    let (before, started) = (app.oncpu_s(), Instant::now());
    app.load(clients, n, &format!("{kind}=1"));
    std::thread::sleep(Duration::from_millis(300));
    let background = idle_per_s * started.elapsed().as_secs_f64();
    (app.oncpu_s() - before - background) / f64::from(clients * n)
}

/// The tree's on-CPU seconds per second while it serves nothing.
fn idle_cpu_per_s(app: &App) -> f64 {
    let (before, started) = (app.oncpu_s(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    (app.oncpu_s() - before) / started.elapsed().as_secs_f64()
}

fn check(server: Server, clients: u32) {
    require_root();
    let app = App::start(server);
    // Warm up the app (imports, first-request paths) before anything is measured.
    app.load(1, 5, "analysis=1,order=1,health=1");
    let daemon = Daemon::start_with(
        &["--pid", &app.child.id().to_string()],
        &[
            "--programs",
            "syscalls",
            "--programs",
            "sched",
            "--programs",
            "requests",
            "--require-ebpf",
        ],
        // No route patterns: the templates come from the app's own /openapi.json.
        "",
    );
    let routes = [
        (ANALYSIS, "GET /api/analysis/{symbol}", "analysis"),
        (ORDER, "GET /api/orders/{order_id}", "order"),
        (HEALTH, "GET /health", "health"),
    ];
    let idle = idle_cpu_per_s(&app);
    let alone: Vec<f64> = routes
        .iter()
        .map(|(_, _, kind)| cost_per_request(&app, clients, kind, idle))
        .collect();
    eprintln!(
        "{server:?} x{clients}: the idle tree runs {:.2} ms/s",
        idle * 1e3
    );
    std::thread::sleep(Duration::from_millis(1500));
    let m0 = daemon.metrics_text();
    let work0 = app.work();
    let tree0 = app.oncpu_s();
    let per_client = if clients == 1 { 60 } else { 20 };
    let sent = app.load(clients, per_client, "analysis=1,order=2,health=1");
    // Responses end when their connection goes quiet for a second.
    std::thread::sleep(Duration::from_millis(2500));
    let tree = app.oncpu_s() - tree0;
    let m = daemon.metrics_text();
    let work = app.work();
    // Each route alone once more, after the mix: this shared machine's speed drifts by a few
    // percent over a test, and the mean of before and after is what the mix ran against.
    let alone: Vec<f64> = routes
        .iter()
        .zip(alone)
        .map(|((_, _, kind), before)| {
            let after = cost_per_request(&app, clients, kind, idle);
            eprintln!(
                "{server:?} x{clients} {kind}: alone {:.2} ms per request before the mix, {:.2} after",
                before * 1e3,
                after * 1e3
            );
            (before + after) / 2.0
        })
        .collect();
    let mut attributed = 0.0;
    let mut failures = Vec::new();
    for ((route, key, _), alone) in routes.iter().zip(alone) {
        let count = requests_of(&m, route) - requests_of(&m0, route);
        let app_count = work[*key].0 - work0.get(*key).map_or(0, |w| w.0);
        assert_eq!(
            count as u64, sent[*key],
            "{server:?} x{clients}: requests of {route} (client's count)"
        );
        assert_eq!(
            app_count, sent[*key],
            "{server:?} x{clients}: requests of {route} (app's count)"
        );
        let cpu = route_value(&m, "app_request_cpu_seconds_total", route)
            - route_value(&m0, "app_request_cpu_seconds_total", route);
        attributed += cpu;
        let work_per = (work[*key].1 - work0.get(*key).map_or(0.0, |w| w.1)) / count;
        let measured = cpu / count;
        let err = (measured - alone).abs() / alone;
        eprintln!(
            "{server:?} x{clients} {route}: {count} requests, {:.2} ms CPU each in the mix; alone the tree spends {:.2} ms per request (the app's work {:.2}): {:.1} % off",
            measured * 1e3,
            alone * 1e3,
            work_per * 1e3,
            err * 100.0
        );
        // The no-work route is framework overhead alone (about 1 ms): checked through the sum.
        if *route != HEALTH && err > 0.10 {
            failures.push(format!("{route}: {:.1} % off", err * 100.0));
        }
    }
    let share = attributed / tree;
    eprintln!(
        "{server:?} x{clients}: routes got {attributed:.3} s of the tree's {tree:.3} s ({:.1} %)",
        share * 100.0
    );
    assert!(
        failures.is_empty(),
        "{server:?} x{clients}: CPU per request in the mix against the same route alone, over 10 %: {failures:?}"
    );
    assert!(
        (0.85..=1.05).contains(&share),
        "{server:?} x{clients}: the routes' CPU is {:.1} % of the tree's on-CPU time over the load (85-105 % expected)",
        share * 100.0
    );
}

#[test]
fn uvicorn_uvloop_one_client() {
    check(Server::Uvloop, 1);
}

#[test]
fn uvicorn_uvloop_four_clients() {
    check(Server::Uvloop, 4);
}

#[test]
fn uvicorn_asyncio_h11_one_client() {
    check(Server::Asyncio, 1);
}

#[test]
fn uvicorn_asyncio_h11_four_clients() {
    check(Server::Asyncio, 4);
}

#[test]
fn gunicorn_uvicorn_workers_one_client() {
    check(Server::Gunicorn, 1);
}

#[test]
fn gunicorn_uvicorn_workers_four_clients() {
    check(Server::Gunicorn, 4);
}

/// The repo's ASGI middleware (integrations/python/monitor_tags.py) announces each route's
/// template: with the OpenAPI fetch off, the routes are the app's own templates from the first
/// request on, where the heuristic alone would make one route per symbol.
#[test]
fn the_asgi_middleware_names_the_routes_with_openapi_off() {
    require_root();
    let app = App::start_env(Server::Asyncio, &[("APP_MONITOR_ROUTES", "1")]);
    let daemon = Daemon::start_with(
        &["--pid", &app.child.id().to_string()],
        &[
            "--programs",
            "sched",
            "--programs",
            "requests",
            "--require-ebpf",
        ],
        "[requests]\nopenapi = false\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    let sent = app.load(4, 10, "analysis=1,order=1,health=1");
    std::thread::sleep(Duration::from_millis(2500));
    let m = daemon.metrics_text();
    let routes: Vec<String> = samples(&m, "app_requests_total")
        .into_iter()
        .map(|(labels, _)| format!("{labels:?}"))
        .collect();
    for (route, key) in [
        (ANALYSIS, "GET /api/analysis/{symbol}"),
        (ORDER, "GET /api/orders/{order_id}"),
        (HEALTH, "GET /health"),
    ] {
        assert_eq!(
            requests_of(&m, route) as u64,
            sent[key],
            "{route}: requests counted under the app's template; series: {routes:#?}"
        );
    }
    assert_eq!(
        routes.len(),
        3,
        "only the three templates, no heuristic routes: {routes:#?}"
    );
}

fn events(daemon: &Daemon) -> Vec<Value> {
    let text = ureq::get(&format!("http://127.0.0.1:{}/api/events", daemon.port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Request types in alerting: a rule on one route's p99 fires (its work alone is 30 ms of CPU)
/// while a rule on an idle route does not; the CPU spike of a burst of analysis requests names
/// that route first, and the CPU alert it raises carries it in `spike_context`.
#[test]
fn route_rules_fire_and_cpu_spikes_name_the_route() {
    require_root();
    let app = App::start(Server::Uvloop);
    app.load(1, 3, "analysis=1,health=1");
    let rules = r#"
[[rule]]
name = "SlowAnalysis"
metric = "request_p99_seconds"
route = "GET /api/analysis/{symbol}"
above = 0.02

[[rule]]
name = "HealthStorm"
metric = "request_rate"
route = "/health"
above = 0.5

[[rule]]
name = "CpuHot"
metric = "cpu_percent"
above = 30
"#;
    let daemon = Daemon::start_with(
        &["--pid", &app.child.id().to_string()],
        &[
            "--programs",
            "sched",
            "--programs",
            "requests",
            "--require-ebpf",
        ],
        rules,
    );
    // An idle baseline for the spike detector, then a burst of analysis requests.
    std::thread::sleep(Duration::from_secs(4));
    app.load(1, 60, "analysis=1");
    std::thread::sleep(Duration::from_secs(2));
    let events = events(&daemon);
    let firing = |name: &str| {
        events
            .iter()
            .find(|e| e["kind"] == "alert" && e["name"] == name && e["status"] == "firing")
            .cloned()
    };
    let slow = firing("SlowAnalysis").unwrap_or_else(|| panic!("no SlowAnalysis: {events:#?}"));
    assert_eq!(
        slow["labels"]["route"], "GET /api/analysis/{symbol}",
        "{slow:#}"
    );
    assert!(firing("HealthStorm").is_none(), "{events:#?}");
    let spike = events
        .iter()
        .find(|e| e["kind"] == "cpu_spike")
        .unwrap_or_else(|| panic!("no cpu_spike: {events:#?}"));
    assert_eq!(
        spike["top_routes_by_cpu"][0]["route"], "GET /api/analysis/{symbol}",
        "{spike:#}"
    );
    // The daemon fetched the app's templates when it started, before any request it saw:
    // no request went to a heuristic route.
    let routes = samples(&daemon.metrics_text(), "app_requests_total");
    assert!(
        routes
            .iter()
            .all(|(labels, _)| format!("{labels:?}").contains("{symbol}")),
        "{routes:?}"
    );
    let hot = firing("CpuHot").unwrap_or_else(|| panic!("no CpuHot: {events:#?}"));
    let context = hot["annotations"]["spike_context"]
        .as_str()
        .unwrap_or_default();
    assert!(
        context.contains("top routes GET /api/analysis/{symbol} +"),
        "{hot:#}"
    );
}
