//! The TOML configuration (`--config FILE`). Every field has a default, so a missing file at the
//! default path means defaults; an explicit path that is missing or wrong is an error that names
//! the file, line and key.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    alerts::{
        rules::{Rule, parse_rules, with_defaults},
        spike::SpikeConfig,
    },
    notify::{NotifierConfig, NotifyOptions},
    store::db::Retention,
};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where /metrics is served. Loopback by default: exposing it is a decision.
    pub listen: SocketAddr,
    /// TLS, basic auth and headers for the endpoint, in exporter-toolkit's web config format;
    /// relative to this file's directory. `--web.config.file` overrides it.
    pub web_config_file: Option<PathBuf>,
    /// `[http]`: limits of the endpoint.
    pub http: HttpConfig,
    pub cadence: Cadence,
    pub window: WindowConfig,
    pub alerting: AlertingConfig,
    /// Delivery options shared by every notifier (retries, timeouts).
    pub notify: NotifyOptions,
    /// `[[notifier]]`: where alert notifications go (a log channel is always on).
    #[serde(rename = "notifier")]
    pub notifiers: Vec<NotifierConfig>,
    /// `[requests]`: routes of the requests family.
    pub requests: RequestsConfig,
    /// `[history]`: the embedded store of every sample.
    pub history: HistoryConfig,
    /// `[[rule]]` as written; checked by alerts::rules::parse_rules, which names lines and keys.
    #[serde(rename = "rule")]
    rule_tables: Vec<toml::Value>,
    /// The built-in rules with the user's added (or replacing them by name).
    #[serde(skip)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// Where alert state and the notification outbox are kept across restarts.
    pub state_dir: PathBuf,
    /// How often a still-firing alert is sent again (Alertmanager expects re-sends).
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// How long a firing alert's value must stay clear before it resolves (no flapping).
    #[serde(with = "humantime_serde")]
    pub min_firing: Duration,
    /// CPU spike detection.
    pub spike: SpikeConfig,
    /// Events kept for /api/events (1 to [`MAX_EVENTS_KEPT`]).
    pub events_kept: usize,
}

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The shortest cadence: below it sampling costs more than it tells.
const MIN_CADENCE: Duration = Duration::from_millis(100);
/// The longest cadence: a sampling period over a day leaves no rate or average worth the name,
/// and keeps the sampling loop's `Instant` arithmetic far from overflow.
pub const MAX_CADENCE: Duration = DAY;
/// The longest peak window: it holds every sample of its span (the peak is a scan), so memory
/// and cost per sample grow with span / cadence; a day at 5 s is 17 280 samples.
const MAX_PEAK_WINDOW: Duration = DAY;
/// The engine evaluates once per CPU/memory sample: a shorter repeat means every sample.
const MIN_REPEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Beyond a week a re-send is as good as none; Alertmanager resolves an alert that is not
/// re-sent within its resolve_timeout (5 m by default) long before.
const MAX_REPEAT_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// An alert held firing for over a day after its value cleared tells no one anything.
/// (0 is allowed: resolve at the first clear sample.)
const MAX_MIN_FIRING: Duration = DAY;

/// Every event is held in memory and /api/events serves them all in one answer; a spike is a
/// few KB of JSON with its syscall tables, so this is a few hundred MB at worst.
pub const MAX_EVENTS_KEPT: usize = 100_000;

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/monitor"),
            repeat_interval: Duration::from_secs(240),
            min_firing: Duration::from_secs(60),
            spike: SpikeConfig::default(),
            events_kept: 1000,
        }
    }
}

/// How often each group of readings is taken (the seed's 5 s / 10 s / 30 s by default).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cadence {
    /// CPU %, memory, and every kernel counter.
    #[serde(with = "humantime_serde")]
    pub cpu_memory: Duration,
    #[serde(with = "humantime_serde")]
    pub vms: Duration,
    #[serde(with = "humantime_serde")]
    pub fds_threads: Duration,
    /// How often to look for new processes of a --comm target and check the target is alive.
    #[serde(with = "humantime_serde")]
    pub discovery: Duration,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Span of the sliding-window peaks of CPU % and memory.
    #[serde(with = "humantime_serde")]
    pub peak: Duration,
}

