//! The HTTP/1 protocol where real servers are messy, against a small server of our own
//! (tests/servers/proto_server.py) driven by tests/servers/proto_client.py, which reports what
//! it sent: keep-alive, pipelining, a request line split across reads, 100-continue, a chunked
//! streamed response, a 1 MiB body, fd reuse, garbage and a non-HTTP protocol, 10,000 ids, and
//! the cap on distinct routes.
mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

struct ProtoServer {
    child: Child,
    port: u16,
}

impl ProtoServer {
    fn start() -> Self {
        let mut child = Command::new(python())
            .current_dir(servers_dir())
            .args(["proto_server.py", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting proto_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("proto_server.py said {line:?}: {e}"));
        Self {
            child,
            port: v["port"].as_u64().unwrap() as u16,
        }
    }

    /// Runs one client case; returns what it sent ("METHOD /path" -> n).
    fn run(&self, case: &str) -> BTreeMap<String, u64> {
        let out = Command::new(python())
            .current_dir(servers_dir())
            .args(["proto_client.py", "--port", &self.port.to_string(), case])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "proto_client.py {case} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["requests"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
            .collect()
    }
}

impl Drop for ProtoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cases` against a fresh server watched by a fresh daemon; returns the finished requests
/// per (method, route, status) once every response went quiet, and the scrape.
fn watch(cases: &[&str], config: &str) -> (BTreeMap<(String, String, String), u64>, String) {
    require_root();
    let server = ProtoServer::start();
    let daemon = Daemon::start_with(
        &["--pid", &server.child.id().to_string()],
        &["--programs", "requests", "--require-ebpf"],
        config,
    );
    for case in cases {
        server.run(case);
    }
    std::thread::sleep(Duration::from_millis(2000));
    let m = daemon.metrics_text();
    let requests = samples(&m, "app_requests_total")
        .into_iter()
        .map(|(labels, v)| {
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            ((get("method"), get("route"), get("status")), v as u64)
        })
        .collect();
    (requests, m)
}

fn key(method: &str, route: &str, status: &str) -> (String, String, String) {
    (method.into(), route.into(), status.into())
}

#[test]
fn keep_alive_pipelined_split_and_reused_fds_count_each_request_once() {
    let (got, _) = watch(&["keepalive", "pipelined", "split", "fdreuse"], "");
    let want: BTreeMap<_, _> = [
        (key("GET", "/x", "200"), 20),
        (key("GET", "/p1", "200"), 1),
        (key("GET", "/p2", "200"), 1),
        (key("GET", "/p3", "200"), 1),
        (key("GET", "/split", "200"), 1),
        (key("GET", "/fd", "200"), 50),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn interim_responses_streams_and_large_bodies_end_with_their_final_response() {
    let (got, m) = watch(&["continue", "chunked", "bigpost"], "");
    let want: BTreeMap<_, _> = [
        (key("POST", "/upload", "200"), 1),
        (key("GET", "/stream", "200"), 1),
        (key("GET", "/after-stream", "200"), 1),
        (key("POST", "/big", "200"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        got, want,
        "a 100 Continue is not a response; a body makes no request"
    );
    // The stream's five chunks are written 20 ms apart: the request ends at the last one.
    let stream = metric_value(
        &m,
        "app_request_duration_seconds_sum",
        &[("method", "GET"), ("route", "/stream")],
    )
    .unwrap();
    assert!(
        (0.08..1.0).contains(&stream),
        "GET /stream lasted {stream} s: it ends at its last chunk (about 0.1 s)"
    );
}

#[test]
fn garbage_and_other_protocols_make_no_route() {
    let (got, _) = watch(&["garbage", "nonhttp"], "");
    let want: BTreeMap<_, _> = [(key("GET", "/after-garbage", "200"), 1)]
        .into_iter()
        .collect();
    assert_eq!(got, want);
}

#[test]
fn ten_thousand_ids_are_one_route_and_the_cap_sends_the_rest_to_other() {
    let (got, m) = watch(&["ids", "cap"], "[requests]\nmax_routes = 101\n");
    assert_eq!(got.get(&key("GET", "/items/{id}", "200")), Some(&10_000));
    let pages: u64 = got
        .iter()
        .filter(|((_, r, _), _)| r.starts_with("/page-"))
        .map(|(_, n)| *n)
        .sum();
    let distinct = got
        .keys()
        .filter(|(_, r, _)| r.starts_with("/page-"))
        .count();
    // 101 routes: /items/{id} and the first 100 pages; the other 200 pages count as "other".
    assert_eq!((distinct, pages), (100, 100));
    assert_eq!(got.get(&key("GET", "other", "200")), Some(&200));
    assert_eq!(
        metric_value(&m, "monitor_request_routes_dropped_total", &[]),
        Some(200.0)
    );
}

#[test]
fn stat_prints_the_routes_with_their_counts_cpu_latency_and_statuses() {
    require_root();
    let server = ProtoServer::start();
    let stat = Command::new(monitor_bin())
        .args([
            "stat",
            "--json",
            "--programs",
            "sched",
            "--programs",
            "requests",
        ])
        .args(["--pid", &server.child.id().to_string(), "--duration", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Loading the programs takes a moment; the client starts once stat is surely attached.
    std::thread::sleep(Duration::from_millis(1500));
    let sent = server.run("keepalive");
    let out = stat.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let route = &report["requests"]["GET /x"];
    assert_eq!(route["count"].as_u64(), Some(sent["GET /x"]), "{report}");
    assert_eq!(route["status"]["200"].as_u64(), Some(20));
    assert!(route["cpu_seconds"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        route["p50_seconds"].as_f64().unwrap(),
        route["p99_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 < 1.0, "p50 {p50}, p99 {p99}");
}

/// Explicit tags from integrations/python/monitor_tags.py in background jobs whose work is
/// known (tests/servers/tagged_jobs.py): each tag's count and statuses are exact, its CPU is
/// what its thread measured around the tagged blocks, its syscalls what the jobs made by
/// construction (getppid calls and the end markers); the untagged main thread's CPU (about
/// as much as report-b's) is in none of them.
#[test]
fn explicit_tags_get_their_threads_cpu_and_syscalls() {
    require_root();
    let out = Command::new(monitor_bin())
        .args([
            "stat",
            "--json",
            "--programs",
            "sched",
            "--programs",
            "requests",
            "--",
        ])
        .arg(python())
        .arg(servers_dir().join("tagged_jobs.py"))
        .arg("30")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "monitor stat failed");
    let (report, truth) = stat_reports(&out.stdout);
    let routes = &report["requests"];
    assert_eq!(
        routes.as_object().map(|o| o.len()),
        Some(2),
        "two tags and nothing else: {routes}"
    );
    for name in ["TAG report-a", "TAG report-b"] {
        let (got, want) = (&routes[name], &truth[name]);
        let count = want["count"].as_u64().unwrap();
        let failed = want["failed"].as_u64().unwrap();
        assert_eq!(got["count"].as_u64(), Some(count), "{name}: {got}");
        assert_eq!(got["status"]["500"].as_u64().unwrap_or(0), failed, "{name}");
        assert_eq!(
            got["status"]["0"].as_u64().unwrap_or(0),
            count - failed,
            "{name}"
        );
        let cpu = got["cpu_seconds"].as_f64().unwrap();
        let cpu_truth = want["cpu_seconds"].as_f64().unwrap();
        eprintln!(
            "{name}: {cpu:.4} s CPU against {cpu_truth:.4} s the thread measured, {} syscalls against {}",
            got["syscalls"], want["syscalls"]
        );
        assert_within(&format!("{name} CPU"), cpu, cpu_truth, 0.05);
        // The interpreter's own syscalls inside a block (an allocation's mmap) are few.
        let (syscalls, made) = (
            got["syscalls"].as_u64().unwrap(),
            want["syscalls"].as_u64().unwrap(),
        );
        assert!(
            syscalls >= made && syscalls <= made + made / 100 + 2 * count,
            "{name}: {syscalls} syscalls booked, {made} made in the tagged blocks"
        );
    }
}

/// A daemon that stops reading (stalled, here stopped with SIGSTOP) while the target writes far
/// more tags than the ring holds: the target finishes every write at its own pace (the kernel
/// drops what does not fit, it never waits), and once the daemon runs again it says how many
/// events it lost, enough to account for every unit it could not count.
#[test]
fn a_full_ring_loses_events_counts_them_and_never_blocks_the_target() {
    require_root();
    const TAGS: u64 = 400_000;
    let mut w = Workload::start(&workload_bin(), &["tags", "--count", &TAGS.to_string()]);
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--require-ebpf"]);
    let daemon = d.child.id() as i32;
    // SAFETY: plain kill of our own child.
    assert_eq!(unsafe { libc::kill(daemon, libc::SIGSTOP) }, 0);
    let report = w.go();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(daemon, libc::SIGCONT) }, 0);
    assert_eq!(
        report["work"]["tags"].as_u64(),
        Some(TAGS),
        "the workload did not finish its writes: {report}"
    );
    // The reader drains what the ring kept and reads the kernel's count at its next tick.
    d.wait_for(
        |m| metric_value(m, "monitor_request_events_lost_total", &[]).is_some_and(|v| v > 0.0),
        "monitor_request_events_lost_total above 0",
    );
    // Two reader ticks more: what the ring kept is drained and counted too.
    std::thread::sleep(Duration::from_millis(600));
    let text = d.metrics_text();
    let lost = metric_value(&text, "monitor_request_events_lost_total", &[]).unwrap() as u64;
    let units = metric_value(
        &text,
        "app_requests_total",
        &[("method", "TAG"), ("route", "bench")],
    )
    .unwrap_or(0.0) as u64;
    eprintln!(
        "{TAGS} tag writes ({} units) while the daemon was stopped: {units} units counted, {lost} events lost, {} ns per write",
        TAGS / 2,
        report["ns_per_op"]
    );
    // A 1 MiB ring holds a few thousand events: nearly all of them were dropped.
    assert!(
        (TAGS * 9 / 10..=TAGS).contains(&lost),
        "{lost} events lost of {TAGS} written"
    );
    // Every unit not counted lost its begin or its end (or both).
    assert!(
        units <= TAGS / 2 && units + lost >= TAGS / 2,
        "{units} units counted and {lost} events lost do not account for {} units",
        TAGS / 2
    );
}
