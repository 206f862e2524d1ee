//! Fake chat robots (tests/servers/im_robots.py: DingTalk, WeCom, Feishu, Slack, Telegram as
//! their platforms document them), started on loopback, and what they recorded.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

use super::{free_port, servers_dir};

/// Debian's python3: the robots use its standard library only.
const PYTHON: &str = "/usr/bin/python3";
/// A supergroup, as Telegram numbers them: the robot applies the group limit (20/min) too.
pub const CHAT_ID: i64 = -1001234567890;

/// One fake robot of one platform (a Python process), with the token and secret it expects, and
/// the token and secret monitor is given (the same unless a test says otherwise).
pub struct Robot {
    pub platform: &'static str,
    pub port: u16,
    token: String,
    secret: Option<String>,
    given_token: String,
    given_secret: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Robot {
    /// Not started yet: its port, token and files are chosen.
    pub fn new(platform: &'static str) -> Self {
        let port = free_port();
        // Strings that cannot turn up in a log by chance; Telegram's has its `ID:SECRET` form.
        let token = if platform == "telegram" {
            format!("{port}7:AAH{port}tgSecretPart")
        } else {
            format!("{platform}Tok{port}x9Q")
        };
        Self {
            platform,
            port,
            given_token: token.clone(),
            token,
            secret: None,
            given_secret: None,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    /// Signing on (DingTalk, Feishu), with the secret given to monitor too.
    pub fn signed(mut self) -> Self {
        let secret = format!("SEC{}{}s3cr3tK", self.platform, self.port);
        self.given_secret = Some(secret.clone());
        self.secret = Some(secret);
        self
    }

    pub fn give_monitor_secret(mut self, secret: &str) -> Self {
        self.given_secret = Some(secret.into());
        self
    }

    pub fn give_monitor_token(mut self, token: &str) -> Self {
        self.given_token = token.into();
        self
    }

    pub fn start(platform: &'static str, extra: &[&str]) -> Self {
        let mut r = Self::new(platform);
        r.launch(extra);
        r
    }

    pub fn started(mut self) -> Self {
        self.launch(&[]);
        self
    }

    /// Starts the robot on its port and waits for its `ready`.
    pub fn launch(&mut self, extra: &[&str]) {
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} (Debian's python3, standard library only) runs the fake chat robots: \
             apt-get install python3"
        );
        let mut cmd = Command::new(PYTHON);
        cmd.arg(servers_dir().join("im_robots.py"))
            .args([
                "--platform",
                self.platform,
                "--port",
                &self.port.to_string(),
            ])
            .arg("--record")
            .arg(self.record_file())
            .args(["--token", &self.token]);
        if let Some(secret) = &self.secret {
            cmd.args(["--secret", secret]);
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tests/servers/im_robots.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        self.child = Some(child);
        assert_eq!(
            line.trim(),
            "ready",
            "the {} robot did not start on port {} (its stderr is above)",
            self.platform,
            self.port
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn record_file(&self) -> PathBuf {
        self.dir.path().join("record.jsonl")
    }

    /// Every request it got, in order (complete lines only).
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.record_file()).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record {l:?}: {e}")))
            .collect()
    }

    /// The messages it accepted.
    pub fn messages(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["accepted"] == true)
            .collect()
    }

    /// The requests it refused (reason, detail and body in each).
    pub fn rejected(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["accepted"] == false)
            .collect()
    }

    /// What no output of monitor may show: tokens and secrets, the robot's and monitor's.
    pub fn secrets(&self) -> Vec<String> {
        let mut all = vec![self.token.clone(), self.given_token.clone()];
        all.extend(self.secret.clone());
        all.extend(self.given_secret.clone());
        // Telegram's secret part alone (the `ID:` before it is public).
        let parts: Vec<String> = all
            .iter()
            .filter_map(|t| t.split_once(':').map(|(_, s)| s.to_string()))
            .collect();
        all.extend(parts);
        all
    }

    pub fn url(&self) -> String {
        let (port, t) = (self.port, &self.given_token);
        match self.platform {
            "dingtalk" => format!("http://127.0.0.1:{port}/robot/send?access_token={t}"),
            "wecom" => format!("http://127.0.0.1:{port}/cgi-bin/webhook/send?key={t}"),
            "feishu" => format!("http://127.0.0.1:{port}/open-apis/bot/v2/hook/{t}"),
            "slack" => format!("http://127.0.0.1:{port}/services/T000/B000/{t}"),
            other => panic!("{other} has no webhook URL"),
        }
    }

    /// Writes `content` to a file of the robot's dir and returns its path, as TOML wants it.
    pub fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    /// Its `[[notifier]]` table: the webhook URL inline or in a `url_file`, the secret (if any)
    /// in a `secret_file`, Telegram's token in a `token_file`; `more` lines appended.
    pub fn notifier(&self, url_file: bool, more: &str) -> String {
        let mut t = format!("\n[[notifier]]\nkind = \"{}\"\n", self.platform);
        if self.platform == "telegram" {
            t += &format!(
                "token_file = \"{}\"\nchat_id = {CHAT_ID}\napi_url = \"http://127.0.0.1:{}\"\n",
                self.file("token", &self.given_token),
                self.port
            );
        } else if url_file {
            t += &format!("url_file = \"{}\"\n", self.file("url", &self.url()));
        } else {
            t += &format!("url = \"{}\"\n", self.url());
        }
        if let Some(secret) = &self.given_secret {
            t += &format!("secret_file = \"{}\"\n", self.file("secret", secret));
        }
        t + more
    }
}

impl Drop for Robot {
    fn drop(&mut self) {
        self.stop();
    }
}