/// Limits of the HTTP endpoint, against a client (or many) that holds it up.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once (1 to 10 000); more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Request line and headers together (8 KiB to 1 MiB); more gets 431.
    pub max_header_bytes: usize,
    /// For the TLS handshake and each request's head (100 ms to 10 min).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        // A scraper or two and a few browsers need a handful; 64 leaves room and bounds the
        // memory a flood can take (a connection is about 100 KiB with its buffers).
        Self {
            max_connections: 64,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            web_config_file: None,
            http: HttpConfig::default(),
            cadence: Cadence::default(),
            window: WindowConfig::default(),
            alerting: AlertingConfig::default(),
            notify: NotifyOptions::default(),
            notifiers: Vec::new(),
            requests: RequestsConfig::default(),
            history: HistoryConfig::default(),
            rule_tables: Vec::new(),
            rules: with_defaults(Vec::new()),
        }
    }
}

/// `[history]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    pub enabled: bool,
    /// The store's file; `history.db` in `[alerting] state_dir` when not given.
    pub path: Option<PathBuf>,
    /// How long raw samples (at the sampling cadence) are kept.
    #[serde(with = "humantime_serde")]
    pub raw_retention: Duration,
    /// How long the per-minute aggregates are kept.
    #[serde(with = "humantime_serde")]
    pub minute_retention: Duration,
    /// How long the per-hour aggregates are kept.
    #[serde(with = "humantime_serde")]
    pub hour_retention: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            raw_retention: 14 * DAY,
            minute_retention: 90 * DAY,
            hour_retention: 730 * DAY,
        }
    }
}

impl HistoryConfig {
    /// What each tier keeps.
    pub fn retention(&self) -> Retention {
        Retention {
            raw: self.raw_retention,
            minute: self.minute_retention,
            hour: self.hour_retention,
        }
    }
}

/// The shortest retention of any tier: less keeps nothing a report could use.
const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// The longest: a century, far past any disk.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Config {
    /// The history store's file.
    pub fn history_path(&self) -> PathBuf {
        self.history
            .path
            .clone()
            .unwrap_or_else(|| self.alerting.state_dir.join("history.db"))
    }
}

