//! `monitor report`: the history of a target read from the store, analysed, and printed as
//! text or JSON or written as an HTML page.
use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::Context as _;

use crate::{
    commands::{cli::ReportArgs, history::existing},
    report::{
        self, Options, document::Report, local::LocalSource, peaks, prometheus::PrometheusSource,
        source::Source,
    },
};

pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.threshold > 0.0 && args.threshold.is_finite(),
        "--threshold must be a positive percentage, not {}",
        args.threshold
    );
    let opts = Options {
        target: args.target.clone(),
        from_ms: args.from,
        to_ms: args.to,
        timezone: peaks::timezone(args.timezone.as_deref())?,
        load_metric: args.load_metric.clone(),
        horizon: args.horizon,
        threshold: args.threshold,
    };
    let mut source: Box<dyn Source> = match &args.prometheus {
        Some(url) => Box::new(PrometheusSource::new(url, args.selector.as_deref())?),
        None => Box::new(LocalSource::new(existing(&args.store)?.0)),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let report = report::build(source.as_mut(), &opts, &mut |what| {
        if let Some(bar) = &bar {
            bar.set_message(what.to_owned());
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if let Some(out) = &args.out {
        std::fs::write(out, report::html::page(&report))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.out.is_none() {
        print!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report for a terminal: the figures a person asks first, then the advice.
fn text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({} history, {} to {}, {})",
        r.target, r.source, r.from, r.to, r.timezone
    );
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    for (name, cells) in [
        ("CPU %", &r.peaks.cpu_percent),
        ("memory %", &r.peaks.memory_percent),
    ] {
        if let Some(cells) = cells {
            let top: Vec<String> = cells
                .iter()
                .take(3)
                .map(|c| {
                    format!(
                        "{} {:02}:00 (p95 {:.1}, max {:.1})",
                        DAYS[usize::from(c.weekday)],
                        c.hour,
                        c.p95,
                        c.max
                    )
                })
                .collect();
            let _ = writeln!(out, "peak {name}: {}", top.join("; "));
        }
    }
    if let Some(c) = &r.load_correlation {
        let _ = writeln!(
            out,
            "CPU against {}: Spearman {:.2}, {:.3} CPU % per unit, lag {} s",
            c.load, c.spearman, c.cpu_per_load, c.lag_seconds
        );
    }
    if let Some(t) = &r.memory_trend {
        let _ = writeln!(
            out,
            "memory: {} ({:+.1} MB/day, 95 % {:+.1} to {:+.1})",
            if t.leak { "leaking" } else { "no leak" },
            t.mb_per_day,
            t.mb_per_day_low,
            t.mb_per_day_high
        );
    }
    for (name, c) in [
        ("memory", &r.capacity.memory_percent),
        ("CPU", &r.capacity.cpu_percent),
    ] {
        if let Some(c) = c {
            let _ = writeln!(
                out,
                "{name} reaches {}%: {} (earliest {}, latest {})",
                c.threshold,
                c.date.as_deref().unwrap_or("not within the horizon"),
                c.earliest.as_deref().unwrap_or("-"),
                c.latest.as_deref().unwrap_or("-")
            );
        }
    }
    for rec in &r.recommendations {
        let _ = writeln!(out, "- {rec}");
    }
    for note in &r.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out
}
