//! The TOML configuration (`--config FILE`). Every field has a default, so a missing file at the
//! default path means defaults; an explicit path that is missing or wrong is an error that names
//! the file, line and key.
use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where /metrics is served. Loopback by default: exposing it is a decision.
    pub listen: SocketAddr,
    pub cadence: Cadence,
    pub window: WindowConfig,
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
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // toml's message carries the line, column and key.
        let config: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
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
    fn missing_explicit_file_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/monitor.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/monitor.toml"));
    }
}
