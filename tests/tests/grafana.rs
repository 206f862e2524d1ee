//! The Grafana dashboard (deploy/grafana/monitor.json). Grafana itself cannot run here, and what
//! breaks a dashboard is its queries: a real Prometheus scrapes `monitor run` watching the tests'
//! FastAPI app under load, with an alert firing and CPU spikes, and every panel's query, with
//! the variables resolved and substituted the way Grafana does, must return data through
//! Prometheus' HTTP API. The JSON's structure (the variable chain, the rows, every query scoped
//! to the chosen daemon and target) is checked without root.
mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    prometheus::{JOB, Prometheus},
    *,
};
use serde_json::{Value, json};

/// The rows the dashboard must have, in this order (the issue's list; an overview may precede).
const ROWS: [&str; 8] = [
    "CPU",
    "Memory",
    "File descriptors and threads",
    "Syscalls",
    "Faults and context switches",
    "Request types",
    "Alerts",
    "Daemon health",
];

/// The template variables, in the order each one's query depends on the one before.
const VARIABLES: [&str; 4] = ["datasource", "job", "instance", "target"];

/// Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval), where
/// the scrape interval is the data source's setting (15 s unless changed): 1m for any time range
/// up to several hours, which is what an imported dashboard runs with.
const RATE_INTERVAL: &str = "1m";

/// The span each range query covers, and its step (Prometheus' scrape interval here).
const RANGE_SECONDS: u64 = 90;
const STEP: &str = "1s";

/// The name the daemon gives its target.
const TARGET: &str = "api";

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/monitor.json")
}

fn load_dashboard() -> Value {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn datasource_variable() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Every panel, those inside collapsed rows included, each named "row / title" (titles repeat:
/// the overview has a "CPU" of its own).
fn all_panels(dashboard: &Value) -> Vec<(String, &Value)> {
    let title = |p: &Value| p["title"].as_str().unwrap_or("(untitled)").to_owned();
    let mut out = Vec::new();
    let mut row = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            row = title(panel);
            out.push((row.clone(), panel));
            for nested in panel["panels"].as_array().into_iter().flatten() {
                out.push((format!("{row} / {}", title(nested)), nested));
            }
        } else {
            out.push((format!("{row} / {}", title(panel)), panel));
        }
    }
    out
}

/// Each query of the panels: (panel's name, expr, instant).
fn queries(dashboard: &Value) -> Vec<(String, String, bool)> {
    all_panels(dashboard)
        .into_iter()
        .filter(|(_, p)| p["type"] != "row")
        .flat_map(|(name, p)| {
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                let expr = t["expr"].as_str().unwrap_or("").to_owned();
                (name.clone(), expr, t["instant"] == true)
            })
        })
        .collect()
}

/// A variable's query text: Grafana stores it as a string or as `{"query": ...}`.
fn variable_query(variable: &Value) -> &str {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["query"].as_str())
        .unwrap_or("")
}

/// Each `{...}` label-matcher block of a PromQL expression, braces included, with the metric
/// name before it (empty for none).
fn selectors(expr: &str) -> Vec<(&str, &str)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = expr[from..].find('{').map(|i| from + i) {
        let close = expr[open..].find('}').map_or(expr.len(), |i| open + i + 1);
        let before = expr[..open].trim_end();
        let name_start = before.rfind(|c| !is_name(c)).map_or(0, |i| i + 1);
        out.push((&before[name_start..], &expr[open..close]));
        from = close;
    }
    out
}

