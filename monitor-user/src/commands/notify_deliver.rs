//! `monitor notify-deliver`: sends alerts from a JSON file through the configured notifiers, the
//! hidden subcommand behind the notifier integration tests.
use anyhow::Context as _;

use super::cli::NotifyDeliverArgs;
use crate::notify::{parse_notify_settings, read_batches, send_and_drain};

/// Exit 0 once everything is delivered; an error when the timeout passes or a notification was
/// refused for good.
pub fn run(args: &NotifyDeliverArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = &args.config;
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading config file {}", config.display()))?;
    let settings = parse_notify_settings(&text)
        .with_context(|| format!("in config file {}", config.display()))?;
    let batches = read_batches(&args.alert_json)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(send_and_drain(
        settings.notifiers,
        settings.notify,
        args.outbox.clone(),
        batches,
        args.batch_interval,
        args.timeout,
    ))?;
    Ok(std::process::ExitCode::SUCCESS)
}
