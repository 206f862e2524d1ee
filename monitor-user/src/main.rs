//! `monitor`: an eBPF-assisted profiler and resource monitor for one application.
mod check;
mod cli;
mod collector;
mod config;
mod daemon;
mod ebpf;
mod exporter;
mod http;
mod limits;
mod model;
mod privileges;
mod procfs;
mod sample;
mod stat;
mod syscall_names;
mod window;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The daemon narrates; the one-shot commands print their result and only warnings.
    let default_level = match cli.command {
        cli::Command::Run(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        cli::Command::Run(args) => daemon::run(args),
        cli::Command::Stat(args) => stat::run(args),
        cli::Command::Check => check::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("monitor: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
