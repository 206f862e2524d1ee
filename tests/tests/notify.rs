//! Alert notifiers against real receivers started here on loopback: Debian's Alertmanager, a
//! webhook receiver and an SMTP sink. The notifier lives inside the `monitor` binary, so these go
//! through its hidden `monitor notify-deliver --config FILE --outbox DIR --alert-json FILE
//! [--timeout DURATION]`, which sends the alerts and exits 0 once everything is delivered.
mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

/// Retries fast so that a receiver coming back is noticed within a second.
const FAST: &str = "[notify]\nretry_initial = \"200ms\"\nretry_max = \"1s\"\ntimeout = \"2s\"\n";

fn alert(status: &str) -> Value {
    alert_json("HighMemory", status)
}

/// A temp dir holding the config, the alerts file and the outbox of `monitor notify-deliver`.
struct NotifyTest {
    dir: tempfile::TempDir,
}

impl NotifyTest {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("monitor.toml"), config).unwrap();
        Self { dir }
    }

    fn outbox(&self) -> std::path::PathBuf {
        self.dir.path().join("outbox")
    }

    fn command(&self, alerts: &Value, timeout: &str) -> Command {
        let alert_file = self.dir.path().join("alerts.json");
        std::fs::write(&alert_file, alerts.to_string()).unwrap();
        let mut cmd = Command::new(monitor_bin());
        cmd.args(["notify-deliver", "--config"])
            .arg(self.dir.path().join("monitor.toml"))
            .arg("--outbox")
            .arg(self.outbox())
            .arg("--alert-json")
            .arg(alert_file)
            .args(["--timeout", timeout])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs to completion; panics with its stderr unless it exits 0.
    fn send(&self, alerts: &Value) -> Output {
        let out = self
            .command(alerts, "20s")
            .output()
            .expect("running monitor notify-deliver");
        assert!(
            out.status.success(),
            "monitor notify-deliver failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Waits for a child with a deadline (killing it then), returning its output.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn alertmanager_receives_firing_then_resolved() {
    require_root();
    let am = Alertmanager::start(free_port());
    let t = NotifyTest::new(&format!(
        "{FAST}[[notifier]]\nkind = \"alertmanager\"\nurl = \"{}\"\n",
        am.url("")
    ));
    t.send(&json!([alert("firing")]));
    let a = am
        .alert_named("HighMemory")
        .expect("the firing alert in GET /api/v2/alerts");
    assert_eq!(a["status"]["state"], "active", "{a}");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["labels"]["target"], "trading-api");
    assert_eq!(a["labels"]["instance"], "host:8001");
    assert_eq!(a["annotations"]["summary"], "memory high");
    assert_eq!(a["startsAt"], "2024-03-01T12:00:00.000Z");

    t.send(&json!([alert("resolved")]));
    // Alertmanager leaves resolved alerts out of its list; should one show, it has ended.
    if let Some(a) = am.alert_named("HighMemory") {
        assert_eq!(a["endsAt"], "2024-03-01T12:05:00.000Z", "{a}");
    }
}

#[test]
fn alertmanager_down_then_back_gets_the_alert() {
    require_root();
    let port = free_port();
    let storage = Alertmanager::start(port).stop();
    let t = NotifyTest::new(&format!(
        "{FAST}[[notifier]]\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}\"\n"
    ));
    let child = t
        .command(&json!([alert("firing")]), "60s")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Several failed attempts while it is down, then it comes back on the same port.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        std::fs::read_dir(t.outbox().join("alertmanager"))
            .unwrap()
            .count()
            == 1,
        "the undelivered notification is in the outbox"
    );
    let am = Alertmanager::start_in(port, storage);
    let out = wait_output(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}:\n{stderr}", out.status);
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{port}/api/v2/alerts"))
            && stderr.contains("retrying in"),
        "the warning names the URL and the delay:\n{stderr}"
    );
    let a = am
        .alert_named("HighMemory")
        .expect("the alert after Alertmanager came back");
    assert_eq!(a["status"]["state"], "active", "{a}");
}

