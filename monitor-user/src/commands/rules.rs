//! `monitor rules export --prometheus`: the Prometheus mixin (alert rules, recording rules,
//! alerts on monitor itself) as one rule file. deploy/prometheus/monitor.rules.yml is its output
//! with the defaults.
use std::{path::Path, process::ExitCode};

use crate::{
    alerts::mixin::{MixinOptions, mixin_yaml},
    config::Config,
};

/// The job the alerts on monitor itself select unless `--job` says otherwise.
pub const DEFAULT_JOB: &str = "monitor";

pub fn export(config: Option<&Path>, target: Option<&str>, job: &str) -> anyhow::Result<ExitCode> {
    let loaded = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let c = &loaded.cadence;
    // Every sample takes the CPU and memory reading and whichever slower ones are due.
    let sample_period = c.cpu_memory.min(c.vms).min(c.fds_threads);
    let command = command_line(config, target, job);
    print!(
        "{}",
        mixin_yaml(
            &loaded.rules,
            &MixinOptions {
                target: target.unwrap_or(""),
                job,
                sample_period,
                command: &command,
            },
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The command that prints the same file again, naming only the options that differ from
/// the defaults.
fn command_line(config: Option<&Path>, target: Option<&str>, job: &str) -> String {
    let mut words = vec!["monitor rules export --prometheus".to_string()];
    if let Some(path) = config {
        words.push(format!("--config {}", shell_word(&path.to_string_lossy())));
    }
    if let Some(target) = target {
        words.push(format!("--target {}", shell_word(target)));
    }
    if job != DEFAULT_JOB {
        words.push(format!("--job {}", shell_word(job)));
    }
    words.join(" ")
}

/// `s` as one shell word: as is when nothing in it is special to the shell, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_command_names_what_differs_from_the_defaults() {
        assert_eq!(
            command_line(None, None, DEFAULT_JOB),
            "monitor rules export --prometheus"
        );
        assert_eq!(
            command_line(Some(Path::new("/etc/monitor.toml")), Some("it's"), "node 1"),
            "monitor rules export --prometheus --config /etc/monitor.toml --target 'it'\\''s' \
             --job 'node 1'"
        );
        assert_eq!(
            command_line(None, Some(""), DEFAULT_JOB),
            "monitor rules export --prometheus --target ''"
        );
    }
}
