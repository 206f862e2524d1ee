//! Chat-robot notifiers (DingTalk, WeCom, Feishu, Slack, Telegram) against fake robots started here
//! on loopback: tests/servers/im_robots.py answers as each platform documents (its token, its
//! signature, its rate limits, its message schema and escaping rules) and records every request.
//! Through the hidden `monitor notify-deliver` (as notify.rs), the public `monitor notify test` and
//! `monitor check-config`.
mod common;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{robots::Robot, *};
use serde_json::{Value, json};

const EXTERNAL_URL: &str = "http://monitor.example:8001";
/// Retries fast so that a robot coming back is noticed within a second.
const FAST: &str = "[notify]\nretry_initial = \"200ms\"\nretry_max = \"1s\"\ntimeout = \"2s\"\n\
                    external_url = \"http://monitor.example:8001\"\n";
const PLATFORMS: [&str; 5] = ["dingtalk", "wecom", "feishu", "slack", "telegram"];

fn firing(names: &[String]) -> Vec<Value> {
    names.iter().map(|n| alert_json(n, "firing")).collect()
}

/// All five, DingTalk and Feishu signing.
fn five_robots() -> Vec<Robot> {
    PLATFORMS
        .iter()
        .map(|&p| {
            let r = Robot::new(p);
            if matches!(p, "dingtalk" | "feishu") {
                r.signed().started()
            } else {
                r.started()
            }
        })
        .collect()
}

/// Their `[[notifier]]` tables.
fn notifiers(robots: &[Robot], url_file: bool) -> String {
    robots.iter().map(|r| r.notifier(url_file, "")).collect()
}

fn text_of(record: &Value) -> &str {
    record["text"].as_str().unwrap_or("")
}

/// Each name in exactly one accepted message, and once in it.
fn assert_each_once(r: &Robot, names: &[String]) {
    let messages = r.messages();
    for name in names {
        let counts: Vec<usize> = messages
            .iter()
            .map(|m| text_of(m).matches(name.as_str()).count())
            .collect();
        assert!(
            counts.iter().sum::<usize>() == 1,
            "{}: {name} should be in exactly one accepted message, once; times per message: \
             {counts:?}; texts: {:#?}",
            r.platform,
            messages.iter().map(text_of).collect::<Vec<_>>()
        );
    }
}

/// How a run of monitor went; its output went to files (a debug log would fill a pipe).
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// A temp dir holding the config, the alerts file, the outbox and the output of one monitor.
struct NotifyTest {
    dir: tempfile::TempDir,
}

impl NotifyTest {
    /// `notifiers`: `[[notifier]]` tables, after the fast retries.
    fn new(notifiers: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let config = format!(
            "{FAST}\n[alerting]\nstate_dir = \"{}\"\n{notifiers}",
            state.display()
        );
        std::fs::write(dir.path().join("monitor.toml"), config).unwrap();
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("monitor.toml")
    }

    fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }

    fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Starts `monitor ARGS` with its stdout and stderr going to files.
    fn spawn(&self, args: &[&str], rust_log: &str) -> Child {
        let out = File::create(self.dir.path().join("stdout")).unwrap();
        let err = File::create(self.dir.path().join("stderr")).unwrap();
        Command::new(monitor_bin())
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting monitor")
    }

    /// `monitor notify-deliver` with `alerts` (an alert, a batch or an array of batches).
    fn spawn_notify(&self, alerts: &Value, timeout: &str, extra: &[&str], log: &str) -> Child {
        let alert_file = self.dir.path().join("alerts.json");
        std::fs::write(&alert_file, alerts.to_string()).unwrap();
        let (config, outbox) = (self.config(), self.outbox());
        let mut args = vec!["notify-deliver", "--config", path_str(&config), "--outbox"];
        args.extend([path_str(&outbox), "--alert-json", path_str(&alert_file)]);
        args.extend(["--timeout", timeout]);
        args.extend(extra);
        self.spawn(&args, log)
    }

    /// Waits for a monitor (killing it after `limit`).
    fn wait(&self, mut child: Child, started: Instant, limit: Duration) -> Run {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            status,
            stdout: self.output("stdout"),
            stderr: self.output("stderr"),
            took: started.elapsed(),
        }
    }

    fn run(&self, alerts: &Value, timeout: &str, extra: &[&str]) -> Run {
        let started = Instant::now();
        let child = self.spawn_notify(alerts, timeout, extra, "warn");
        self.wait(child, started, Duration::from_secs(40))
    }

    /// Runs to completion; panics with its stderr unless it exits 0.
    fn send(&self, alerts: &Value, extra: &[&str]) -> Run {
        let run = self.run(alerts, "15s", extra);
        assert!(
            run.status.success(),
            "monitor notify-deliver failed ({}) after {:?}:\n{}",
            run.status,
            run.took,
            run.stderr
        );
        run
    }

    /// The public `monitor notify test --config FILE`.
    fn notify_test(&self) -> Run {
        let started = Instant::now();
        let config = self.config();
        let child = self.spawn(&["notify", "test", "--config", path_str(&config)], "warn");
        self.wait(child, started, Duration::from_secs(20))
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

#[test]
fn every_platform_accepts_a_firing_then_resolved_alert() {
    let robots = five_robots();
    let t = NotifyTest::new(&notifiers(&robots, false));
    for (run, status, word) in [(1, "firing", "FIRING"), (2, "resolved", "RESOLVED")] {
        if run == 2 {
            // Slack and Telegram take one message a second: the second run is a new process,
            // which cannot know what the first one sent.
            std::thread::sleep(Duration::from_millis(1200));
        }
        t.send(&json!([alert_json("HighMemory", status)]), &[]);
        for r in &robots {
            let messages = r.messages();
            assert!(
                r.rejected().is_empty(),
                "{}: the robot refused requests: {:#?}",
                r.platform,
                r.rejected()
            );
            assert_eq!(
                messages.len(),
                run,
                "{}: one message per run; after the {status} run: {messages:#?}",
                r.platform
            );
            let m = &messages[run - 1];
            for want in ["HighMemory", word, "trading-api"] {
                assert!(
                    text_of(m).contains(want),
                    "{}: the {status} message's text lacks {want:?}: {m:#}",
                    r.platform
                );
            }
            // In the text for most, in a link's href for Telegram (whose text is without tags).
            assert!(
                m["body"].to_string().contains(EXTERNAL_URL),
                "{}: no link to {EXTERNAL_URL} in the {status} message: {m:#}",
                r.platform
            );
        }
    }
}

#[test]
fn a_wrong_signature_is_refused_once_and_not_retried() {
    let ding = Robot::new("dingtalk")
        .signed()
        .give_monitor_secret("SECdingtalkWrongOne4u")
        .started();
    let feishu = Robot::new("feishu")
        .signed()
        .give_monitor_secret("SECfeishuWrongOne4u")
        .started();
    let telegram = Robot::new("telegram")
        .give_monitor_token("4242:AAHwrongTelegramToken")
        .started();
    // The robots' tokens are in their URLs: from url_file, which makes the whole URL a secret.
    let t = NotifyTest::new(&format!(
        "{}{}{}",
        ding.notifier(true, ""),
        feishu.notifier(true, ""),
        telegram.notifier(false, "")
    ));
    let run = t.run(&json!([alert_json("HighMemory", "firing")]), "15s", &[]);
    assert!(
        !run.status.success(),
        "monitor exited 0 though every robot refused it:\n{}",
        run.stderr
    );
    assert!(
        run.took < Duration::from_secs(10),
        "a refusal for good ends the run at once, not at the 15 s timeout: took {:?}\n{}",
        run.took,
        run.stderr
    );
    // Time for a retry that should not come (retry_max is 1 s).
    std::thread::sleep(Duration::from_secs(3));
    for (r, reason, errmsg) in [
        (&ding, "sign", "sign not match"),
        (&feishu, "sign", "sign match fail"),
        (&telegram, "token", "Unauthorized"),
    ] {
        let records = r.records();
        assert!(
            records.len() == 1 && records[0]["reason"] == reason,
            "{}: exactly one request, refused for {reason:?} and never retried: {records:#?}",
            r.platform
        );
        let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains(errmsg)).collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: the platform's {errmsg:?} reported once:\n{}",
            r.platform,
            run.stderr
        );
        for secret in r.secrets() {
            assert!(
                !run.stderr.contains(&secret) && !run.stdout.contains(&secret),
                "{}: monitor's output shows the secret {secret:?}:\n{}",
                r.platform,
                run.stderr
            );
        }
    }
}

