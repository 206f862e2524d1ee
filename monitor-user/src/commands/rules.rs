//! `monitor rules export --prometheus`: the alert rules as a Prometheus rule file.
use std::{path::Path, process::ExitCode};

use crate::{alerts::rules::prometheus_rules_yaml, config::Config};

pub fn export(config: Option<&Path>, target: &str) -> anyhow::Result<ExitCode> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    print!("{}", prometheus_rules_yaml(&config.rules, target));
    Ok(ExitCode::SUCCESS)
}