/// Identifiers of the exporter's and the scrape's series that are not followed by a selector:
/// they would match every job and instance.
fn bare_metrics(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            let series = name == "up"
                || ["app_", "monitor_", "process_", "scrape_"]
                    .iter()
                    .any(|p| name.starts_with(p));
            if series && !expr[i..].trim_start().starts_with('{') {
                out.push(name);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every matcher of `label` in the expression: (operator, value).
fn matchers<'a>(expr: &'a str, label: &str) -> Vec<(&'a str, &'a str)> {
    selectors(expr)
        .into_iter()
        .flat_map(|(_, block)| block.trim_matches(['{', '}']).split(','))
        .filter_map(|m| {
            let m = m.trim();
            let op_at = m.find(['=', '!'])?;
            if m[..op_at].trim() != label {
                return None;
            }
            let rest = &m[op_at..];
            let op_len = rest.find('"')?;
            Some((rest[..op_len].trim(), rest[op_len..].trim_matches('"')))
        })
        .collect()
}

#[test]
fn dashboard_is_importable_and_every_query_is_scoped_to_the_variables() {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let d = load_dashboard();
    let mut problems = Vec::new();

    assert_eq!(d["schemaVersion"], 39, "schemaVersion");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "a uid");
    assert!(d["id"].is_null(), "id null: Grafana assigns it on import");
    // Importable as-is: the data source is a variable, never an input the import must map.
    assert!(
        !text.contains("${DS_"),
        "no __inputs data source references"
    );

    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, VARIABLES, "template variables, in chain order");
    let var = |name: &str| variables.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    // Each query variable selects on the variables before it, and on nothing hard-coded.
    for (name, label, needs) in [
        ("job", "job", &[][..]),
        ("instance", "instance", &["job=\"$job\""][..]),
        (
            "target",
            "target",
            &["job=\"$job\"", "instance=\"$instance\""][..],
        ),
    ] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}: a query variable");
        assert_eq!(
            v["datasource"],
            datasource_variable(),
            "{name}: its data source"
        );
        let query = variable_query(v);
        let (_, listed) = label_values(query)
            .unwrap_or_else(|| panic!("{name}: {query:?} is not label_values(...)"));
        assert_eq!(listed, label, "{name}: {query:?} lists another label");
        for need in needs {
            assert!(query.contains(need), "{name}: {query:?} lacks {need}");
        }
    }

    let rows: Vec<&str> = all_panels(&d)
        .into_iter()
        .filter(|(_, p)| p["type"] == "row")
        .filter_map(|(_, p)| p["title"].as_str())
        .collect();
    let in_order: Vec<&str> = rows.iter().copied().filter(|r| ROWS.contains(r)).collect();
    assert_eq!(
        in_order, ROWS,
        "the issue's rows, in order (rows: {rows:?})"
    );

    let mut ids = std::collections::BTreeSet::new();
    for (title, p) in all_panels(&d) {
        if !p["id"].as_u64().is_some_and(|id| ids.insert(id)) {
            problems.push(format!("{title}: duplicate or missing id {}", p["id"]));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"] != datasource_variable() {
            problems.push(format!("{title}: panel data source {}", p["datasource"]));
        }
        if p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{title}: no unit"));
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        for t in targets {
            if t["datasource"] != datasource_variable() {
                problems.push(format!("{title}: query data source {}", t["datasource"]));
            }
        }
    }

    for (title, expr, _) in queries(&d) {
        let mut fault = |what: String| problems.push(format!("{title}: {what} in {expr}"));
        if expr.is_empty() {
            fault("an empty query".into());
        }
        for name in bare_metrics(&expr) {
            fault(format!("{name} without a selector"));
        }
        for (metric, block) in selectors(&expr) {
            for need in ["job=\"$job\"", "instance=\"$instance\""] {
                if !block.contains(need) {
                    fault(format!("{metric}{block} lacks {need}"));
                }
            }
            let by_target =
                block.contains("target=~\"$target\"") || block.contains("target=\"$target\"");
            if metric.starts_with("app_") && !by_target {
                fault(format!("{metric}{block} is not selected by $target"));
            }
        }
        for (label, variable) in [("job", "$job"), ("instance", "$instance")] {
            for (op, value) in matchers(&expr, label) {
                if (op, value) != ("=", variable) {
                    fault(format!("{label}{op}\"{value}\" (hard-coded)"));
                }
            }
        }
        // Range selectors follow the scrape interval Grafana knows, never a fixed span.
        for range in expr.split('[').skip(1) {
            let range = range.split(']').next().unwrap_or("");
            if range != "$__rate_interval" {
                fault(format!("range [{range}] instead of [$__rate_interval]"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n{}",
        path.display(),
        problems.join("\n")
    );
}

/// `label_values(SELECTOR, LABEL)` or `label_values(LABEL)`: (selector, label).
fn label_values(query: &str) -> Option<(&str, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = match inner.rsplit_once(',') {
        Some((s, l)) => (s.trim(), l.trim()),
        None => ("", inner.trim()),
    };
    Some((selector, label))
}

/// A template variable's value as Grafana writes it into a Prometheus query.
enum Substitution {
    /// A single-value variable: the value, backslashes doubled.
    Plain(String),
    /// A multi-value or include-all variable (every value chosen here, as "All" is when it has
    /// no custom all value): regex-escaped, joined by `|`, in parentheses when more than one.
    Regex(Vec<String>),
}

impl Substitution {
    fn text(&self) -> String {
        match self {
            Self::Plain(v) => v.replace('\\', "\\\\"),
            Self::Regex(values) => {
                let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
                match escaped.as_slice() {
                    [one] => one.clone(),
                    many => format!("({})", many.join("|")),
                }
            }
        }
    }
}

/// Grafana's escaping of a multi-value variable's values for a PromQL regex inside a string.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Replaces `$name` and `${name}`; a variable it does not know is an error naming it.
fn interpolate(text: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text}"))?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable ${name} in {text}"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Whether a query answer holds at least one finite value: a panel of NaN draws nothing.
fn has_data(data: &Value) -> bool {
    let finite = |v: &Value| {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    data["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["values"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(finite))
                || (s["value"].is_array() && finite(&s["value"]))
        })
    })
}

/// uvicorn (uvloop + httptools) serving the tests' FastAPI app on loopback.
struct App {
    child: Child,
    port: u16,
}

impl App {
    fn start(stats_dir: &Path) -> Self {
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "uvicorn",
                "app:app",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ])
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--no-access-log",
            ])
            .current_dir(servers_dir())
            .env("APP_STATS_DIR", stats_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting uvicorn");
        let app = Self { child, port };
        wait_listening(port, "uvicorn");
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rounds of load.py against the app until stopped. Every other round runs with the app's
/// stats directory removed: the file it writes after each request then fails to open (ENOENT)
/// and the request answers 500, so the failed-opens and status panels have more than one value
/// to show, from the app's own behaviour.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u32, String>>>,
}

