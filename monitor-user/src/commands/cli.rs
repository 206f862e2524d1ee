//! Command line.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::collect::ebpf::selection::Family;

#[derive(Debug, Parser)]
#[command(
    name = "monitor",
    version,
    about = "eBPF-assisted profiler and resource monitor for one application",
    long_about = "Watches one application (a process and its descendants, or every process with a name) \
with kernel programs filtered by TGID in the kernel, and /proc. Exports Prometheus metrics, profiles commands \
like `perf stat`, and checks what the host supports. Needs root (or CAP_BPF + CAP_PERFMON) for eBPF."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: sample the target and serve Prometheus metrics on /metrics.
    Run(RunArgs),
    /// Profile a running process for a while, or launch a command and profile it to its exit.
    Stat(StatArgs),
    /// Report what this host supports (kernel, BTF, tracefs, capabilities, each program's attach).
    Check,
    /// Validate a configuration file without running: every error names the file, line and key.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Alert rules: export them for central evaluation.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print the event log (CPU spikes with their context, alert notifications) of a running daemon.
    Events {
        /// Where the daemon serves HTTP.
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: SocketAddr,
        /// Print the raw JSON array.
        #[arg(long)]
        json: bool,
    },
    /// The history store: import and export OpenMetrics text, show its size.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Trend analysis and capacity planning from the history: peak hours, CPU against load,
    /// memory leaks, a forecast with 95 % intervals and the dates thresholds are reached.
    Report(ReportArgs),
    /// Alert notifiers: send a test message through each configured one.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Send the alerts of a JSON file through the configured notifiers and wait until they are
    /// delivered (exit 0) or the timeout passes (exit 2). For the integration tests.
    #[command(hide = true)]
    NotifyDeliver(NotifyDeliverArgs),
    /// Print the completion script for a shell (e.g. `monitor completions bash >
    /// /etc/bash_completion.d/monitor`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (monitor.1 and one per subcommand) into a directory. For packaging.
    #[command(hide = true)]
    Man {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test message through every notifier of a config file, at once and without
    /// retrying, and print each one's answer (exit 0 only if all delivered).
    Test {
        /// The TOML configuration file: its `[notify]` table and `[[notifier]]` array.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Write the Prometheus mixin (a rule file): alerting rules equivalent to the rules
    /// (built-in and from --config), recording rules for dashboards, and alerts on monitor
    /// itself.
    Export {
        /// Prometheus format (the only one).
        #[arg(long, required = true)]
        prometheus: bool,
        /// The daemon's config: its [[rule]] tables, and its cadence (when a sample is stale).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The `target` label the target alerts and recording rules select. Default: every
        /// target (each alert carries its series' `target`).
        #[arg(long)]
        target: Option<String>,
        /// The scrape job of monitor's daemons, which the alerts on monitor itself select.
        #[arg(long, default_value = super::rules::DEFAULT_JOB)]
        job: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Load OpenMetrics text with timestamps (what `promtool tsdb create-blocks-from
    /// openmetrics` reads; every sample with a `target` label) into the store, in one
    /// transaction: a malformed file is refused whole, naming its line, and changes nothing.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The file (`-` for standard input).
        file: PathBuf,
    },
    /// Write the stored raw samples as OpenMetrics text with timestamps to standard output.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this target's series.
        #[arg(long)]
        target: Option<String>,
        /// From this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z; default: the first sample).
        #[arg(long, value_parser = rfc3339_ms)]
        from: Option<i64>,
        /// Up to (not including) this time (default: the last sample).
        #[arg(long, value_parser = rfc3339_ms)]
        to: Option<i64>,
    },
    /// Print the store's series, samples and bytes per tier.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the store: SQLite's integrity check, every chunk decodes, and every aggregate
    /// equals a recomputation from the raw samples it summarises. Exit 1 when anything is wrong.
    Check {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The target (default: the only one in the history).
    #[arg(long)]
    pub target: Option<String>,
    /// From this time on (RFC 3339; default: 90 days before --to).
    #[arg(long, value_parser = rfc3339_ms)]
    pub from: Option<i64>,
    /// Up to this time (RFC 3339; default: the target's last sample). The forecast starts at
    /// the last sample in the range.
    #[arg(long, value_parser = rfc3339_ms)]
    pub to: Option<i64>,
    /// The timezone of peak hours and dates (IANA name; default: the host's).
    #[arg(long)]
    pub timezone: Option<String>,
    /// The load signal CPU is compared with (a series name of the target; a counter is read as
    /// its rate). Default: the target's request rate.
    #[arg(long)]
    pub load_metric: Option<String>,
    /// How far the forecast goes.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub horizon: Duration,
    /// The percentage whose crossing date the capacity section gives.
    #[arg(long, default_value_t = 70.0)]
    pub threshold: f64,
    /// Print the report as JSON (README "Report" documents the fields).
    #[arg(long)]
    pub json: bool,
    /// Write the report as one self-contained HTML file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Read the history from this Prometheus (its base URL; Thanos, Mimir and VictoriaMetrics
    /// serve the same API) instead of the local store.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// With --prometheus: label matchers that pick the monitor instance, such as
    /// '{job="monitor",instance="db1:8001"}'.
    #[arg(long, requires = "prometheus")]
    pub selector: Option<String>,
}

/// Which store a history command reads: `--store`, else the config's `[history] path`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store's file (default: `[history] path` of --config, or history.db in its state_dir).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// The daemon's TOML configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// An RFC 3339 time as Unix milliseconds.
fn rfc3339_ms(arg: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(arg)
        .map_err(|e| format!("{arg:?} is not an RFC 3339 time: {e}"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{arg} is before 1970"))
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Watch this process and every process it forks.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Watch every process with this name (as in /proc/PID/comm), following restarts.
    #[arg(long)]
    pub comm: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Address for /metrics (overrides the config file). Loopback by default.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TOML configuration file (cadences, windows, listen address).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// TLS, basic auth and headers for the endpoint: a Prometheus exporter-toolkit web config
    /// file (what `promtool check web-config` checks). Overrides `web_config_file` of --config.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Value of the `target` label (default: the process name).
    #[arg(long)]
    pub name: Option<String>,
    /// Do not load kernel programs; sample /proc only.
    #[arg(long, conflicts_with = "require_ebpf")]
    pub no_ebpf: bool,
    /// Refuse to start unless every kernel program attaches (instead of falling back to /proc).
    #[arg(long)]
    pub require_ebpf: bool,
    /// Kernel program families to attach (comma-separated): syscalls (counts, latency and fds:
    /// the costly one), fds (fd counts alone), sched (on-CPU, switches), faults, requests (HTTP
    /// request types and explicit tags). Default: all; `syscalls,sched,faults` leaves requests
    /// out.
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    pub programs: Vec<Family>,
    /// Do not export the seed's `app_memory_usage_mb*` names (app_resident_memory_*bytes carry
    /// the same values); without them the output is clean under `promtool check metrics`.
    #[arg(long)]
    pub no_seed_names: bool,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    pub json: bool,
    /// How long to profile a running --pid (seconds, up to 30 days); a launched command runs to
    /// its exit.
    #[arg(
        long,
        default_value = "10",
        value_name = "SECONDS",
        value_parser = stat_duration,
        allow_hyphen_values = true
    )]
    pub duration: Duration,
    /// Profile this running process (and its descendants).
    #[arg(long, conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Kernel program families to attach, as for `monitor run --programs`. Default: all.
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    pub programs: Vec<Family>,
    /// The command to launch and profile with its children, after `--`.
    #[arg(last = true, required_unless_present = "pid")]
    pub command: Vec<String>,
}

/// The longest `stat --duration`: longer is a typo (milliseconds for seconds, say) or a job for
/// `monitor run`.
const MAX_STAT_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// `--duration SECONDS`: positive, finite and at most [`MAX_STAT_DURATION`]. Checked here
/// because `Duration::from_secs_f64` panics on negative, NaN and huge values.
fn stat_duration(arg: &str) -> Result<Duration, String> {
    let secs: f64 = arg
        .trim()
        .parse()
        .map_err(|_| format!("{arg:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{arg} is not a positive, finite number of seconds"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d.is_zero() => Err(format!("{arg} seconds rounds to nothing")),
        Ok(d) if d <= MAX_STAT_DURATION => Ok(d),
        _ => Err(format!(
            "{arg} seconds is longer than the {} maximum (`monitor run` watches for longer)",
            humantime::format_duration(MAX_STAT_DURATION)
        )),
    }
}

#[derive(Debug, Args)]
pub struct NotifyDeliverArgs {
    /// TOML config file: its `[notify]` table and `[[notifier]]` array are used.
    #[arg(long)]
    pub config: PathBuf,
    /// Outbox directory (one queue subdirectory per notifier).
    #[arg(long)]
    pub outbox: PathBuf,
    /// A JSON alert, an array of them (sent together), or an array of such arrays (successive
    /// batches, `--batch-interval` apart). The `Alert` serde shape.
    #[arg(long)]
    pub alert_json: PathBuf,
    /// The pause between successive batches.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub batch_interval: std::time::Duration,
    /// How long to wait for delivery, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn stat(duration: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["monitor", "stat", "--pid", "1", "--duration", duration])
    }

    #[test]
    fn stat_duration_refuses_what_cannot_be_waited_for() {
        for bad in [
            "-1", "-0.5", "nan", "NaN", "inf", "-inf", "0", "1e300", "soon", "",
        ] {
            let e = stat(bad).expect_err(bad).to_string();
            assert!(e.contains("--duration"), "{bad}: {e}");
        }
        let e = Cli::try_parse_from(["monitor", "stat", "--pid", "1", "--duration=-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--duration"), "{e}");
    }

    #[test]
    fn stat_duration_takes_fractional_seconds_and_defaults_to_ten() {
        let duration = |cli: Cli| match cli.command {
            Command::Stat(args) => args.duration,
            other => panic!("{other:?}"),
        };
        assert_eq!(duration(stat("2.5").unwrap()), Duration::from_millis(2500));
        assert_eq!(duration(stat("2592000").unwrap()), MAX_STAT_DURATION);
        let default = Cli::try_parse_from(["monitor", "stat", "--pid", "1"]).unwrap();
        assert_eq!(duration(default), Duration::from_secs(10));
    }
}
