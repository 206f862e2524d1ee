//! Helpers for the privileged integration tests: binaries, root check, workloads and daemons.
#![allow(
    dead_code,
    reason = "each test file uses a different part of this module"
)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::{io::Read as _, sync::mpsc};

use serde_json::Value;

pub mod prometheus;
pub mod robots;

/// An alert as `monitor notify-deliver` reads it (the `Alert` serde shape): a warning on
/// trading-api, started 2024-03-01 12:00 UTC, resolved five minutes later when `status` says so.
pub fn alert_json(name: &str, status: &str) -> Value {
    let mut a = serde_json::json!({
        "name": name,
        "severity": "warning",
        "status": status,
        "labels": {"target": "trading-api", "instance": "host:8001"},
        "annotations": {"summary": "memory high", "description": "RSS above 1 GiB"},
        "starts_at": "2024-03-01T12:00:00Z",
        "value": 1536.0
    });
    if status == "resolved" {
        a["ends_at"] = serde_json::json!("2024-03-01T12:05:00Z");
    }
    a
}

fn bin(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(name)
    });
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo xtask test` does) or set {var}",
        path.display()
    );
    path
}

pub fn monitor_bin() -> PathBuf {
    bin("MONITOR_BIN", "monitor")
}

pub fn workload_bin() -> PathBuf {
    bin("WORKLOAD_BIN", "workload")
}

/// The test venv's python3, with FastAPI, uvicorn and gunicorn (made by `cargo xtask test`).
pub fn python() -> PathBuf {
    let py = std::env::var_os("MONITOR_TEST_PYTHON").map(PathBuf::from).expect(
        "MONITOR_TEST_PYTHON is not set: `cargo xtask test` makes the venv with FastAPI, uvicorn and gunicorn and sets it",
    );
    assert!(py.exists(), "{} does not exist", py.display());
    py
}

/// tests/servers: the Python servers and clients the request tests start.
pub fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("servers")
}

/// These tests load BPF programs: fail loudly (never skip) when that is impossible.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads BPF programs and must run as root (run `sudo cargo xtask test`)"
    );
}

/// (major, minor) of the running kernel.
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// Waits until `what` listens on 127.0.0.1:`port` (a server a test started), 60 s at most:
/// Python servers import for seconds on a loaded host.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET `path` of a server on 127.0.0.1:`port`: (status, body) for any status, or why no answer
/// came.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()?;
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Ok((r.status().as_u16(), body))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `monitor stat --json -- workload ARGS`: (monitor's report, workload's own report, exit status).
pub fn stat_workload(args: &[&str]) -> (Value, Value, i32) {
    stat_workload_with(&[], args)
}

/// `monitor stat --json OPTIONS -- workload ARGS`: (monitor's report, the workload's, exit code).
pub fn stat_workload_with(options: &[&str], args: &[&str]) -> (Value, Value, i32) {
    stat_workload_full(&[], options, args)
}

/// `monitor stat --json -- workload ARGS` with environment variables set for monitor.
pub fn stat_workload_env(env: &[(&str, &str)], args: &[&str]) -> (Value, Value, i32) {
    stat_workload_full(env, &[], args)
}

fn stat_workload_full(
    env: &[(&str, &str)],
    options: &[&str],
    args: &[&str],
) -> (Value, Value, i32) {
    let out = Command::new(monitor_bin())
        .envs(env.iter().copied())
        .args(["stat", "--json"])
        .args(options)
        .arg("--")
        .arg(workload_bin())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("running monitor stat");
    let (monitor, workload) = stat_reports(&out.stdout);
    (monitor, workload, out.status.code().unwrap_or(-1))
}

/// The two JSON lines of `monitor stat --json -- COMMAND`'s output: (monitor's report, the
/// command's own report, which it printed first).
pub fn stat_reports(stdout: &[u8]) -> (Value, Value) {
    let text = String::from_utf8_lossy(stdout);
    let mut lines = text.lines().filter(|l| l.starts_with('{'));
    let command: Value = serde_json::from_str(lines.next().expect("the command's report")).unwrap();
    let monitor: Value = serde_json::from_str(lines.next().expect("monitor's report")).unwrap();
    (monitor, command)
}

pub fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// The workload's on-CPU seconds by the scheduler's own accounting (schedstat, getrusage).
pub fn oncpu_truth_seconds(report: &Value) -> f64 {
    u(&report["oncpu_truth_ns"]) as f64 / 1e9
}

/// Total faults the kernel accounted to the workload and its reaped children (getrusage).
pub fn rusage_faults(w: &Value) -> u64 {
    ["rusage_self", "rusage_children"]
        .iter()
        .map(|k| u(&w[k]["minflt"]) + u(&w[k]["majflt"]))
        .sum()
}

/// `monitor stat` of a launched command against the kernel's totals for that command as wait4
/// returned them (its whole life and the children it reaped, exit paths included), on-CPU within
/// 1 % and faults within 2 %. The workload's own reading, taken before it exits, must be a little
/// below: that is what shows wait4's reading is the workload's (an emulated VM makes the exit path
/// after the workload's own reading slow enough to matter against 1 %).
pub fn assert_matches_wait4(what: &str, m: &Value, w: &Value) {
    let wait4 = &m["wait4"];
    let truth_cpu = wait4["oncpu_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no wait4 figures in {m}"));
    let own_cpu = oncpu_truth_seconds(w);
    assert!(
        own_cpu <= truth_cpu + 1e-3 && own_cpu >= truth_cpu * 0.95,
        "{what}: the workload's own on-CPU {own_cpu} s is not just below wait4's {truth_cpu} s"
    );
    assert_within(
        &format!("on-CPU of {what}"),
        m["oncpu_seconds"].as_f64().unwrap(),
        truth_cpu,
        0.01,
    );
    let truth_faults = u(&wait4["minor_faults"]) + u(&wait4["major_faults"]);
    assert!(
        rusage_faults(w) <= truth_faults,
        "{what}: the workload's own faults {} exceed wait4's {truth_faults}",
        rusage_faults(w)
    );
    assert_within(
        &format!("faults of {what}"),
        u(&m["page_faults"]["total"]) as f64,
        truth_faults as f64,
        0.02,
    );
}

pub fn assert_within(what: &str, measured: f64, truth: f64, tolerance: f64) {
    let err = (measured - truth).abs() / truth;
    assert!(
        err <= tolerance,
        "{what}: monitor {measured} vs truth {truth}: {:.3} % off (allowed {:.1} %)",
        err * 100.0,
        tolerance * 100.0
    );
}

/// A workload held at its start line until `go()`, then lingering until dropped.
pub struct Workload {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<BufReader<std::process::ChildStdout>>,
    /// Reaped by `finish_with_rusage`: its pid may belong to another process now.
    reaped: bool,
}

/// What wait4(2) returned for a reaped workload: the kernel's totals for its whole life (exit
/// path included) and the children it reaped.
pub struct Wait4 {
    pub oncpu_seconds: f64,
    pub faults: u64,
}

impl Workload {
    pub fn start(program: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(["--wait-stdin", "--linger"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the workload");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Self {
            child,
            stdin,
            stdout,
            reaped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the work without waiting for it.
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Starts the work and returns the workload's report once it is done (it then lingers).
    pub fn go(&mut self) -> Value {
        self.release();
        let mut line = String::new();
        self.stdout.as_mut().unwrap().read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("workload report {line:?}: {e}"))
    }

    /// For a `serve` workload that was released: runs one command line (`hold --mib 10`) and
    /// returns its report.
    pub fn command(&mut self, line: &str) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut out = String::new();
        self.stdout.as_mut().unwrap().read_line(&mut out).unwrap();
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("workload `{line}` printed {out:?}: {e}"))
    }

    /// Ends the linger (stdin EOF) and reaps.
    pub fn finish(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }

    /// Ends the linger and reaps with wait4, for the kernel's totals. The workload's own report
    /// is taken before it prints it and lingers; under an emulated CPU what follows is slow
    /// enough to matter against 1 %, and a profiler counts it.
    pub fn finish_with_rusage(mut self) -> Wait4 {
        self.stdin.take();
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = self.child.id() as i32;
        // SAFETY: valid pointers; the pid is our unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
        self.reaped = true;
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Wait4 {
            oncpu_seconds: secs(ru.ru_utime) + secs(ru.ru_stime),
            faults: (ru.ru_minflt + ru.ru_majflt) as u64,
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `monitor run` on loopback with fast cadences.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    _config: tempfile::NamedTempFile,
    _state: tempfile::TempDir,
}

pub const FAST_CONFIG: &str = "[cadence]\ncpu_memory = \"300ms\"\nvms = \"300ms\"\nfds_threads = \"300ms\"\ndiscovery = \"200ms\"\n";

impl Daemon {
    pub fn start(target: &[&str], extra: &[&str]) -> Self {
        Self::start_with(target, extra, "")
    }

    /// With `more_config` (TOML tables) after the fast cadences.
    pub fn start_with(target: &[&str], extra: &[&str], more_config: &str) -> Self {
        Self::start_configured(target, extra, &format!("{FAST_CONFIG}{more_config}"))
    }

    /// With `config` as the whole configuration (an `[alerting]` state directory is added unless
    /// it has one).
    pub fn start_configured(target: &[&str], extra: &[&str], more_config: &str) -> Self {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        config.write_all(more_config.as_bytes()).unwrap();
        // Alert state and outbox of this daemon only, unless the test chose them.
        let state = tempfile::tempdir().unwrap();
        if !more_config.contains("[alerting]") {
            writeln!(
                config,
                "\n[alerting]\nstate_dir = \"{}\"",
                state.path().display()
            )
            .unwrap();
        }
        let port = free_port();
        let child = Command::new(monitor_bin())
            .arg("run")
            .args(target)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(config.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("starting monitor run");
        let d = Self {
            child,
            port,
            _config: config,
            _state: state,
        };
        // Loading the kernel programs parses the kernel's BTF: seconds under an emulated CPU,
        // more on a loaded host.
        d.wait_for_within(
            Duration::from_secs(30),
            |m| m.contains("app_up{"),
            "app_up served",
        );
        d
    }

    pub fn metrics_text(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/metrics", self.port))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default()
    }

    /// The value of the series `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics_text(), name, labels)
    }

    /// Polls /metrics until `pred` holds (10 s at most).
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        self.wait_for_within(Duration::from_secs(10), pred, what)
    }

    /// Polls /metrics until `pred` holds, `limit` at most.
    pub fn wait_for_within(
        &self,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
        what: &str,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.metrics_text();
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last /metrics:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the value of a series stops changing over two cadences.
    pub fn settled(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(700));
            let v = self.value(name, labels);
            if let Some(value) = v
                && v == last
            {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not settle (last {last:?})"
            );
            last = v;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child; SIGCONT so that a daemon a test stopped gets the TERM.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    // By hand, not prometheus-parse: its label pattern stops at the first `}`, and route
    // templates (`/api/orders/{order_id}`) hold braces inside label values.
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (metric, pairs, value) = sample_line(line)?;
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v));
            if matches { value.parse().ok() } else { None }
        })
}