/// `[requests]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RequestsConfig {
    /// Distinct routes per target; requests beyond go to `route="other"`.
    pub max_routes: usize,
    /// `[[requests.route]] pattern = "/api/orders/{id}"`: templates tried before the heuristic.
    #[serde(rename = "route")]
    pub routes: Vec<RoutePattern>,
    /// Read the application's OpenAPI document (FastAPI serves one) for its route templates.
    pub openapi: bool,
    /// Where it is, on the port the target listens on (loopback).
    pub openapi_path: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutePattern {
    pub pattern: String,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            max_routes: 200,
            routes: Vec::new(),
            openapi: true,
            openapi_path: "/openapi.json".to_owned(),
        }
    }
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            cpu_memory: Duration::from_secs(5),
            vms: Duration::from_secs(10),
            fds_threads: Duration::from_secs(30),
            discovery: Duration::from_secs(1),
        }
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            peak: Duration::from_secs(300),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse_file(&text, path)
    }

    #[cfg(test)]
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_file(text, Path::new("<config>"))
    }

    pub fn parse_file(text: &str, path: &Path) -> anyhow::Result<Self> {
        // toml's message carries the line, column and key.
        let mut config: Self = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("in config file {}", path.display()))?;
        // Rule errors name the file, line and key themselves.
        config.rules = with_defaults(parse_rules(text, path)?);
        crate::notify::parse_notify_settings(text).with_context(|| {
            format!(
                "in config file {}, [notify] or [[notifier]]",
                path.display()
            )
        })?;
        config.validate(&Checker::new(text, path))?;
        if let Some(web) = &mut config.web_config_file {
            // Relative to the file that names it, as the web config's own paths are.
            if web.is_relative() {
                *web = path.parent().unwrap_or(Path::new("")).join(&*web);
            }
        }
        Ok(config)
    }

    /// Values that parsed but are out of range. Every duration has a bound on both sides.
    fn validate(&self, check: &Checker) -> anyhow::Result<()> {
        let c = &self.cadence;
        let a = &self.alerting;
        for (key, d, min, max) in [
            ("cadence.cpu_memory", c.cpu_memory, MIN_CADENCE, MAX_CADENCE),
            ("cadence.vms", c.vms, MIN_CADENCE, MAX_CADENCE),
            (
                "cadence.fds_threads",
                c.fds_threads,
                MIN_CADENCE,
                MAX_CADENCE,
            ),
            ("cadence.discovery", c.discovery, MIN_CADENCE, MAX_CADENCE),
            (
                "window.peak",
                self.window.peak,
                Duration::ZERO,
                MAX_PEAK_WINDOW,
            ),
            (
                "alerting.repeat_interval",
                a.repeat_interval,
                MIN_REPEAT_INTERVAL,
                MAX_REPEAT_INTERVAL,
            ),
            (
                "alerting.min_firing",
                a.min_firing,
                Duration::ZERO,
                MAX_MIN_FIRING,
            ),
            (
                "history.raw_retention",
                self.history.raw_retention,
                MIN_RETENTION,
                MAX_RETENTION,
            ),
            (
                "history.minute_retention",
                self.history.minute_retention,
                MIN_RETENTION,
                MAX_RETENTION,
            ),
            (
                "history.hour_retention",
                self.history.hour_retention,
                MIN_RETENTION,
                MAX_RETENTION,
            ),
        ] {
            let shown = humantime::format_duration;
            if d < min {
                return Err(check.error(
                    key,
                    format!("{key} = {} is below the {} minimum", shown(d), shown(min)),
                ));
            }
            if d > max {
                return Err(check.error(
                    key,
                    format!("{key} = {} is above the {} maximum", shown(d), shown(max)),
                ));
            }
        }
        if self.window.peak < c.cpu_memory {
            return Err(check.error(
                "window.peak",
                format!(
                    "window.peak ({:?}) is shorter than cadence.cpu_memory ({:?})",
                    self.window.peak, c.cpu_memory
                ),
            ));
        }
        let h = &self.history;
        for (key, shorter, longer, longer_key) in [
            (
                "history.raw_retention",
                h.raw_retention,
                h.minute_retention,
                "history.minute_retention",
            ),
            (
                "history.minute_retention",
                h.minute_retention,
                h.hour_retention,
                "history.hour_retention",
            ),
        ] {
            // Each tier is made from the finer one: a coarser tier kept for less would lose
            // what it summarises before the finer one does.
            if shorter > longer {
                return Err(check.error(
                    key,
                    format!(
                        "{key} = {} is longer than {longer_key} = {}",
                        humantime::format_duration(shorter),
                        humantime::format_duration(longer)
                    ),
                ));
            }
        }
        let http = &self.http;
        for (key, value, min, max) in [
            ("http.max_connections", http.max_connections, 1, 10_000),
            (
                "http.max_header_bytes",
                http.max_header_bytes,
                8 * 1024,
                1024 * 1024,
            ),
        ] {
            // hyper cannot read a head into less than 8 KiB.
            if !(min..=max).contains(&value) {
                return Err(check.error(key, format!("{key} = {value} is outside {min} to {max}")));
            }
        }
        let timeout = http.header_timeout;
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&timeout) {
            return Err(check.error(
                "http.header_timeout",
                format!(
                    "http.header_timeout = {} is outside 100ms to 10m",
                    humantime::format_duration(timeout)
                ),
            ));
        }
        let kept = self.alerting.events_kept;
        if !(1..=MAX_EVENTS_KEPT).contains(&kept) {
            // 0 is refused rather than read as "keep none": whoever writes it may mean
            // "unlimited" as well, and either reading would surprise the other half.
            return Err(check.error(
                "alerting.events_kept",
                format!(
                    "alerting.events_kept = {kept} is outside 1 to {MAX_EVENTS_KEPT} (the events \
                     kept in memory for /api/events and `monitor events`)"
                ),
            ));
        }
        Ok(())
    }
}

/// Names the file, the line (when the key is written in the file) and the key in errors about
/// values that parsed but are out of range: serde has forgotten where they were by then.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    spans: KeySpans,
}

/// Where each key of the tables [`Config::validate`] checks is written.
#[derive(Default, Deserialize)]
struct KeySpans {
    #[serde(default)]
    cadence: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    window: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    alerting: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    history: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    http: BTreeMap<String, Spanned<toml::Value>>,
}

impl<'a> Checker<'a> {
    fn new(text: &'a str, file: &'a Path) -> Self {
        Self {
            file,
            text,
            // The text already parsed as a Config, so this cannot fail on anything validate sees.
            spans: toml::from_str(text).unwrap_or_default(),
        }
    }

    /// `key` is `table.key`.
    fn line(&self, key: &str) -> Option<usize> {
        let (table, key) = key.split_once('.')?;
        let table = match table {
            "cadence" => &self.spans.cadence,
            "window" => &self.spans.window,
            "alerting" => &self.spans.alerting,
            "history" => &self.spans.history,
            "http" => &self.spans.http,
            _ => return None,
        };
        let offset = table.get(key)?.span().start.min(self.text.len());
        Some(
            self.text.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        )
    }