#[test]
fn webhook_gets_the_alertmanager_webhook_shape() {
    require_root();
    let (port, requests) = http_receiver();
    let t = NotifyTest::new(&format!(
        "{FAST}[[notifier]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n"
    ));
    t.send(&json!([alert("firing")]));
    let (head, body) = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body["version"], "4", "{body}");
    assert_eq!(body["groupKey"], "{}:{alertname=\"HighMemory\"}");
    assert_eq!(body["truncatedAlerts"], 0);
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "webhook");
    assert_eq!(body["groupLabels"], json!({"alertname": "HighMemory"}));
    assert_eq!(body["commonLabels"]["target"], "trading-api");
    assert_eq!(body["commonAnnotations"]["summary"], "memory high");
    assert!(body["externalURL"].is_string());
    let a = &body["alerts"][0];
    for key in [
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    ] {
        assert!(a.get(key).is_some(), "alerts[0].{key} missing: {body}");
    }
    assert_eq!(a["status"], "firing");
    assert_eq!(
        a["labels"],
        json!({"alertname": "HighMemory", "severity": "warning", "target": "trading-api", "instance": "host:8001"})
    );
    assert_eq!(a["startsAt"], "2024-03-01T12:00:00.000Z");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    // What Alertmanager itself computes for these labels.
    assert_eq!(a["fingerprint"], "9ca6cb2d188bf313");

    t.send(&json!([alert("resolved")]));
    let (_, body) = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["alerts"][0]["endsAt"], "2024-03-01T12:05:00.000Z");
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|f| f.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

#[test]
fn the_outbox_survives_a_restart() {
    require_root();
    let port = free_port();
    let t = NotifyTest::new(&format!(
        "{FAST}[[notifier]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n"
    ));
    // Nobody listens: it gives up waiting, and says where the notification is kept.
    let out = t
        .command(&json!([alert("firing")]), "1500ms")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let queue = t.outbox().join("webhook");
    assert!(
        stderr.contains(&queue.display().to_string()),
        "the error names the outbox:\n{stderr}"
    );
    assert_eq!(count_entries(&queue), 1);

    // The "restarted daemon" sends what the outbox holds, with nothing new to send.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (tx, requests) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let _ = tx.send(read_request(stream));
    });
    t.send(&json!([]));
    let body = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "HighMemory");
    assert_eq!(count_entries(&queue), 0);
}

/// Reads one HTTP request, answers 200 and returns its JSON body.
fn read_request(mut stream: TcpStream) -> Value {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// A minimal SMTP sink: accepts every message and hands its DATA to the test.
fn smtp_sink() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut reply = |s: &str| stream.write_all(s.as_bytes()).is_ok();
            if !reply("220 sink ESMTP\r\n") {
                continue;
            }
            let mut envelope = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" | "HELO" => reply("250 sink\r\n"),
                    "MAIL" | "RCPT" => {
                        envelope.push_str(&line);
                        reply("250 ok\r\n")
                    }
                    "DATA" => {
                        reply("354 end with .\r\n");
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if reader.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        let _ = tx.send(format!("{envelope}\r\n{data}"));
                        reply("250 queued\r\n")
                    }
                    "QUIT" => {
                        reply("221 bye\r\n");
                        break;
                    }
                    _ => reply("250 ok\r\n"),
                };
            }
        }
    });
    (port, rx)
}

#[test]
fn email_arrives_with_the_subject() {
    require_root();
    let (port, messages) = smtp_sink();
    let t = NotifyTest::new(&format!(
        "{FAST}[[notifier]]\nkind = \"email\"\nsmtp = \"127.0.0.1:{port}\"\n\
         from = \"monitor@localhost\"\nto = [\"oncall@localhost\", \"ops@localhost\"]\n"
    ));
    t.send(&json!([alert("firing")]));
    let message = messages.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        message.contains("Subject: [FIRING] HighMemory on trading-api (warning)\r\n"),
        "{message}"
    );
    assert!(
        message.contains("MAIL FROM:<monitor@localhost>"),
        "{message}"
    );
    assert!(message.contains("RCPT TO:<oncall@localhost>"), "{message}");
    assert!(message.contains("RCPT TO:<ops@localhost>"), "{message}");
    assert!(message.contains("Value:   1536"), "{message}");
    assert!(message.contains("memory high"), "{message}");

    t.send(&json!([alert("resolved")]));
    let message = messages.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        message.contains("Subject: [RESOLVED] HighMemory on trading-api (warning)\r\n"),
        "{message}"
    );
}
