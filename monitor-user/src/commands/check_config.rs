//! `monitor check-config FILE`: validates a configuration without running anything.
use std::{path::Path, process::ExitCode};

use crate::config::Config;

pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(file)?;
    println!(
        "{}: ok ({} rules, {} notifiers, listen {})",
        file.display(),
        config.rules.len(),
        config.notifiers.len(),
        config.listen
    );
    Ok(ExitCode::SUCCESS)
}
