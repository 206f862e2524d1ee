//! `monitor completions SHELL` and the hidden `monitor man DIR`: shell completions and man pages
//! made from the command line's own definition (cli.rs), so they offer exactly what this binary
//! accepts. The Debian package ships both (`cargo xtask package` runs these).
use std::{io::Write as _, path::Path, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let script = script(shell);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("writing the completion script to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script, rendered into memory: clap_complete panics on a failed write (a closed
/// pipe), and this way the error is ours to report.
fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut offered(), "monitor", &mut script);
    script
}

/// The command line without its hidden subcommands, which clap_complete (4.6) would offer too.
/// They are all at the top, which has no arguments of its own, so a top with the visible
/// subcommands completes the same as the real one.
fn offered() -> clap::Command {
    let cli = Cli::command();
    let visible: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let top = clap::Command::new("monitor")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(visible);
    match cli.get_about() {
        Some(about) => top.about(about.clone()),
        None => top,
    }
}

pub fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each shell's script names every visible subcommand, and no hidden one.
    #[test]
    fn completions_offer_the_visible_subcommands_only() {
        let cli = Cli::command();
        let (hidden, visible): (Vec<_>, Vec<_>) = cli
            .get_subcommands()
            .map(|s| (s.get_name().to_owned(), s.is_hide_set()))
            .partition(|(_, hide)| *hide);
        assert!(!hidden.is_empty());
        // The top-level command has nothing else of its own that offered() would leave out.
        assert!(
            cli.get_arguments()
                .all(|a| ["help", "version"].contains(&a.get_id().as_str()))
        );
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = String::from_utf8(script(shell)).unwrap();
            let words: std::collections::HashSet<&str> = text.split(|c| !is_word(c)).collect();
            for (name, _) in &visible {
                assert!(words.contains(name.as_str()), "{shell}: no {name}");
            }
            for (name, _) in &hidden {
                assert!(
                    !words.contains(name.as_str()),
                    "{shell} offers hidden {name}"
                );
            }
        }
    }

    /// Every visible subcommand gets a page, and the top page names each of them.
    #[test]
    fn a_man_page_per_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man(dir.path()).unwrap();
        let top = std::fs::read_to_string(dir.path().join("monitor.1")).unwrap();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let page = dir.path().join(format!("monitor-{}.1", sub.get_name()));
            assert!(page.exists(), "no {}", page.display());
            assert!(
                top.contains(&format!(
                    "monitor\\-{}(1)",
                    sub.get_name().replace('-', "\\-")
                )),
                "monitor.1 does not name {}",
                sub.get_name()
            );
        }
        for hidden in Cli::command().get_subcommands().filter(|s| s.is_hide_set()) {
            let name = hidden.get_name();
            assert!(!dir.path().join(format!("monitor-{name}.1")).exists());
            assert!(!top.contains(&format!("monitor\\-{}(1)", name.replace('-', "\\-"))));
        }
    }
}
