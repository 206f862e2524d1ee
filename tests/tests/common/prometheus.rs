//! Debian's `prometheus` on loopback, scraping one `monitor run` every second, with its own
//! storage.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::free_port;

/// The job name the scrape config gives the daemon.
pub const JOB: &str = "monitor";

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes 127.0.0.1:`scrape_port` every second as job [`JOB`].
    pub fn start(scrape_port: u16) -> Self {
        Self::start_jobs(&format!(
            "  - job_name: {JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n"
        ))
    }

    /// With `scrape_configs` (the YAML list's items, indented two spaces) scraped every second.
    pub fn start_jobs(scrape_configs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{scrape_configs}"),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed by `cargo xtask setup --test-deps` (Debian package prometheus)");
        Self { child, port, dir }
    }

    /// Waits for /-/ready (15 s at most).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while ureq::get(&self.url("/-/ready")).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus on port {} not ready; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET of an HTTP API path (`/api/v1/...`): its `data`, or Prometheus' error text.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut request = ureq::get(&self.url(path));
        for (key, value) in params {
            request = request.query(key, value);
        }
        // A bad query is a 400 whose body says why: read the body whatever the status.
        let mut response = request
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| e.to_string())?;
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// The value of an instant query with exactly one result.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let data = self.api("/api/v1/query", &[("query", promql)]).ok()?;
        let result = data["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
