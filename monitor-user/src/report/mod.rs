//! Report: a target's history turned into trend analysis and capacity planning (peak hours,
//! CPU against load, memory leaks, a forecast, the dates thresholds are reached, advice).
//!
//! Downstream of the store: reads history from it (or from Prometheus, for fleets), through one
//! `Source`, and writes nothing back. Each analysis is its own file and sees only steps.
pub mod capacity;
pub mod document;
pub mod forecast;
pub mod history;
pub mod html;
pub mod load_correlation;
pub mod local;
pub mod memory_trend;
pub mod peaks;
pub mod prometheus;
pub mod source;
pub mod stats;

use std::time::Duration;

use chrono_tz::Tz;

use self::{
    document::{Capacity, Charts, Forecasts, Models, Peaks, Report, RouteShare},
    history::{DAY_MS, HOUR_MS, MINUTE_MS, Steps},
    source::{Kind, Labeled, Source},
};

/// The series a report reads, by the names the exporter gives them.
pub const CPU: &str = "app_cpu_usage_percent";
pub const MEMORY_PERCENT: &str = "app_memory_usage_percent";
pub const MEMORY_MB: &str = "app_memory_usage_mb";
pub const MEMORY_LIMIT: &str = "app_memory_limit_bytes";
pub const REQUESTS: &str = "app_requests_total";
pub const ROUTE_CPU: &str = "app_request_cpu_seconds_total";

#[derive(Clone, Debug)]
pub struct Options {
    /// None: the only target in the source.
    pub target: Option<String>,
    /// Unix ms; None: `to` minus DEFAULT_RANGE.
    pub from_ms: Option<i64>,
    /// Unix ms, exclusive; None: just after the target's last CPU sample.
    pub to_ms: Option<i64>,
    pub timezone: Tz,
    /// A series name; None: the target's request rate.
    pub load_metric: Option<String>,
    pub horizon: Duration,
    pub threshold: f64,
}

/// The range a report reads when `--from` is not given: the minute tier's default retention.
pub const DEFAULT_RANGE_MS: i64 = 90 * DAY_MS;

