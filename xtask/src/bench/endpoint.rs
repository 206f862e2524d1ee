//! Section 8: what securing the endpoint costs. `/metrics` of two daemons of the same build
//! watching the same process, one plain, one with a web config (TLS and a basic-auth user), each
//! scraped over one keep-alive connection as Prometheus keeps one (curl, which speaks both and
//! times each request on a reused connection), the two interleaved in rounds.
use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::util::{Proc, Scratch, Stats, free_port};

pub struct Params {
    pub rounds: usize,
    /// Requests per round and daemon.
    pub scrapes: usize,
}

impl Params {
    pub fn new(quick: bool) -> Self {
        Self {
            rounds: if quick { 3 } else { 7 },
            scrapes: if quick { 100 } else { 200 },
        }
    }
}

pub struct Endpoint {
    /// Milliseconds per request on a reused connection.
    plain: Vec<f64>,
    secured: Vec<f64>,
    /// A new connection's first request: TCP, then (secured) the TLS handshake and one bcrypt.
    plain_first_ms: Vec<f64>,
    secured_first_ms: Vec<f64>,
}

const PASSWORD: &str = "bench-password";

pub fn measure(scratch: &Scratch, p: &Params) -> anyhow::Result<Endpoint> {
    let dir = scratch.path("endpoint");
    std::fs::create_dir_all(&dir)?;
    make_certificate(&dir)?;
    let hash = bcrypt_hash(PASSWORD)?;
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )?;
    let mut target = Proc::spawn(
        Command::new(&scratch.workload)
            // Every 10 ms an open/close, a page fault and 100 getppid: every series present.
            .args(["mixed", "--millis", "3600000"])
            .stdout(Stdio::null()),
        "the workload",
    )?;
    let plain = Daemon::start(scratch, &dir, target.pid(), None)?;
    let secured = Daemon::start(scratch, &dir, target.pid(), Some(&web))?;
    let ca = dir.join("server.crt");
    let ca = ca.to_str().context("scratch path")?;
    let plain_args: Vec<String> = vec![];
    let secured_args: Vec<String> = vec![
        "--cacert".into(),
        ca.into(),
        "-u".into(),
        format!("prometheus:{PASSWORD}"),
    ];
    let mut e = Endpoint {
        plain: Vec::new(),
        secured: Vec::new(),
        plain_first_ms: Vec::new(),
        secured_first_ms: Vec::new(),
    };
    for round in 0..p.rounds {
        let mut order = [
            (&plain, &plain_args, false),
            (&secured, &secured_args, true),
        ];
        if round % 2 == 1 {
            order.reverse();
        }
        for (daemon, args, is_secured) in order {
            let times = scrape_times(&daemon.url(is_secured), args, p.scrapes)?;
            let (first, rest) = times.split_first().context("no scrape timed")?;
            if is_secured {
                e.secured_first_ms.push(*first);
                e.secured.extend(rest);
            } else {
                e.plain_first_ms.push(*first);
                e.plain.extend(rest);
            }
        }
    }
    target.stop();
    Ok(e)
}

struct Daemon {
    proc: Proc,
    port: u16,
}