#[test]
fn a_rate_limited_robot_gets_everything_once_it_recovers() {
    let robots: Vec<Robot> = PLATFORMS
        .iter()
        .map(|&p| Robot::start(p, &["--limited-for", "3"]))
        .collect();
    let t = NotifyTest::new(&notifiers(&robots, false));
    let names: Vec<String> = ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
        .iter()
        .map(|n| format!("Disk{n}Full"))
        .collect();
    let batches: Vec<Value> = names
        .iter()
        .map(|n| json!([alert_json(n, "firing")]))
        .collect();
    t.send(&json!(batches), &["--batch-interval", "100ms"]);
    for r in &robots {
        assert_each_once(r, &names);
        let rejected = r.rejected();
        assert!(
            rejected.iter().any(|x| x["reason"] == "limited"),
            "{}: monitor sent nothing while the robot was throttling: {rejected:#?}",
            r.platform
        );
        let wrong: Vec<&Value> = rejected
            .iter()
            .filter(|x| x["reason"] != "limited" && x["reason"] != "rate")
            .collect();
        assert!(wrong.is_empty(), "{}: refused: {wrong:#?}", r.platform);
    }
}

fn alert_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("Alert{i:02}")).collect()
}

#[test]
fn fifty_alerts_firing_together_reach_a_rate_limited_robot_in_few_messages() {
    // DingTalk's documented 20 messages a minute, on both sides.
    let ding = Robot::start("dingtalk", &[]);
    let t = NotifyTest::new(&ding.notifier(false, ""));
    let names = alert_names(50);
    t.send(&json!(firing(&names)), &[]);
    let rejected = ding.rejected();
    assert!(rejected.is_empty(), "refused: {rejected:#?}");
    assert_each_once(&ding, &names);
    let messages = ding.messages();
    let bytes: usize = messages.iter().map(|m| m["body"].to_string().len()).sum();
    let bound = bytes.div_ceil(4000) + 1;
    println!(
        "50 alerts firing together: {} messages, {bytes} body bytes",
        messages.len()
    );
    assert!(
        messages.len() <= bound.min(20),
        "50 alerts firing together took {} messages for {bytes} bytes of bodies (at most {} \
         expected): {:#?}",
        messages.len(),
        bound.min(20),
        messages.iter().map(text_of).collect::<Vec<_>>()
    );
}

#[test]
fn fifty_alerts_in_quick_batches_keep_to_a_configured_rate() {
    let ding = Robot::start("dingtalk", &["--rate", "3/2"]);
    let t = NotifyTest::new(&ding.notifier(false, "rate_limit = \"3/2s\"\n"));
    let names = alert_names(50);
    let batches: Vec<Vec<Value>> = names.chunks(2).map(firing).collect();
    t.send(&json!(batches), &["--batch-interval", "40ms"]);
    let over: Vec<Value> = ding
        .rejected()
        .into_iter()
        .filter(|x| x["reason"] == "rate")
        .collect();
    assert!(
        over.is_empty(),
        "monitor went over its configured 3 per 2 s: {over:#?}"
    );
    assert_each_once(&ding, &names);
    let n = ding.messages().len();
    println!("50 alerts in 25 batches 40 ms apart at 3 per 2 s: {n} messages");
    assert!(n <= 25, "{n} messages for 25 batches");
}

/// Every file under `dir` now (some may go as they are read).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn secrets_stay_out_of_logs_and_the_outbox() {
    let mut robots = [
        Robot::new("dingtalk").signed(),
        Robot::new("feishu").signed(),
        Robot::new("telegram"),
    ];
    let t = NotifyTest::new(&notifiers(&robots, true));
    let secrets: Vec<String> = robots.iter().flat_map(Robot::secrets).collect();
    let leaks = |what: &str, text: &str| {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{what} shows the secret {s:?}:\n{text}"
            );
        }
    };
    let started = Instant::now();
    let child = t.spawn_notify(
        &json!([alert_json("HighMemory", "firing")]),
        "20s",
        &[],
        "debug",
    );
    // While the robots are down, the notifications wait in the outbox: read everything there.
    let mut seen = 0;
    let poll = |seen: &mut usize| {
        for f in files_under(&t.outbox()) {
            if let Ok(bytes) = std::fs::read(&f) {
                *seen += 1;
                leaks(&f.display().to_string(), &String::from_utf8_lossy(&bytes));
            }
        }
    };
    while started.elapsed() < Duration::from_secs(2) {
        poll(&mut seen);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen > 0,
        "nothing in the outbox {} while the robots were down",
        t.outbox().display()
    );
    for r in &mut robots {
        r.launch(&[]);
    }
    let mut child = child;
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(25) {
        poll(&mut seen);
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = t.wait(child, started, Duration::from_secs(25));
    assert!(
        run.status.success(),
        "monitor did not deliver once the robots were up:\n{}",
        run.stderr
    );
    leaks("monitor's stderr (RUST_LOG=debug)", &run.stderr);
    leaks("monitor's stdout", &run.stdout);
    // What is left: the outbox, and whatever else monitor wrote beside it (no secret is in the
    // config or the alerts; its output was checked above).
    for f in files_under(t.dir.path()) {
        leaks(
            &f.display().to_string(),
            &String::from_utf8_lossy(&std::fs::read(&f).unwrap()),
        );
    }
    let shown = format!("http://127.0.0.1:{}/***", robots[0].port);
    assert!(
        run.stderr.contains(&shown),
        "the DingTalk URL shown as {shown} while it was down:\n{}",
        run.stderr
    );
    for r in &robots {
        assert_eq!(r.messages().len(), 1, "{}: {:#?}", r.platform, r.records());
    }
}

