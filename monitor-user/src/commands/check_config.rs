//! `monitor check-config FILE`: validates a configuration without running anything.
use std::{path::Path, process::ExitCode};

use crate::{config::Config, web::web_config::WebConfig};

pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(file)?;
    let web = match &config.web_config_file {
        Some(path) => {
            let web = WebConfig::load(path)?;
            format!(
                ", web config {}: tls {}, {} users",
                path.display(),
                if web.tls.is_some() { "on" } else { "off" },
                web.users.len()
            )
        }
        None => String::new(),
    };
    println!(
        "{}: ok ({} rules, {} notifiers, listen {}{web})",
        file.display(),
        config.rules.len(),
        config.notifiers.len(),
        config.listen
    );
    Ok(ExitCode::SUCCESS)
}
