//! `monitor history import | export | stats`: the store as OpenMetrics text, and its size.
use std::{
    io::{BufWriter, IsTerminal as _, Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::{Instant, SystemTime},
};

use anyhow::Context as _;

use crate::{
    commands::cli::{HistoryCommand, StoreArgs},
    config::Config,
    store::{
        db::{Retention, Store, Tier},
        openmetrics::{self, family_of, format_timestamp, format_value},
        unix_ms,
    },
};

pub fn run(cmd: HistoryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HistoryCommand::Import { store, file } => import(&store, &file),
        HistoryCommand::Export {
            store,
            target,
            from,
            to,
        } => export(&store, target.as_deref(), from, to),
        HistoryCommand::Stats { store } => stats(&store),
        HistoryCommand::Check { store } => check(&store),
    }
}

/// The store's path and the retention it is kept under.
fn resolve(args: &StoreArgs) -> anyhow::Result<(PathBuf, Retention)> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let path = args.store.clone().unwrap_or_else(|| config.history_path());
    Ok((path, config.history.retention()))
}

/// Set: an import stops for ten minutes inside its transaction before its last series (saying
/// so on stderr), so a test can kill it there: a test hook.
const IMPORT_PAUSE_ENV: &str = "MONITOR_TEST_IMPORT_PAUSE";

fn import(args: &StoreArgs, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| format!("reading {}", file.display()))?;
    }
    // On a terminal, a bar: parsing, then the series written.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner().with_message("parsing");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    // The whole file is checked before the store is touched.
    let parsed = openmetrics::parse(&text).with_context(|| {
        format!(
            "{} is not valid OpenMetrics text, nothing imported",
            file.display()
        )
    })?;
    drop(text);
    let (path, retention) = resolve(args)?;
    let (mut store, _) = Store::open(&path)?;
    let samples: usize = parsed.iter().map(|s| s.samples.len()).sum();
    let pause = std::env::var_os(IMPORT_PAUSE_ENV).is_some();
    if let Some(bar) = &bar {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} series")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_length(parsed.len() as u64);
        bar.set_message("importing");
    }
    let result = store
        .transaction(|tx| {
            for (i, s) in parsed.iter().enumerate() {
                if pause && i + 1 == parsed.len() {
                    eprintln!("{IMPORT_PAUSE_ENV}: paused inside the import's transaction");
                    std::thread::sleep(std::time::Duration::from_secs(600));
                }
                let id = tx.series_id(&s.key, s.kind)?;
                tx.import(id, &s.samples)
                    .with_context(|| format!("importing {}", s.key.exposition()))?;
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            }
            // Kept as if the daemon had recorded it: what is past the raw window stays only
            // as its aggregates.
            tx.expire(unix_ms(SystemTime::now()), &retention)?;
            Ok(())
        })
        .with_context(|| format!("importing into {} (nothing was written)", path.display()));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    eprintln!(
        "imported {samples} samples of {} series into {} in {:.1} s",
        parsed.len(),
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn export(
    args: &StoreArgs,
    target: Option<&str>,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let (store, _) = existing(args)?;
    let mut series = store.series(target)?;
    // Families together (a counter's _total and _created under one # TYPE), then name, labels.
    series.sort_by(|a, b| {
        (
            family_of(&a.key.name, &a.kind),
            &a.key.name,
            &a.key.target,
            &a.key.labels,
        )
            .cmp(&(
                family_of(&b.key.name, &b.kind),
                &b.key.name,
                &b.key.target,
                &b.key.labels,
            ))
    });
    let (from, to) = (from.unwrap_or(i64::MIN / 2), to.unwrap_or(i64::MAX / 2));
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut family: Option<String> = None;
    let mut line = String::new();
    for s in &series {
        let samples = store.raw(s.id, from, to)?;
        if samples.is_empty() {
            continue;
        }
        let f = family_of(&s.key.name, &s.kind);
        if family.as_deref() != Some(f) {
            writeln!(out, "# TYPE {f} {}", s.kind)?;
            family = Some(f.to_owned());
        }
        let name = s.key.exposition();
        for x in samples {
            line.clear();
            line.push_str(&name);
            line.push(' ');
            format_value(x.value, &mut line);
            line.push(' ');
            format_timestamp(x.t_ms, &mut line);
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The store a read-only command looks at: it must exist (opening would create it).
pub fn existing(args: &StoreArgs) -> anyhow::Result<(Store, PathBuf)> {
    let (path, _) = resolve(args)?;
    if !path.exists() {
        anyhow::bail!("no history store at {}", path.display());
    }
    let (store, aside) = Store::open(&path)?;
    if let Some(aside) = aside {
        anyhow::bail!(
            "the history store {} was damaged: moved aside to {}",
            path.display(),
            aside.display()
        );
    }
    Ok((store, path))
}

fn check(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let (store, path) = existing(args)?;
    let problems = store.check()?;
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("{}: {p}", path.display());
    }
    Ok(ExitCode::from(1))
}

fn stats(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let (store, path) = existing(args)?;
    let sizes = store.sizes()?;
    let file_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|ext| {
            let mut p = path.as_os_str().to_owned();
            p.push(ext);
            std::fs::metadata(PathBuf::from(p)).ok().map(|m| m.len())
        })
        .sum();
    println!(
        "store {}: {} series, {file_bytes} bytes on disk",
        path.display(),
        sizes.series
    );
    println!(
        "head (raw samples not yet in a chunk): {} rows",
        sizes.head_rows
    );
    for (tier, name) in [
        (Tier::Raw, "raw"),
        (Tier::Minute, "minute"),
        (Tier::Hour, "hour"),
    ] {
        let (chunks, rows, bytes) = sizes.tiers.get(&(tier as i64)).copied().unwrap_or_default();
        let per = if rows > 0 {
            bytes as f64 / rows as f64
        } else {
            0.0
        };
        println!("{name}: {chunks} chunks, {rows} rows, {bytes} bytes ({per:.2} bytes a row)");
    }
    Ok(ExitCode::SUCCESS)
}