impl Daemon {
    fn start(scratch: &Scratch, dir: &Path, pid: u32, web: Option<&Path>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let config = dir.join(format!("monitor-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[alerting]\nstate_dir = \"{}\"\n",
                dir.join(format!("state-{port}")).display()
            ),
        )?;
        let mut cmd = Command::new(&scratch.monitor);
        cmd.args(["run", "--pid", &pid.to_string(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                dir.join(format!("monitor-{port}.log")),
            )?);
        if let Some(web) = web {
            cmd.arg("--web.config.file").arg(web);
        }
        let mut proc = Proc::spawn(&mut cmd, "monitor")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if proc.exited().is_some() || Instant::now() > deadline {
                bail!(
                    "monitor on port {port} did not serve (log in {})",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The first samples, so /metrics has its full set of series.
        std::thread::sleep(Duration::from_secs(6));
        Ok(Self { proc, port })
    }

    fn url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/metrics", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.proc.stop();
    }
}

/// `n` requests on one connection (HTTP/1.1 for both, so only TLS and auth differ): the
/// milliseconds of each, the first including the connection's setup.
fn scrape_times(url: &str, args: &[String], n: usize) -> anyhow::Result<Vec<f64>> {
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "--fail"])
        .args(args)
        .args(["-w", "%{time_total}\\n"])
        // `-o` holds for one URL: one for each.
        .args((0..n).flat_map(|_| ["-o", "/dev/null", url]))
        .output()
        .context("running curl (Debian package curl)")?;
    if !out.status.success() {
        bail!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Ok(l.trim().parse::<f64>()? * 1000.0))
        .collect()
}

fn make_certificate(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ])
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .context("running openssl (Debian package openssl)")?;
    if !status.success() {
        bail!("openssl could not make the bench's certificate");
    }
    Ok(())
}

/// Cost 10, as `htpasswd -B` makes, from Debian's libxcrypt.
fn bcrypt_hash(password: &str) -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))",
            password,
        ])
        .output()
        .context("running python3")?;
    let hash = String::from_utf8(out.stdout)?.trim().to_owned();
    if !hash.starts_with("$2b$10$") {
        bail!("python3's crypt made no bcrypt hash: {hash:?}");
    }
    Ok(hash)
}

impl Endpoint {
    fn p(values: &[f64], q: f64) -> f64 {
        Stats::quantile(values, q)
    }

    pub fn goals(&self) -> Vec<(String, String, Option<bool>)> {
        let p50 = Self::p(&self.secured, 0.5) / Self::p(&self.plain, 0.5);
        let p99 = Self::p(&self.secured, 0.99);
        vec![
            (
                "/metrics over TLS with basic auth, per scrape on a kept connection: p50 <= 1.5x plain HTTP (same run)".into(),
                format!(
                    "{p50:.2}x ({:.3} vs {:.3} ms)",
                    Self::p(&self.secured, 0.5),
                    Self::p(&self.plain, 0.5)
                ),
                Some(p50 <= 1.5),
            ),
            (
                "/metrics over TLS with basic auth: p99 <= 2 ms".into(),
                format!("{p99:.3} ms"),
                Some(p99 <= 2.0),
            ),
        ]
    }

    pub fn method(&self, p: &Params) -> String {
        format!(
            "- **Securing the endpoint (8).** Two `monitor run --pid` of the same build watch one `workload mixed`: one plain, \
             one with `--web.config.file` (TLS with a P-256 certificate made by openssl, one basic-auth user with a cost-10 \
             bcrypt hash from Debian's libxcrypt). 6 s after each serves, {} rounds, the order of the two reversed every other \
             round; in each, `curl --http1.1` makes {} requests to each `/metrics` on one kept connection (as Prometheus \
             keeps one) and times each (`%{{time_total}}`). The first request of a connection (TCP, and for the secured one \
             the TLS handshake and the one bcrypt the verdict cache then saves) is shown apart.\n",
            p.rounds, p.scrapes
        )
    }

    pub fn table(&self) -> String {
        let mut s = String::from(
            "\n`/metrics` plain and secured (TLS + basic auth), same daemon build, same run:\n\n| endpoint | requests | p50 ms | p99 ms | max ms | first request of a connection, median ms |\n|---|---|---|---|---|---|\n",
        );
        for (label, v, first) in [
            ("plain HTTP", &self.plain, &self.plain_first_ms),
            ("TLS + basic auth", &self.secured, &self.secured_first_ms),
        ] {
            let _ = writeln!(
                s,
                "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                v.len(),
                Self::p(v, 0.5),
                Self::p(v, 0.99),
                Self::p(v, 1.0),
                Self::p(first, 0.5)
            );
        }
        s
    }
}
