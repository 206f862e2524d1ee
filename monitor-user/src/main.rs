//! `monitor`: an eBPF-assisted profiler and resource monitor for one application.
// The stages, in data-flow order collect -> model -> alerts, serve, store -> notify; each imports only
// the ones upstream of it (layout_tests.rs, README "How it works").
mod alerts;
mod collect;
mod model;
mod notify;
mod report;
mod requests;
mod serve;
mod store;
mod web;
// Read by every stage; the commands wire the stages together.
mod commands;
mod config;
// How any stage writes its state to disk (private files), upstream of them all.
mod state_file;

use clap::Parser as _;

use commands::cli;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The daemon narrates; the one-shot commands print their result and only warnings.
    let default_level = match cli.command {
        cli::Command::Run(_) => "info",
        _ => "warn",
    };
    // ureq writes request paths (a chat robot's token, a bot token) at trace level only: cap it
    // at debug whatever RUST_LOG says, so no level of logging shows a secret.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let trace = tracing_subscriber::filter::LevelFilter::TRACE;
    if filter.max_level_hint().is_none_or(|max| max == trace) {
        filter = filter.add_directive("ureq=debug".parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        cli::Command::Run(args) => commands::run::run(args),
        cli::Command::Stat(args) => commands::stat::run(args),
        cli::Command::Check => commands::check::run(),
        cli::Command::CheckConfig { file } => commands::check_config::run(&file),
        cli::Command::Rules(cli::RulesCommand::Export {
            config,
            target,
            job,
            ..
        }) => commands::rules::export(config.as_deref(), target.as_deref(), &job),
        cli::Command::Events { listen, json } => commands::events::run(listen, json),
        cli::Command::History(cmd) => commands::history::run(cmd),
        cli::Command::Report(args) => commands::report::run(&args),
        cli::Command::Notify(cli::NotifyCommand::Test { config }) => {
            commands::notify::test(&config)
        }
        cli::Command::NotifyDeliver(args) => commands::notify_deliver::run(&args),
        cli::Command::Completions { shell } => commands::completions::completions(shell),
        cli::Command::Man { dir } => commands::completions::man(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("monitor: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod layout_tests;
