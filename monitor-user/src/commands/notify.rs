//! `monitor notify test --config FILE`: one test message through every configured notifier,
//! each answer printed, so that a new robot, token or secret is checked before an alert needs it.
use std::{path::Path, process::ExitCode};

use anyhow::Context as _;

use crate::notify::{parse_notify_settings, test_channels};

pub fn test(config: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading config file {}", config.display()))?;
    let settings = parse_notify_settings(&text)
        .with_context(|| format!("in config file {}", config.display()))?;
    if settings.notifiers.is_empty() {
        anyhow::bail!("{}: no [[notifier]] to test", config.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let tests = runtime.block_on(test_channels(settings.notifiers, settings.notify))?;
    let mut failed = 0;
    for t in &tests {
        match &t.result {
            Ok(()) => println!("{}: ok ({})", t.name, t.target),
            Err(e) => {
                failed += 1;
                println!("{}: FAILED: {e}", t.name);
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "monitor: {failed} of {} notifier(s) failed the test",
            tests.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