/// Builds the report, telling `progress` what it is doing (for a progress bar).
pub fn build(
    src: &mut dyn Source,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Report> {
    let target = match &opts.target {
        Some(t) => t.clone(),
        None => only_target(src)?,
    };
    let last = [CPU, MEMORY_PERCENT, MEMORY_MB]
        .iter()
        .map(|name| src.last_ms(&target, name))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .max();
    let to = match (opts.to_ms, last) {
        (Some(to), _) => to,
        (None, Some(last)) => last + 1,
        (None, None) => anyhow::bail!(
            "{} has no history of target {target:?} ({CPU}, {MEMORY_PERCENT} or {MEMORY_MB})",
            src.name()
        ),
    };
    let from = opts.from_ms.unwrap_or(to - DEFAULT_RANGE_MS);
    anyhow::ensure!(from < to, "--from must be before --to");
    let mut notes = Vec::new();

    progress("reading CPU");
    let cpu = gauge(src, &target, CPU, from, to)?;
    progress("reading memory");
    let mem_pct_all = gauge(src, &target, MEMORY_PERCENT, from, to)?;
    let mem_mb = gauge(src, &target, MEMORY_MB, from, to)?;
    let limit = gauge(src, &target, MEMORY_LIMIT, from, to)?;
    // A limit that changed makes the percentages before the change another scale.
    let mem_pct = match last_change(&limit) {
        Some(t) => {
            notes.push(format!(
                "the memory limit changed at {}: memory % is forecast from then",
                forecast::rfc3339(t)
            ));
            mem_pct_all.between(t, to)
        }
        None => mem_pct_all.clone(),
    };
    progress("reading load");
    let (load_name, load) = load_signal(src, &target, opts.load_metric.as_deref(), from, to)?;
    let routes = route_shares(src, &target, from, to)?;

    progress("peak hours");
    let missing = |name: &str, notes: &mut Vec<String>| {
        notes.push(format!("no {name} history for {target:?} in the range"));
    };
    if cpu.is_empty() {
        missing(CPU, &mut notes);
    }
    if mem_pct_all.is_empty() {
        missing(MEMORY_PERCENT, &mut notes);
    }
    let profile = |s: &Steps| (!s.is_empty()).then(|| peaks::profile(s, opts.timezone));
    let peaks = Peaks {
        cpu_percent: profile(&cpu),
        memory_percent: profile(&mem_pct_all),
    };

    progress("load correlation");
    let step_ms = resolution(&cpu);
    let load_correlation = match &load {
        Some(load) => {
            let c = load_correlation::correlate(
                &load_name,
                &cpu,
                load,
                from,
                to,
                step_ms,
                opts.timezone,
            );
            if c.is_none() {
                notes.push(format!(
                    "under 30 steps with both CPU and {load_name}: no load correlation"
                ));
            }
            c
        }
        None => {
            notes.push(format!("no load signal ({load_name}) for {target:?}"));
            None
        }
    };

    progress("memory trend");
    let memory_trend = memory_trend::trend(&mem_mb, from, to);
    if memory_trend.is_none() {
        notes.push(format!("under two days of {MEMORY_MB}: no memory trend"));
    }

    progress("forecasting CPU");
    let horizon_hours = (opts.horizon.as_secs() / 3600).max(1) as usize;
    let cpu_forecast = forecast::forecast(&cpu, from, to, horizon_hours)?;
    progress("forecasting memory");
    let mem_forecast = forecast::forecast(&mem_pct, from, to, horizon_hours)?;
    let last_value = |s: &Steps| s.0.last().map(|s| s.last);
    let crossing = |f: &Option<forecast::Forecast>, s: &Steps| {
        f.as_ref()
            .map(|f| capacity::crossing(&f.points, last_value(s), opts.threshold, opts.timezone))
    };
    let capacity = Capacity {
        memory_percent: crossing(&mem_forecast, &mem_pct),
        cpu_percent: crossing(&cpu_forecast, &cpu),
    };
    for (name, f) in [(CPU, &cpu_forecast), (MEMORY_PERCENT, &mem_forecast)] {
        match f {
            Some(f) => notes.push(format!("{name} forecast by {}", f.model)),
            None => notes.push(format!("under 12 hours of {name}: no forecast")),
        }
    }
    let forecasts = Forecasts {
        models: Models {
            cpu_percent: cpu_forecast.as_ref().map(|f| f.model.clone()),
            memory_percent: mem_forecast.as_ref().map(|f| f.model.clone()),
        },
        cpu_percent: cpu_forecast.map(|f| f.points),
        memory_percent: mem_forecast.map(|f| f.points),
    };

    let charts = Charts {
        cpu_hourly: hourly(&cpu, from, to),
        memory_percent_hourly: hourly(&mem_pct_all, from, to),
        memory_mb_floor: mem_mb
            .grid(from.div_euclid(HOUR_MS) * HOUR_MS, to, HOUR_MS)
            .into_iter()
            .flatten()
            .filter(|s| s.min > 0.0)
            .map(|s| (s.t_ms, s.min))
            .collect(),
        cpu_vs_load: match &load {
            Some(load) => pairs(&cpu, load, from, to, step_ms, 3000),
            None => Vec::new(),
        },
    };
    let mut report = Report {
        target,
        source: src.name().to_owned(),
        from: forecast::rfc3339(from),
        to: forecast::rfc3339(to),
        timezone: opts.timezone.name().to_owned(),
        peaks,
        load_correlation,
        memory_trend,
        forecast: forecasts,
        capacity,
        routes,
        recommendations: Vec::new(),
        notes,
        charts,
    };
    report.recommendations = recommendations(&report);
    Ok(report)
}

fn only_target(src: &mut dyn Source) -> anyhow::Result<String> {
    let mut targets = src.targets(CPU)?;
    if targets.is_empty() {
        targets = src.targets(MEMORY_PERCENT)?;
    }
    match targets.len() {
        1 => Ok(targets.remove(0)),
        0 => anyhow::bail!("{} has no target's history ({CPU})", src.name()),
        _ => anyhow::bail!(
            "{} has several targets ({}): name one with --target",
            src.name(),
            targets.join(", ")
        ),
    }
}

/// A gauge of the target (the sum if it has several label sets).
fn gauge(
    src: &mut dyn Source,
    target: &str,
    name: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<Steps> {
    let (_, series) = src.series(target, name, from, to)?;
    Ok(match series.len() {
        0 => Steps::default(),
        1 => series.into_iter().next().unwrap_or_default().steps,
        _ => history::sum(&series.into_iter().map(|s| s.steps).collect::<Vec<_>>()),
    })
}

/// The load signal: `metric` (a rate if it is a counter, its value if a gauge), or the
/// target's request rate. Returns its name for the report and its steps (None if absent).
fn load_signal(
    src: &mut dyn Source,
    target: &str,
    metric: Option<&str>,
    from: i64,
    to: i64,
) -> anyhow::Result<(String, Option<Steps>)> {
    let name = metric.unwrap_or(REQUESTS);
    let (kind, series) = src.series(target, name, from, to)?;
    let label = match (metric, kind) {
        (None, _) => "request rate (app_requests_total, per second)".to_owned(),
        (Some(m), Kind::Counter) => format!("{m} (rate per second)"),
        (Some(m), Kind::Gauge) => m.to_owned(),
    };
    if series.is_empty() {
        return Ok((label, None));
    }
    let parts: Vec<Steps> = series
        .into_iter()
        .map(|s| match kind {
            // A step after a gap of more than 10 minutes (or 2 hours at hour steps) has no rate.
            Kind::Counter => history::counter_rate(&s.steps, 2 * HOUR_MS),
            Kind::Gauge => s.steps,
        })
        .collect();
    let load = history::sum(&parts);
    Ok((label, (!load.is_empty()).then_some(load)))
}

fn route_shares(
    src: &mut dyn Source,
    target: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<Option<Vec<RouteShare>>> {
    let (_, series) = src.series(target, ROUTE_CPU, from, to)?;
    let mut shares: Vec<RouteShare> = series
        .iter()
        .map(|s: &Labeled| RouteShare {
            method: s.label("method").unwrap_or_default().to_owned(),
            route: s.label("route").unwrap_or_default().to_owned(),
            cpu_seconds: history::counter_increase(&s.steps),
            share: 0.0,
        })
        .collect();
    let total: f64 = shares.iter().map(|r| r.cpu_seconds).sum();
    if shares.is_empty() || total <= 0.0 {
        return Ok(None);
    }
    for r in &mut shares {
        r.share = r.cpu_seconds / total;
    }
    shares.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    Ok(Some(shares))
}

/// When the memory limit last changed (by more than 0.5 %), if it did.
fn last_change(limit: &Steps) -> Option<i64> {
    limit
        .0
        .windows(2)
        .filter(|w| (w[1].last - w[0].last).abs() > w[0].last.abs() * 0.005)
        .map(|w| w[1].t_ms)
        .next_back()
}

/// The typical step of a series: a minute where minutes are kept, else an hour.
fn resolution(s: &Steps) -> i64 {
    let minutes = s.0.iter().filter(|s| s.span_ms <= MINUTE_MS).count();
    if minutes * 2 >= s.0.len() {
        MINUTE_MS
    } else {
        HOUR_MS
    }
}

fn hourly(s: &Steps, from: i64, to: i64) -> Vec<(i64, f64)> {
    s.grid(from.div_euclid(HOUR_MS) * HOUR_MS, to, HOUR_MS)
        .into_iter()
        .flatten()
        .map(|s| (s.t_ms, s.mean))
        .collect()
}

/// Up to `max` (load, CPU) pairs at the same step, evenly spread over the range.
fn pairs(
    cpu: &Steps,
    load: &Steps,
    from: i64,
    to: i64,
    step_ms: i64,
    max: usize,
) -> Vec<(f64, f64)> {
    let c = cpu.grid(from, to, step_ms);
    let l = load.grid(from, to, step_ms);
    let both: Vec<(f64, f64)> = c
        .iter()
        .zip(&l)
        .filter_map(|(c, l)| Some((l.as_ref()?.mean, c.as_ref()?.mean)))
        .collect();
    let every = both.len().div_ceil(max).max(1);
    both.into_iter().step_by(every).collect()
}

/// Advice in words, most urgent first.
fn recommendations(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for (what, c) in [
        ("memory", &r.capacity.memory_percent),
        ("CPU", &r.capacity.cpu_percent),
    ] {
        let Some(c) = c else { continue };
        match (&c.date, &c.earliest) {
            (Some(date), earliest) => out.push(format!(
                "{what} is forecast to reach {}% on {date} (at the earliest {}, at the latest {}): scale {what} up before {}",
                c.threshold,
                earliest.as_deref().unwrap_or(date),
                c.latest.as_deref().unwrap_or("beyond the horizon"),
                earliest.as_deref().unwrap_or(date),
            )),
            (None, Some(earliest)) => out.push(format!(
                "{what} is not forecast to reach {}% within the horizon, but could as early as {earliest}: watch it",
                c.threshold
            )),
            (None, None) => {}
        }
    }
    if let Some(t) = &r.memory_trend
        && t.leak
    {
        out.push(format!(
            "memory grows by {:.1} MB a day (95 % interval {:.1} to {:.1}){}: a leak; find what holds memory, or restart before it matters",
            t.mb_per_day,
            t.mb_per_day_low,
            t.mb_per_day_high,
            if t.restarts > 0 {
                format!(" across {} restarts", t.restarts)
            } else {
                String::new()
            }
        ));
    }
    if let Some(c) = &r.load_correlation
        && !c.not_load_driven_hours.is_empty()
    {
        out.push(format!(
            "CPU at {} ({}) is higher than load explains: a scheduled job? Move it off peak or budget for it",
            c.not_load_driven_hours
                .iter()
                .map(|h| format!("{h:02}:00"))
                .collect::<Vec<_>>()
                .join(", "),
            r.timezone
        ));
    }
    if let Some(routes) = &r.routes
        && let Some(top) = routes.first()
    {
        out.push(format!(
            "{} {} takes {:.0} % of the CPU the routes used: the first place to make cheaper",
            top.method,
            top.route,
            top.share * 100.0
        ));
    }
    if out.is_empty() {
        out.push(format!(
            "no threshold of {}% is forecast within the horizon and no leak is seen: nothing to do",
            r.capacity
                .memory_percent
                .as_ref()
                .or(r.capacity.cpu_percent.as_ref())
                .map_or(70.0, |c| c.threshold)
        ));
    }
    out
}
