//! `monitor`: an eBPF-assisted profiler and resource monitor for one application.
mod alerting;
mod alerts;
mod check;
mod cli;
mod collector;
mod config;
mod daemon;
mod ebpf;
mod events;
mod exporter;
mod http;
mod limits;
mod model;
mod notify;
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
        cli::Command::CheckConfig { file } => check_config(&file),
        cli::Command::Rules(cli::RulesCommand::Export { config, target, .. }) => {
            export_rules(config.as_deref(), &target)
        }
        cli::Command::Events { listen, json } => print_events(listen, json),
        cli::Command::NotifyTest(args) => {
            notify::run_notify_test(&args.config, &args.outbox, &args.alert_json, args.timeout)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("monitor: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let config = config::Config::load(file)?;
    println!(
        "{}: ok ({} rules, {} notifiers, listen {})",
        file.display(),
        config.rules.len(),
        config.notifiers.len(),
        config.listen
    );
    Ok(std::process::ExitCode::SUCCESS)
}

fn export_rules(
    config: Option<&std::path::Path>,
    target: &str,
) -> anyhow::Result<std::process::ExitCode> {
    let config = match config {
        Some(path) => config::Config::load(path)?,
        None => config::Config::default(),
    };
    print!(
        "{}",
        alerts::rules::prometheus_rules_yaml(&config.rules, target)
    );
    Ok(std::process::ExitCode::SUCCESS)
}

fn print_events(
    listen: std::net::SocketAddr,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context as _;
    let url = format!("http://{listen}/api/events");
    let body = ureq::get(&url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| {
            format!("fetching {url} (is `monitor run` listening there? see --listen)")
        })?;
    if json {
        println!("{body}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&body).with_context(|| format!("parsing {url}"))?;
    if events.is_empty() {
        println!("no events yet");
    }
    for event in &events {
        println!("{}", events::render(event));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
