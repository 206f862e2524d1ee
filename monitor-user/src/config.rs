//! The TOML configuration (`--config FILE`). Every field has a default, so a missing file at the
//! default path means defaults; an explicit path that is missing or wrong is an error that names
//! the file, line and key.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde::Deserialize;

use crate::{
    alerts::{
        rules::{Rule, parse_rules, with_defaults},
        spike::SpikeConfig,
    },
    notify::{NotifierConfig, NotifyOptions},
};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where /metrics is served. Loopback by default: exposing it is a decision.
    pub listen: SocketAddr,
    pub cadence: Cadence,
    pub window: WindowConfig,
    pub alerting: AlertingConfig,
    /// Delivery options shared by every notifier (retries, timeouts).
    pub notify: NotifyOptions,
    /// `[[notifier]]`: where alert notifications go (a log channel is always on).
    #[serde(rename = "notifier")]
    pub notifiers: Vec<NotifierConfig>,
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
    /// Events kept for /api/events.
    pub events_kept: usize,
}

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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            cadence: Cadence::default(),
            window: WindowConfig::default(),
            alerting: AlertingConfig::default(),
            notify: NotifyOptions::default(),
            notifiers: Vec::new(),
            rule_tables: Vec::new(),
            rules: with_defaults(Vec::new()),
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
        config
            .validate()
            .with_context(|| format!("in config file {}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let c = &self.cadence;
        for (key, d) in [
            ("cadence.cpu_memory", c.cpu_memory),
            ("cadence.vms", c.vms),
            ("cadence.fds_threads", c.fds_threads),
            ("cadence.discovery", c.discovery),
        ] {
            anyhow::ensure!(
                d >= Duration::from_millis(100),
                "{key} = {d:?} is below the 100ms minimum"
            );
        }
        anyhow::ensure!(
            self.window.peak >= c.cpu_memory,
            "window.peak ({:?}) is shorter than cadence.cpu_memory ({:?})",
            self.window.peak,
            c.cpu_memory
        );
        Ok(())
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
        assert!(format!("{e:#}").contains("cadence.vms"));
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
