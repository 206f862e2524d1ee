//! `monitor notify-test`: sends alerts from a JSON file through the configured notifiers, the
//! hidden subcommand behind the notifier integration tests.
use std::{path::Path, time::Duration};

use anyhow::Context as _;

use crate::notify::{parse_notify_settings, read_alerts, send_and_drain};

/// `monitor notify-test --config FILE --outbox DIR --alert-json FILE [--timeout DURATION]`:
/// the hidden subcommand behind the integration tests. Exit 0 once everything is delivered.
pub fn run(
    config: &Path,
    outbox_dir: &Path,
    alert_json: &Path,
    timeout: Duration,
) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading config file {}", config.display()))?;
    let settings = parse_notify_settings(&text)
        .with_context(|| format!("in config file {}", config.display()))?;
    let alerts = read_alerts(alert_json)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(send_and_drain(
        settings.notifiers,
        settings.notify,
        outbox_dir.to_path_buf(),
        alerts,
        timeout,
    ))?;
    Ok(std::process::ExitCode::SUCCESS)
}
