//! The live page at `/` in a real headless Chromium (Debian's `chromium`), driven over the
//! DevTools protocol: the page of a daemon watching an HTTP server under load must draw every
//! chart, show the target's current values as the kernel accounts them, list its request
//! types, firing alerts and kernel programs, and load nothing from anywhere but the daemon.
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// A headless Chromium with one page, spoken to over the DevTools protocol.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Protocol events received so far (network requests among them).
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,2400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium is installed by `cargo xtask setup --test-deps` (Debian package chromium)");
        // Chromium names its DevTools endpoint on stderr; the rest of stderr is drained so it
        // never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not print its DevTools endpoint within 30 s");
        let port = endpoint
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let targets: Value = serde_json::from_str(
            &ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
                .call()
                .and_then(|mut r| r.body_mut().read_to_string())
                .expect("chromium's /json/list"),
        )
        .unwrap();
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page in chromium's targets: {targets}"))
            .to_owned();
        let (socket, _) = tungstenite::connect(page.as_str()).expect("the page's DevTools socket");
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            // A browser that stops answering fails the test instead of hanging it.
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Self {
            child,
            socket,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// Calls a protocol method and returns its result; events that arrive first are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let message = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("{method}: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Evaluates an expression in the page, returning its value as JSON.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "the page threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Every URL the page requested.
    fn requested(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .map(|e| {
                (
                    e["params"]["requestId"].as_str().unwrap_or("").to_owned(),
                    e["params"]["request"]["url"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    }

    /// Bytes received for one request, as the network stack counted them.
    fn received(&self, request_id: &str) -> f64 {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Network.loadingFinished" && e["params"]["requestId"] == request_id
            })
            .filter_map(|e| e["params"]["encodedDataLength"].as_f64())
            .sum()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows, read from its DOM and, for the charts, from the pixels of their
/// canvases: a chart counts as drawn when its first series' colour covers some of it.
const READ_PAGE: &str = r#"(() => {
  const text = id => { const e = document.getElementById(id); return e ? e.textContent : null; };
  const charts = {};
  for (const card of document.querySelectorAll('article[id^="chart-"]')) {
    const canvas = card.querySelector('canvas');
    let seriesPixels = 0;
    if (canvas && !card.hidden) {
      const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 200 && Math.abs(d[i] - 31) < 30 && Math.abs(d[i + 1] - 119) < 30 && Math.abs(d[i + 2] - 180) < 30) seriesPixels++;
      }
    }
    charts[card.id] = { hidden: card.hidden, points: Number(card.dataset.points || 0),
      width: canvas ? canvas.getBoundingClientRect().width : 0, seriesPixels };
  }
  const rows = sel => [...document.querySelectorAll(sel)].map(r => [...r.cells].map(c => c.textContent));
  const items = sel => [...document.querySelectorAll(sel)].map(li => li.textContent);
  return {
    target: text('target'), state: text('state'), processes: text('processes'),
    cpu: text('now-cpu'), rss: text('now-rss'), fds: text('now-fds'), threads: text('now-threads'),
    alerts: text('now-alerts'), memoryLimit: text('memory-limit'),
    error: document.getElementById('error').hidden ? null : text('error'),
    routes: rows('#routes tbody tr'), firing: items('#alerts li'), events: items('#events li'),
    programs: items('#programs li'), historyTrend: text('history-trend'), charts,
  };
})()"#;

fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// On-CPU ns of the process's threads (schedstat: the kernel's own accounting).
fn schedstat_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// "12.3 MiB" in bytes.
fn shown_bytes(text: &str) -> f64 {
    let (n, unit) = text.split_once(' ').unwrap_or((text, "B"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("not a size: {text:?}"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => panic!("unit of {text:?}"),
    };
    n * scale
}

fn shown_number(text: &str) -> f64 {
    let t = text.trim().trim_end_matches('%').trim();
    let (n, scale) = match t.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => (t, 1.0),
    };
    n.parse::<f64>()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
        * scale
}

#[test]
fn the_live_page_draws_the_target_as_the_kernel_accounts_it() {
    require_root();
    const RATE: f64 = 200.0;
    // Not through `Workload`: the server answers stdin lines from its epoll loop, which a
    // `--wait-stdin` read ahead of it would have swallowed.
    let mut server = Command::new(workload_bin())
        .arg("http-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server_in = server.stdin.take().unwrap();
    writeln!(server_in, "status").unwrap();
    let mut status = String::new();
    // Kept open to the end: the server writes its report there when it stops.
    let mut server_out = BufReader::new(server.stdout.take().unwrap());
    server_out.read_line(&mut status).unwrap();
    let port = serde_json::from_str::<Value>(&status).unwrap()["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("http-server status {status:?}")) as u16;
    let pid = server.id();
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "[cadence]\ncpu_memory = \"1s\"\nvms = \"1s\"\nfds_threads = \"1s\"\ndiscovery = \"1s\"\n\
         [history]\npath = \"{}\"\n\
         [[rule]]\nname = \"ServerAlive\"\nmetric = \"processes\"\nabove = 0\nseverity = \"warning\"\n",
        state.path().join("history.db").display()
    );
    let daemon = Daemon::start_configured(&["--pid", &pid.to_string()], &[], &config);
    let mut load = Command::new(workload_bin())
        .args([
            "http-load",
            &format!("--port={port}"),
            "--connections=2",
            &format!("--requests={}", (RATE * 60.0) as u64),
            &format!("--rate={RATE}"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{}/", daemon.port);

    let mut browser = Browser::launch();
    browser.call("Network.enable", json!({}));
    browser.call("Page.navigate", json!({ "url": base }));
    // Until the page holds a few seconds of points with requests in them (the load's first
    // interval has none), 45 s at most.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (page, cpu_truth) = loop {
        std::thread::sleep(Duration::from_secs(1));
        let before = (Instant::now(), schedstat_ns(pid));
        std::thread::sleep(Duration::from_secs(3));
        let truth = (schedstat_ns(pid) - before.1) as f64
            / before.0.elapsed().as_nanos() as f64
            / 2.0 // the host's CPUs: the target's limit here (no cgroup)
            * 100.0;
        let page = browser.eval(READ_PAGE);
        let ready = page["charts"]["chart-cpu"]["points"].as_u64().unwrap_or(0) >= 6
            && page["routes"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|row| shown_number(row[1].as_str().unwrap()) > 0.0)
            });
        if ready {
            break (page, truth);
        }
        assert!(Instant::now() < deadline, "the page never filled: {page:#}");
    };
    eprintln!("the page as chromium shows it: {page:#}");
    assert_eq!(page["error"], Value::Null);
    assert_eq!(page["target"], "workload");
    assert_eq!(page["state"], "up");
    assert_eq!(page["processes"], "1");

    // Current values against the kernel's own accounting of the server.
    let rss = shown_bytes(page["rss"].as_str().unwrap());
    let rss_truth = proc_status(pid, "VmRSS:") as f64 * 1024.0;
    assert!(
        (rss - rss_truth).abs() <= 0.06 * 1024.0 * 1024.0 + 0.02 * rss_truth,
        "RSS shown {rss}, /proc says {rss_truth}"
    );
    let threads_truth = proc_status(pid, "Threads:");
    assert_eq!(page["threads"], threads_truth.to_string());
    let fds_truth = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert_eq!(page["fds"], fds_truth.to_string());
    let cpu = shown_number(page["cpu"].as_str().unwrap());
    assert!(
        (cpu - cpu_truth).abs() <= 0.5 + 0.35 * cpu_truth,
        "CPU shown {cpu} %, schedstat over the last 3 s {cpu_truth:.2} %"
    );

    // Request types: the load's route at the load's rate.
    let routes = page["routes"].as_array().unwrap();
    let served = routes
        .iter()
        .find(|r| r[0].as_str().unwrap().starts_with("GET /"))
        .unwrap_or_else(|| panic!("no GET route listed: {routes:?}"));
    let rate = shown_number(served[1].as_str().unwrap());
    assert!(
        (rate - RATE).abs() <= 0.25 * RATE,
        "{rate} requests/s shown, the load sends {RATE}"
    );

    // The rule that fires at once, in the firing list and in the events.
    let firing = page["firing"].as_array().unwrap();
    assert!(
        firing
            .iter()
            .any(|f| f.as_str().unwrap().contains("ServerAlive")),
        "{firing:?}"
    );
    assert_eq!(page["alerts"], firing.len().to_string());
    let events = page["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.as_str().unwrap().contains("ServerAlive firing")),
        "{events:?}"
    );

    // Every program /metrics says is attached, listed as attached.
    let metrics = daemon.metrics_text();
    let attached: Vec<String> = samples(&metrics, "monitor_ebpf_attached")
        .into_iter()
        .filter(|(_, v)| *v == 1.0)
        .filter_map(|(labels, _)| {
            labels
                .into_iter()
                .find(|(k, _)| k == "program")
                .map(|(_, v)| v)
        })
        .collect();
    assert!(!attached.is_empty());
    let programs = page["programs"].as_array().unwrap();
    for name in &attached {
        assert!(
            programs.iter().any(|p| {
                let p = p.as_str().unwrap();
                p.starts_with(&format!("{name} ·")) && !p.contains("NOT attached")
            }),
            "{name} not listed as attached: {programs:?}"
        );
    }

    // Every chart drawn, wide enough to read, with its series on the canvas.
    for (id, chart) in page["charts"].as_object().unwrap() {
        if id == "chart-history" {
            continue;
        }
        assert_eq!(chart["hidden"], false, "{id} hidden");
        assert!(chart["width"].as_f64().unwrap() >= 280.0, "{id}: {chart}");
        assert!(
            chart["seriesPixels"].as_u64().unwrap() > 100,
            "{id} has no series drawn: {chart}"
        );
    }
    // The history store's day: shown (the store has seconds in it, so no trend yet).
    assert_eq!(page["charts"]["chart-history"]["hidden"], false);
    let trend = page["historyTrend"].as_str().unwrap();
    assert!(!trend.contains("unavailable"), "{trend}");

    // Nothing requested outside the daemon, and the page's own files within 300 KB.
    let requested = browser.requested();
    let outside: Vec<&String> = requested
        .iter()
        .map(|(_, url)| url)
        .filter(|url| !url.starts_with(&base))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the daemon: {outside:?}"
    );
    let files: Vec<&(String, String)> = requested
        .iter()
        .filter(|(_, url)| !url.contains("/api/"))
        .collect();
    assert_eq!(files.len(), 5, "the page and its four files: {files:?}");
    let weight: f64 = files.iter().map(|(id, _)| browser.received(id)).sum();
    let feed: f64 = requested
        .iter()
        .filter(|(_, url)| url.contains("/api/live"))
        .map(|(id, _)| browser.received(id))
        .sum();
    eprintln!(
        "page weight {weight:.0} bytes; feed {feed:.0} bytes in {} polls",
        requested
            .iter()
            .filter(|(_, u)| u.contains("/api/live"))
            .count()
    );
    assert!(
        weight > 50_000.0 && weight <= 300_000.0,
        "page weight {weight} bytes"
    );

    let shot = browser.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let keep = std::env::temp_dir().join("monitor-dashboard-screenshot.png");
    std::fs::write(&keep, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", keep.display(), png.len());
    assert!(png.len() > 30_000, "screenshot of {} bytes", png.len());

    for child in [&mut load, &mut server] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
