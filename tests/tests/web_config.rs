//! The endpoint's web config (`--web.config.file`, Prometheus exporter-toolkit's format): TLS,
//! basic auth, client certificates, headers and reloads, against a real Prometheus, curl,
//! openssl-made certificates and promtool's own verdict on each file; and the HTTP limits.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, monitor_bin, prometheus::Prometheus, wait_listening};

/// Certificates made by openssl in a temporary directory: a CA, a server certificate for
/// 127.0.0.1, and client certificates.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        pki.issue("ca", "server", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        pki.ca("client-ca");
        pki.issue("client-ca", "client", "subjectAltName=DNS:prometheus.test");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl is installed by `cargo xtask test` (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
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
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    fn issue(&self, ca: &str, name: &str, extension: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), format!("{extension}\n")).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}

/// A bcrypt hash (cost 10, as `htpasswd -B` makes) from an implementation monitor does not use:
/// Debian's libxcrypt through python3's crypt module.
fn bcrypt_hash(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))",
            password,
        ])
        .output()
        .expect("python3 (Debian's) makes the bcrypt hashes");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$2b$10$"), "python3's crypt made {hash:?}");
    hash
}

/// `monitor run --no-ebpf` (the endpoint is what is tested) on `listen` with `web_config`.
struct Daemon {
    child: Child,
    port: u16,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(web_config: Option<&Path>, toml: &str, listen_ip: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("monitor.toml");
        std::fs::write(
            &config,
            format!(
                "{toml}\n[alerting]\nstate_dir = \"{}\"\n[history]\nenabled = false\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let port = free_port();
        let stderr = dir.path().join("stderr");
        let mut cmd = Command::new(monitor_bin());
        cmd.args(["run", "--no-ebpf", "--pid", &std::process::id().to_string()])
            .args(["--listen", &format!("{listen_ip}:{port}"), "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if let Some(web) = web_config {
            cmd.arg("--web.config.file").arg(web);
        }
        let child = cmd.spawn().expect("starting monitor run");
        wait_listening(port, "monitor run");
        Self {
            child,
            port,
            stderr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One curl request: the status (0 when no HTTP answer came), the response head, the body and
/// curl's exit code.
struct Reply {
    status: u16,
    head: String,
    body: String,
    exit: i32,
}

fn curl(url: &str, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let out: Output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "%{http_code}", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed by `cargo xtask test` (Debian package curl)");
    Reply {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        head: std::fs::read_to_string(&head).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        exit: out.status.code().unwrap_or(-1),
    }
}

fn write(path: &Path, text: &str) {
    // Through a rename, as certificate tools and config managers replace files.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// TLS with the server certificate and `extra` YAML after the tls_server_config keys.
fn tls_config(pki: &Pki, tls_extra: &str, rest: &str) -> PathBuf {
    let path = pki.path("web.yml");
    write(
        &path,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{tls_extra}{rest}"
        ),
    );
    path
}

/// Writes `text` to `web` and asks both: whether `promtool check web-config` accepts it, whether
/// `monitor check-config` of a TOML naming it does, and monitor's error.
fn verdicts(web: &Path, text: &str) -> (bool, bool, String) {
    std::fs::write(web, text).unwrap();
    let toml = web.with_file_name("monitor.toml");
    std::fs::write(&toml, "web_config_file = \"web.yml\"\n").unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "web-config"])
        .arg(web)
        .output()
        .expect("promtool is installed by `cargo xtask test` (Debian package prometheus)");
    let monitor = Command::new(monitor_bin())
        .arg("check-config")
        .arg(&toml)
        .output()
        .unwrap();
    (
        promtool.status.success(),
        monitor.status.success(),
        String::from_utf8_lossy(&monitor.stderr).into_owned(),
    )
}

#[test]
fn promtool_and_monitor_agree_on_which_web_configs_are_valid() {
    let pki = Pki::new();
    let hash = bcrypt_hash("s3cret");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    // (name, file, what monitor's error must name when both refuse it)
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), ""),
        ("tls", tls.to_owned(), ""),
        (
            "tls, users and headers",
            format!(
                "{tls}  min_version: TLS13\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  prometheus: {hash}\n"
            ),
            "",
        ),
        (
            "verified client certificates",
            format!(
                "{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n"
            ),
            "",
        ),
        (
            // (client_allowed_sans is newer than Debian 12's promtool: the client-certificate
            // test below covers it.)
            "client certificates if given",
            format!(
                "{tls}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: client-ca.crt\n"
            ),
            "",
        ),
        (
            "any client certificate",
            format!("{tls}  client_auth_type: RequireAnyClientCert\n"),
            "",
        ),
        (
            "suites and curves",
            format!(
                "{tls}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\n"
            ),
            "",
        ),
        ("unknown key", format!("{tls}  cert_fil: x\n"), "line 4"),
        ("junk", "}}{{\n".to_owned(), "web.yml"),
        (
            "no key",
            "tls_server_config:\n  cert_file: server.crt\n".to_owned(),
            "key_file",
        ),
        (
            "missing cert file",
            tls.replace("server.crt", "nope.crt"),
            "nope.crt",
        ),
        (
            "key of another certificate",
            tls.replace("server.key", "client.key"),
            "key_file",
        ),
        (
            "bad hash",
            "basic_auth_users:\n  prometheus: hunter2\n".to_owned(),
            "line 2: basic_auth_users.prometheus",
        ),
        (
            "header not settable",
            "http_server_config:\n  headers:\n    Server: x\n".to_owned(),
            "Server",
        ),
        (
            "header value",
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n".to_owned(),
            "X-Content-Type-Options",
        ),
        (
            "CA without auth type",
            format!("{tls}  client_ca_file: client-ca.crt\n"),
            "client_ca_file",
        ),
        (
            "auth type",
            format!("{tls}  client_auth_type: Sometimes\n"),
            "client_auth_type",
        ),
        (
            "TLS version",
            format!("{tls}  min_version: TLS14\n"),
            "min_version",
        ),
        (
            "curve",
            format!("{tls}  curve_preferences: [Curve25519]\n"),
            "curve_preferences",
        ),
        (
            "cipher",
            format!("{tls}  cipher_suites: [TLS_INVENTED]\n"),
            "cipher_suites",
        ),
    ];
    let dir = pki.dir.path();
    let mut disagreements = Vec::new();
    let web = dir.join("web.yml");
    for (name, text, names) in &cases {
        let (promtool_accepts, monitor_accepts, error) = verdicts(&web, text);
        if promtool_accepts != monitor_accepts {
            disagreements.push(format!(
                "{name}: promtool {promtool_accepts}, monitor {monitor_accepts} ({error})"
            ));
        } else if !monitor_accepts {
            assert!(
                error.contains(&web.display().to_string()) && error.contains(names),
                "{name}: monitor's error should name {} and {names:?}: {error}",
                web.display()
            );
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");

    // Where monitor is stricter than promtool, on purpose (each said in the module docs).
    for (name, text, names) in [
        (
            "TLS 1.1 at most",
            format!("{tls}  max_version: TLS11\n"),
            "TLS 1.2 and 1.3 only",
        ),
        (
            "verifying clients without a CA",
            format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
            "needs the CA",
        ),
        (
            "a CBC suite",
            format!("{tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"),
            "is not offered",
        ),
        (
            "CurveP521",
            format!("{tls}  curve_preferences: [CurveP521]\n"),
            "CurveP521",
        ),
    ] {
        let (promtool_accepts, monitor_accepts, error) = verdicts(&web, &text);
        assert!(promtool_accepts, "{name}: promtool now refuses it too");
        assert!(
            !monitor_accepts && error.contains(names),
            "{name}: monitor should refuse it naming {names:?}: {error}"
        );
    }
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_a_wrong_password_is_refused() {
    let pki = Pki::new();
    let web = tls_config(
        &pki,
        "",
        &format!(
            "basic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash("s3cret")
        ),
    );
    let daemon = Daemon::start(Some(&web), "", "127.0.0.1");
    std::fs::write(pki.path("right"), "s3cret\n").unwrap();
    std::fs::write(pki.path("wrong"), "guess\n").unwrap();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            pki.path("ca.crt").display(),
            pki.path(password).display(),
            daemon.port
        )
    };
    let prometheus = Prometheus::start_jobs(&format!(
        "{}{}",
        job("right", "right"),
        job("wrong", "wrong")
    ));
    prometheus.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let right = prometheus.query("up{job=\"right\"}");
        let wrong = prometheus.query("up{job=\"wrong\"}");
        let app_up = prometheus.query("app_up{job=\"right\"}");
        if right == Some(1.0) && wrong == Some(0.0) && app_up == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "up{{job=right}} = {right:?} (want 1), up{{job=wrong}} = {wrong:?} (want 0), \
             app_up = {app_up:?}; prometheus' log:\n{}\nmonitor's:\n{}",
            prometheus.log(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Prometheus says why the wrong one is down.
    let targets = prometheus.api("/api/v1/targets", &[]).unwrap();
    let wrong = targets["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["labels"]["job"] == "wrong")
        .unwrap()
        .clone();
    assert!(
        wrong["lastError"].as_str().unwrap_or("").contains("401"),
        "{wrong}"
    );
}

#[test]
fn credentials_are_checked_and_an_unknown_user_costs_what_a_known_one_does() {
    let pki = Pki::new();
    let web = tls_config(
        &pki,
        "",
        &format!(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=600\nbasic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash("s3cret")
        ),
    );
    let daemon = Daemon::start(Some(&web), "", "127.0.0.1");
    let url = format!("https://127.0.0.1:{}/metrics", daemon.port);
    let ca = pki.path("ca.crt");
    let ca = ca.to_str().unwrap();
    let ok = curl(&url, &["--cacert", ca, "-u", "prometheus:s3cret"]);
    assert_eq!(ok.status, 200, "{}", ok.head);
    assert!(ok.body.contains("app_up{"), "{}", ok.body);
    assert!(
        ok.head.to_lowercase().contains("x-frame-options: deny")
            && ok
                .head
                .to_lowercase()
                .contains("strict-transport-security: max-age=600"),
        "{}",
        ok.head
    );
    for (what, args) in [
        ("no credentials", vec!["--cacert", ca]),
        (
            "a wrong password",
            vec!["--cacert", ca, "-u", "prometheus:guess"],
        ),
        ("an unknown user", vec!["--cacert", ca, "-u", "root:s3cret"]),
    ] {
        let reply = curl(&url, &args);
        assert_eq!(reply.status, 401, "{what}: {}", reply.head);
        assert!(
            reply
                .head
                .to_lowercase()
                .contains("www-authenticate: basic"),
            "{what}: {}",
            reply.head
        );
        // The configured headers go on refusals too.
        assert!(
            reply.head.to_lowercase().contains("x-frame-options: deny"),
            "{what}"
        );
        assert!(!reply.body.contains("app_up"), "{what}: {}", reply.body);
    }
    // Every route is behind the password, health included (as exporter-toolkit does).
    for path in ["/", "/-/healthy", "/api/live", "/api/events"] {
        let url = format!("https://127.0.0.1:{}{path}", daemon.port);
        assert_eq!(curl(&url, &["--cacert", ca]).status, 401, "{path}");
        assert_eq!(
            curl(&url, &["--cacert", ca, "-u", "prometheus:s3cret"]).status,
            200,
            "{path}"
        );
    }
    // An unknown user takes a bcrypt like a known user with a wrong password: without it the
    // refusal would take ~1 ms against ~50 ms and tell which names exist. Fresh passwords each
    // time, so no verdict comes from the cache.
    let median = |user: &str| {
        let mut times: Vec<f64> = (0..7)
            .map(|i| {
                let start = Instant::now();
                let reply = curl(
                    &url,
                    &["--cacert", ca, "-u", &format!("{user}:try-{user}-{i}")],
                );
                assert_eq!(reply.status, 401);
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[3]
    };
    let known = median("prometheus");
    let unknown = median("mallory");
    let ratio = unknown / known;
    assert!(
        (0.6..1.6).contains(&ratio),
        "an unknown user's refusal took {unknown:.4} s, a known user's {known:.4} s (ratio {ratio:.2})"
    );
}

#[test]
fn plain_http_to_a_tls_endpoint_gets_no_answer() {
    let pki = Pki::new();
    let web = tls_config(&pki, "", "");
    let daemon = Daemon::start(Some(&web), "", "127.0.0.1");
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("HTTP/") && !text.contains("app_up"),
        "plain HTTP got an answer: {text:?}"
    );
    let reply = curl(&format!("http://127.0.0.1:{}/metrics", daemon.port), &[]);
    assert_eq!(reply.status, 0, "curl over plain HTTP: {}", reply.head);
    // And the same endpoint answers over TLS.
    let reply = curl(
        &format!("https://127.0.0.1:{}/metrics", daemon.port),
        &["--cacert", pki.path("ca.crt").to_str().unwrap()],
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn a_required_client_certificate_lets_its_holder_in_and_no_one_else() {
    let pki = Pki::new();
    pki.ca("stranger-ca");
    pki.issue(
        "stranger-ca",
        "stranger",
        "subjectAltName=DNS:prometheus.test",
    );
    pki.issue("client-ca", "other-name", "subjectAltName=DNS:someone.test");
    let web = tls_config(
        &pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n  client_allowed_sans: [prometheus.test]\n",
        "",
    );
    let daemon = Daemon::start(Some(&web), "", "127.0.0.1");
    let url = format!("https://127.0.0.1:{}/metrics", daemon.port);
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    let with = |name: &str| {
        curl(
            &url,
            &[
                "--cacert",
                &p("ca.crt"),
                "--cert",
                &p(&format!("{name}.crt")),
                "--key",
                &p(&format!("{name}.key")),
            ],
        )
    };
    let ok = with("client");
    assert_eq!(
        ok.status, 200,
        "the client CA's certificate: curl exit {}",
        ok.exit
    );
    for (what, reply) in [
        ("no certificate", curl(&url, &["--cacert", &p("ca.crt")])),
        ("another CA's certificate", with("stranger")),
        ("a SAN not allowed", with("other-name")),
    ] {
        assert_eq!(reply.status, 0, "{what}: got HTTP {}", reply.status);
        assert_ne!(reply.exit, 0, "{what}");
    }
}

#[test]
fn renewed_certificates_and_new_users_apply_without_a_restart() {
    let pki = Pki::new();
    let web = tls_config(
        &pki,
        "",
        &format!("basic_auth_users:\n  alice: {}\n", bcrypt_hash("a-pass")),
    );
    let daemon = Daemon::start(Some(&web), "", "127.0.0.1");
    let url = format!("https://127.0.0.1:{}/metrics", daemon.port);
    let p = |n: &str| pki.path(n).to_str().unwrap().to_owned();
    assert_eq!(
        curl(&url, &["--cacert", &p("ca.crt"), "-u", "alice:a-pass"]).status,
        200
    );

    // A certificate from a new CA, written over the old files as a renewal does.
    pki.ca("ca2");
    pki.issue("ca2", "server2", "subjectAltName=IP:127.0.0.1");
    write(
        &pki.path("server.crt"),
        &std::fs::read_to_string(pki.path("server2.crt")).unwrap(),
    );
    write(
        &pki.path("server.key"),
        &std::fs::read_to_string(pki.path("server2.key")).unwrap(),
    );
    let renewed = curl(&url, &["--cacert", &p("ca2.crt"), "-u", "alice:a-pass"]);
    assert_eq!(
        renewed.status, 200,
        "the renewed certificate: curl exit {}",
        renewed.exit
    );
    assert_eq!(
        curl(&url, &["--cacert", &p("ca.crt"), "-u", "alice:a-pass"]).status,
        0
    );

    // A new user, then a broken file: the last good config stays in force.
    tls_config(
        &pki,
        "",
        &format!(
            "basic_auth_users:\n  alice: {}\n  bob: {}\n",
            bcrypt_hash("a-pass"),
            bcrypt_hash("b-pass")
        ),
    );
    assert_eq!(
        curl(&url, &["--cacert", &p("ca2.crt"), "-u", "bob:b-pass"]).status,
        200
    );
    write(&web, "tls_server_config:\n  cert_fil: x\n");
    assert_eq!(
        curl(&url, &["--cacert", &p("ca2.crt"), "-u", "bob:b-pass"]).status,
        200
    );
    assert_eq!(curl(&url, &["--cacert", &p("ca2.crt")]).status, 401);
    let log = daemon.log();
    assert!(
        log.contains("web config reloaded")
            && log.contains("cert_fil")
            && log.contains("stays in force"),
        "{log}"
    );
    assert!(
        !log.contains("b-pass") && !log.contains("$2b$"),
        "a secret in the log: {log}"
    );
}

#[test]
fn connections_beyond_the_limit_wait_and_oversized_heads_are_refused() {
    let daemon = Daemon::start(None, "[http]\nmax_connections = 2\n", "127.0.0.1");
    let url = format!("http://127.0.0.1:{}/-/healthy", daemon.port);
    assert_eq!(curl(&url, &[]).status, 200);
    // Two idle connections take both slots; a third request waits for one of them.
    let first = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    let _second = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let waiting = curl(&url, &["--max-time", "1"]);
    assert_eq!(
        waiting.status, 0,
        "a third connection was served past the limit of 2"
    );
    drop(first);
    let served = curl(&url, &[]);
    assert_eq!(
        served.status, 200,
        "served once a slot freed: curl exit {}",
        served.exit
    );

    // The head's size limit (16 KiB by default): 431, not a buffer that grows.
    drop(_second);
    let big = format!("X-Big: {}", "a".repeat(32 * 1024));
    let reply = curl(&url, &["-H", &big]);
    assert_eq!(reply.status, 431, "{}", reply.head);
}

#[test]
fn an_exposed_endpoint_without_tls_and_users_starts_with_a_loud_warning() {
    let open = Daemon::start(None, "", "0.0.0.0");
    let pki = Pki::new();
    let web = tls_config(
        &pki,
        "",
        &format!(
            "basic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash("s3cret")
        ),
    );
    let secured = Daemon::start(Some(&web), "", "0.0.0.0");
    let local = Daemon::start(None, "", "127.0.0.1");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        open.log().contains("THE ENDPOINT IS OPEN") && open.log().contains("--web.config.file"),
        "{}",
        open.log()
    );
    assert!(
        !secured.log().contains("THE ENDPOINT IS OPEN"),
        "{}",
        secured.log()
    );
    assert!(
        !local.log().contains("THE ENDPOINT IS OPEN"),
        "{}",
        local.log()
    );
}

#[test]
fn the_targets_command_line_and_environment_are_never_served() {
    // A target started with a password on its command line and a token in its environment, as
    // services too often are.
    let mut target = Command::new("python3")
        .args([
            "-c",
            "import time; time.sleep(120)",
            "--db-password=CMDLINE-S3CRET",
        ])
        .env("API_TOKEN", "ENVIRON-S3CRET")
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            "[cadence]\ncpu_memory = \"300ms\"\n[alerting]\nstate_dir = \"{}\"\n[history]\nenabled = false\n\n[[rule]]\nname = \"AlwaysOn\"\nmetric = \"threads\"\nabove = 0\nfor = \"0s\"\nseverity = \"info\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut daemon = Command::new(monitor_bin())
        .args(["run", "--pid", &target.id().to_string(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port, "monitor run");
    std::thread::sleep(Duration::from_secs(2));
    let mut served = String::new();
    for path in ["/metrics", "/api/events", "/api/live", "/-/ready"] {
        let reply = curl(&format!("http://127.0.0.1:{port}{path}"), &[]);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        served.push_str(&reply.body);
    }
    let _ = daemon.kill();
    let out = daemon.wait_with_output().unwrap();
    let _ = target.kill();
    let _ = target.wait();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        served.contains("AlwaysOn"),
        "the rule's event should be served: {served}"
    );
    for secret in ["CMDLINE-S3CRET", "ENVIRON-S3CRET"] {
        assert!(!served.contains(secret), "{secret} served");
        assert!(!log.contains(secret), "{secret} logged");
    }
    // What the state directory holds is the daemon's own: 0700, its files 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let state = dir.path().join("state");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "{}", state.display());
    let mut stack = vec![state];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
            }
        }
    }
}