#[test]
fn notify_test_sends_one_test_message_through_every_channel() {
    let mut robots = five_robots();
    let t = NotifyTest::new(&notifiers(&robots, false));
    let run = t.notify_test();
    assert!(
        run.status.success(),
        "monitor notify test failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 5, "one line per notifier:\n{}", run.stdout);
    for r in &robots {
        assert_eq!(
            lines.iter().filter(|l| l.contains(r.platform)).count(),
            1,
            "one line names {}:\n{}",
            r.platform,
            run.stdout
        );
        assert_eq!(r.messages().len(), 1, "{}: {:#?}", r.platform, r.records());
        assert!(
            r.rejected().is_empty(),
            "{}: {:#?}",
            r.platform,
            r.rejected()
        );
    }

    // Slack and Telegram take one message a second.
    std::thread::sleep(Duration::from_millis(1200));
    robots[3].stop();
    let run = t.notify_test();
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !run.status.success(),
        "exit 0 though the slack robot is down:\n{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.contains("slack") && !l.trim_end().ends_with("ok")),
        "the failing notifier (slack) named:\n{said}"
    );
    for r in robots.iter().filter(|r| r.platform != "slack") {
        assert_eq!(r.messages().len(), 2, "{}: {:#?}", r.platform, r.records());
    }
}

#[test]
fn check_config_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let token_file = file("token", "4242:AAHcheckConfigToken");
    let secret_file = file("secret", "SECcheckConfigFromFile");
    let cases = [
        (
            "chat_id",
            format!(
                "[[notifier]]\nkind = \"telegram\"\ntoken_file = \"{token_file}\"\n\
                 api_url = \"http://127.0.0.1:9\"\n"
            ),
        ),
        (
            "secret",
            format!(
                "[[notifier]]\nkind = \"dingtalk\"\n\
                 url = \"http://127.0.0.1:9/robot/send?access_token=x\"\n\
                 secret = \"SECcheckConfigInline\"\nsecret_file = \"{secret_file}\"\n"
            ),
        ),
        (
            "rate_limit",
            "[[notifier]]\nkind = \"wecom\"\nurl = \"http://127.0.0.1:9/cgi-bin/webhook/send?key=x\"\n\
             rate_limit = \"20 per minute\"\n"
                .to_string(),
        ),
        (
            "template",
            "[[notifier]]\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/services/T000/B000/x\"\n\
             template = \"{{ alerts | }}\"\n"
                .to_string(),
        ),
    ];
    for (key, notifier) in cases {
        let before = format!("{FAST}\n");
        let first = before.lines().count() + 1;
        let last = first + notifier.lines().count() - 1;
        let path = file("monitor.toml", &format!("{before}{notifier}"));
        let out = Command::new(monitor_bin())
            .args(["check-config", &path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{key}: check-config passed:\n{notifier}"
        );
        assert!(
            err.contains(&path),
            "{key}: the error names the file {path}:\n{err}"
        );
        let lines = line_numbers(&err);
        assert!(
            lines.iter().any(|n| (first..=last).contains(n)),
            "{key}: the error names a line of the notifier (lines {first}-{last}), as \
             `:N:` or `line N`; found {lines:?}:\n{err}"
        );
        assert!(err.contains(key), "{key}: the error names the key:\n{err}");
        assert!(
            !err.contains("SECcheckConfig"),
            "{key}: the error shows a secret:\n{err}"
        );
    }
}

/// The line numbers a message gives, as `:N:` or `line N`.
fn line_numbers(text: &str) -> Vec<usize> {
    let number = |s: &str| -> Option<(usize, usize)> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        Some((s[..digits].parse().ok()?, digits))
    };
    let mut found = Vec::new();
    for (i, _) in text.match_indices(':') {
        if let Some((n, len)) = number(&text[i + 1..])
            && text[i + 1 + len..].starts_with(':')
        {
            found.push(n);
        }
    }
    let lower = text.to_ascii_lowercase();
    for (i, m) in lower.match_indices("line ") {
        if let Some((n, _)) = number(&lower[i + m.len()..]) {
            found.push(n);
        }
    }
    found
}