    fn error(&self, key: &str, message: String) -> anyhow::Error {
        match self.line(key) {
            Some(line) => anyhow::anyhow!("{}:{line}: {message}", self.file.display()),
            None => anyhow::anyhow!("{}: {message}", self.file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_seed_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.cadence.cpu_memory, Duration::from_secs(5));
        assert_eq!(c.cadence.vms, Duration::from_secs(10));
        assert_eq!(c.cadence.fds_threads, Duration::from_secs(30));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8001");
    }

    #[test]
    fn faster_cadences_for_tests() {
        let c = Config::parse(
            "[cadence]\ncpu_memory = \"500ms\"\nvms = \"1s\"\nfds_threads = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(c.cadence.cpu_memory, Duration::from_millis(500));
    }

    #[test]
    fn history_defaults_and_bad_retentions_name_their_line() {
        let c = Config::parse("[alerting]\nstate_dir = \"/s\"\n").unwrap();
        assert!(c.history.enabled);
        assert_eq!(c.history_path(), PathBuf::from("/s/history.db"));
        assert_eq!(c.history.raw_retention, 14 * DAY);
        let c = Config::parse("[history]\npath = \"/h.db\"\nenabled = false\n").unwrap();
        assert_eq!(
            (c.history_path(), c.history.enabled),
            (PathBuf::from("/h.db"), false)
        );
        let e = Config::parse("[history]\n\nraw_retention = \"100d\"\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(":3:")
                && msg.contains("history.raw_retention")
                && msg.contains("minute_retention"),
            "{msg}"
        );
        let e = Config::parse("[history]\nhour_retention = \"1m\"\n").unwrap_err();
        assert!(format!("{e:#}").contains(":2:"), "{e:#}");
        let e = Config::parse("[history]\nretention = \"1d\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("retention"), "{e:#}");
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = Config::parse("listen = \"127.0.0.1:9\"\n[cadence]\ncpu_memroy = \"1s\"\n")
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("line 3") && msg.contains("cpu_memroy"),
            "{msg}"
        );
        let e = Config::parse("[cadence]\nvms = \"soon\"\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("line 2") && msg.contains("vms"), "{msg}");
        let e = Config::parse("[cadence]\nvms = \"1ms\"\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("<config>:2:") && msg.contains("cadence.vms"),
            "{msg}"
        );
    }

    #[test]
    fn durations_out_of_their_range_are_refused_naming_file_line_and_key() {
        for (table, key, value) in [
            ("cadence", "cpu_memory", "10000000000y"),
            ("cadence", "vms", "25h"),
            ("cadence", "fds_threads", "2d"),
            ("cadence", "discovery", "500000000000y"),
            ("window", "peak", "2d"),
            ("alerting", "repeat_interval", "0s"),
            ("alerting", "repeat_interval", "8d"),
            ("alerting", "min_firing", "2d"),
        ] {
            let text = format!("listen = \"127.0.0.1:8001\"\n[{table}]\n{key} = \"{value}\"\n");
            let e = Config::parse(&text).expect_err(&text);
            let msg = format!("{e:#}");
            assert!(
                msg.contains("<config>:3:") && msg.contains(&format!("{table}.{key} = ")),
                "{text}: {msg}"
            );
        }
        let c = Config::parse(
            "[cadence]\ncpu_memory = \"1d\"\n[window]\npeak = \"1d\"\n\
             [alerting]\nrepeat_interval = \"7d\"\nmin_firing = \"0s\"\n",
        )
        .unwrap();
        assert_eq!(c.cadence.cpu_memory, MAX_CADENCE);
    }

    #[test]
    fn events_kept_must_keep_some_and_not_without_bound() {
        for kept in ["0", "10000000000"] {
            let e = Config::parse(&format!("[alerting]\nevents_kept = {kept}\n")).unwrap_err();
            let msg = format!("{e:#}");
            assert!(
                msg.contains("<config>:2:") && msg.contains("alerting.events_kept"),
                "{msg}"
            );
        }
        let c = Config::parse("[alerting]\nevents_kept = 1\n").unwrap();
        assert_eq!(c.alerting.events_kept, 1);
    }

    #[test]
    fn smtp_credentials_in_clear_are_refused_naming_the_file_and_notifier() {
        let e = Config::parse(
            "[[notifier]]\nkind = \"email\"\nsmtp = \"mail.example:25\"\nfrom = \"m@example\"\n\
             to = [\"o@example\"]\nusername = \"m\"\npassword = \"hunter2\"\n",
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        for part in ["<config>", "notifier email", "allow_insecure_auth"] {
            assert!(msg.contains(part), "{part} not in {msg}");
        }
    }

    #[test]
    fn missing_explicit_file_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/monitor.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/monitor.toml"));
    }
}