impl Load {
    fn start(port: u16, stats_dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            while !stopped.load(Ordering::Relaxed) {
                if rounds % 2 == 0 {
                    std::fs::create_dir_all(&stats_dir).map_err(|e| e.to_string())?;
                } else {
                    std::fs::remove_dir_all(&stats_dir).map_err(|e| e.to_string())?;
                }
                let out = Command::new(python())
                    .current_dir(servers_dir())
                    .args(["load.py", "--port", &port.to_string()])
                    .args(["--clients", "2", "--requests", "8"])
                    .args(["--mix", "analysis=1,order=1,post=1,health=1"])
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "load.py failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                rounds += 1;
                // Idle gaps between the bursts: each burst is a new CPU spike.
                std::thread::sleep(Duration::from_millis(400));
            }
            Ok(rounds)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the rounds; how many ran.
    fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        let result = self.thread.take().unwrap().join().unwrap();
        result.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Resolves a label_values() variable the way Grafana does, with the variables before it
/// substituted: the label's values on the series its selector matches.
fn resolve(prom: &Prometheus, variable: &Value, vars: &BTreeMap<&str, String>) -> Vec<String> {
    let query = interpolate(variable_query(variable), vars).unwrap();
    let (selector, label) =
        label_values(&query).unwrap_or_else(|| panic!("{query:?} is not label_values(...)"));
    let mut params = vec![];
    if !selector.is_empty() {
        params.push(("match[]", selector));
    }
    let data = prom
        .api(&format!("/api/v1/label/{label}/values"), &params)
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    data.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_panel_query_returns_data_from_a_real_prometheus() {
    require_root();
    python();
    let dashboard = load_dashboard();
    let started = Instant::now();

    let scratch = tempfile::tempdir().unwrap();
    let stats_dir = scratch.path().join("stats");
    let app = App::start(&stats_dir);
    // A rule that fires at once and stays firing (uvicorn always has a thread), and a static
    // spike threshold each burst of load crosses: monitor_alerts_firing and app_cpu_spikes_total
    // have series only once those happened.
    let config = r#"
[alerting.spike]
above_percent = 5

[[rule]]
name = "DashboardCheck"
metric = "threads"
above = 0
"#;
    let daemon = Daemon::start_with(
        &["--pid", &app.child.id().to_string()],
        &["--name", TARGET, "--require-ebpf"],
        config,
    );
    let load = Load::start(app.port, stats_dir);
    let prom = Prometheus::start(daemon.port);
    prom.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(90);

    // The variables, each resolved once the one before it has a value.
    let templating = dashboard["templating"]["list"].as_array().unwrap();
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("datasource", "prometheus".into());
    for variable in templating.iter().filter(|v| v["type"] == "query") {
        let name = variable["name"].as_str().unwrap();
        let values = loop {
            let values = resolve(&prom, variable, &vars);
            if !values.is_empty() {
                break values;
            }
            assert!(
                Instant::now() < deadline,
                "variable {name} resolved to nothing; Prometheus' log:\n{}",
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let substitution = if variable["multi"] == true || variable["includeAll"] == true {
            Substitution::Regex(values.clone())
        } else {
            // Grafana selects the first value of a single-value variable.
            Substitution::Plain(values[0].clone())
        };
        vars.insert(name, substitution.text());
        eprintln!("${name}: {values:?} -> {}", vars[name]);
    }
    assert_eq!(vars["job"], JOB, "the job Prometheus scrapes the daemon as");
    assert_eq!(vars["instance"], format!("127.0.0.1:{}", daemon.port));
    assert_eq!(vars["target"], TARGET);
    vars.insert("__rate_interval", RATE_INTERVAL.into());
    vars.insert("__interval", STEP.into());
    vars.insert("__range", format!("{RANGE_SECONDS}s"));

    // Every query, retried until it has data: rates need two scrapes in their window, and the
    // request, alert and spike series appear once the load has made them.
    let mut pending: Vec<(String, String, bool, String)> = queries(&dashboard)
        .into_iter()
        .map(|(title, expr, instant)| {
            let expr = interpolate(&expr, &vars).unwrap_or_else(|e| panic!("{title}: {e}"));
            (title, expr, instant, String::new())
        })
        .collect();
    let total = pending.len();
    loop {
        let end = unix_now();
        let (start_s, end_s) = (
            format!("{:.3}", end - RANGE_SECONDS as f64),
            format!("{end:.3}"),
        );
        for (_, expr, instant, outcome) in &mut pending {
            let answer = if *instant {
                prom.api(
                    "/api/v1/query",
                    &[("query", expr.as_str()), ("time", &end_s)],
                )
            } else {
                prom.api(
                    "/api/v1/query_range",
                    &[
                        ("query", expr.as_str()),
                        ("start", &start_s),
                        ("end", &end_s),
                        ("step", STEP),
                    ],
                )
            };
            *outcome = match answer {
                Ok(data) if has_data(&data) => String::new(),
                Ok(_) => "no data".into(),
                Err(e) => format!("error {e}"),
            };
        }
        pending.retain(|(_, _, _, outcome)| !outcome.is_empty());
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let rounds = load.finish();
    eprintln!(
        "{total} queries, {rounds} rounds of load, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        pending.is_empty(),
        "{} of {total} dashboard queries returned no data by the deadline:\n{}",
        pending.len(),
        pending
            .iter()
            .map(|(title, expr, _, outcome)| format!("- {title}: {expr}\n  {outcome}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