/// A sample's labels, in order.
pub type Labels = Vec<(String, String)>;

/// Every sample of `name`: its labels and value.
pub fn samples(text: &str, name: &str) -> Vec<(Labels, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(sample_line)
        .filter(|(metric, _, _)| *metric == name)
        .filter_map(|(_, labels, value)| Some((labels, value.parse().ok()?)))
        .collect()
}

/// (name, labels, value) of one exposition-format sample line.
fn sample_line(line: &str) -> Option<(&str, Labels, &str)> {
    let name_end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(name_end);
    let mut pairs = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &after[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    pairs.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    Some((name, pairs, value))
}

/// Debian's prometheus-alertmanager on loopback, with its own storage and no clustering.
pub struct Alertmanager {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(port, dir)
    }

    pub fn start_in(port: u16, dir: tempfile::TempDir) -> Self {
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Empty: no cluster (gossip) listener, which would also want a port.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager is installed by `cargo xtask setup --test-deps`");
        let am = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while ureq::get(&am.url("/-/ready")).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "alertmanager on port {port} not ready; its log:\n{}",
                am.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    pub fn alerts(&self) -> Vec<Value> {
        let text = ureq::get(&self.url("/api/v2/alerts"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn alert_named(&self, name: &str) -> Option<Value> {
        self.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == name)
    }

    /// Stops it, keeping its storage directory for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on our child; SIGCONT so that a daemon a test stopped gets the TERM.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A one-request-per-connection HTTP receiver: hands (request head, body) to the test.
pub fn http_receiver() -> (u16, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
                let end = line == "\r\n";
                head.push_str(&line);
                if end {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if tx.send((head, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}
