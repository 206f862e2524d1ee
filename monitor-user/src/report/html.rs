//! The report as one self-contained HTML page: inline CSS and SVG drawn here, no script and
//! nothing fetched, so it opens from a mail attachment on a host with no internet.
use std::fmt::Write as _;

use super::{document::Report, forecast::Point, peaks::Cell};

const W: f64 = 760.0;
const H: f64 = 260.0;
const PAD: f64 = 44.0;

pub fn page(r: &Report) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1><p class=meta>{} history from {} to {} ({})</p>",
        esc(&r.target),
        esc(&r.source),
        esc(&r.from),
        esc(&r.to),
        esc(&r.timezone)
    );
    body.push_str("<h2>Recommendations</h2><ul>");
    for rec in &r.recommendations {
        let _ = write!(body, "<li>{}</li>", esc(rec));
    }
    body.push_str("</ul>");
    section(&mut body, "Peak hours: CPU %", "heatmap-cpu", |b| {
        r.peaks.cpu_percent.as_ref().map(|c| heatmap(b, c))
    });
    section(&mut body, "Peak hours: memory %", "heatmap-memory", |b| {
        r.peaks.memory_percent.as_ref().map(|c| heatmap(b, c))
    });
    section(&mut body, "CPU against load", "cpu-vs-load", |b| {
        let c = r.load_correlation.as_ref()?;
        let _ = write!(
            b,
            "<p>{}: Spearman {:.2}, {:.3} CPU % per unit, CPU trails load by {} s{}</p>",
            esc(&c.load),
            c.spearman,
            c.cpu_per_load,
            c.lag_seconds,
            if c.not_load_driven_hours.is_empty() {
                String::new()
            } else {
                format!(
                    "; hours not driven by load: {}",
                    c.not_load_driven_hours
                        .iter()
                        .map(|h| format!("{h:02}:00"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        scatter(b, &r.charts.cpu_vs_load);
        Some(())
    });
    section(&mut body, "Memory trend", "memory-trend", |b| {
        let t = r.memory_trend.as_ref()?;
        let _ = write!(
            b,
            "<p class={}>{}: {:+.1} MB/day (95 % {:+.1} to {:+.1}), {} restarts</p>",
            if t.leak { "bad" } else { "good" },
            if t.leak { "Leak" } else { "No leak" },
            t.mb_per_day,
            t.mb_per_day_low,
            t.mb_per_day_high,
            t.restarts
        );
        memory(b, &r.charts.memory_mb_floor, t.mb_per_day);
        Some(())
    });
    for (title, id, history, forecast, crossing) in [
        (
            "Forecast: memory %",
            "forecast-memory",
            &r.charts.memory_percent_hourly,
            &r.forecast.memory_percent,
            &r.capacity.memory_percent,
        ),
        (
            "Forecast: CPU %",
            "forecast-cpu",
            &r.charts.cpu_hourly,
            &r.forecast.cpu_percent,
            &r.capacity.cpu_percent,
        ),
    ] {
        section(&mut body, title, id, |b| {
            let f = forecast.as_ref()?;
            let c = crossing.as_ref()?;
            let _ = write!(
                b,
                "<p>{}% reached: <b>{}</b> (earliest {}, latest {})</p>",
                c.threshold,
                esc(c.date.as_deref().unwrap_or("not within the horizon")),
                esc(c.earliest.as_deref().unwrap_or("-")),
                esc(c.latest.as_deref().unwrap_or("-"))
            );
            fan(b, history, f, c.threshold);
            Some(())
        });
    }
    section(&mut body, "CPU per route", "routes", |b| {
        let routes = r.routes.as_ref()?;
        let n = routes.len().min(12);
        let _ = write!(
            b,
            "<svg class=chart width={W} height={} viewBox=\"0 0 {W} {}\">",
            n as f64 * 22.0 + 10.0,
            n as f64 * 22.0 + 10.0
        );
        for (i, route) in routes.iter().take(n).enumerate() {
            let y = 5.0 + i as f64 * 22.0;
            let _ = write!(
                b,
                "<rect class=bar x=260 y={y} width={:.1} height=16 fill=\"#4a7bd0\"></rect>\
                 <text x=255 y={:.1} text-anchor=end>{} {}</text><text x={:.1} y={:.1}>{:.1} %</text>",
                (route.share * (W - 330.0)).max(1.0),
                y + 12.0,
                esc(&route.method),
                esc(&route.route),
                265.0 + route.share * (W - 330.0),
                y + 12.0,
                route.share * 100.0
            );
        }
        b.push_str("</svg>");
        Some(())
    });
    body.push_str("<h2>Notes</h2><ul>");
    for n in &r.notes {
        let _ = write!(body, "<li>{}</li>", esc(n));
    }
    body.push_str("</ul>");
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>monitor report: {}</title><style>{CSS}</style></head><body>{body}</body></html>\n",
        esc(&r.target)
    )
}

const CSS: &str = "body{font:14px system-ui,sans-serif;margin:24px;max-width:820px;color:#222}\
h2{margin-top:28px;font-size:17px}.meta{color:#666}.bad{color:#b00}.good{color:#070}\
.missing{color:#888;font-style:italic}svg.chart{background:#fafafa;border:1px solid #ddd}\
svg text{font-size:11px;fill:#444}";

/// A section whose body `draw` writes; if it has no data, a line that says so.
fn section(out: &mut String, title: &str, id: &str, draw: impl FnOnce(&mut String) -> Option<()>) {
    let _ = write!(out, "<section id={id}><h2>{}</h2>", esc(title));
    let mut b = String::new();
    match draw(&mut b) {
        Some(()) => out.push_str(&b),
        None => out.push_str("<p class=missing>No data for this section in the range.</p>"),
    }
    out.push_str("</section>");
}

fn heatmap(out: &mut String, cells: &[Cell]) {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let (cw, ch) = (28.0, 22.0);
    let hi = cells.iter().map(|c| c.p95).fold(f64::MIN, f64::max);
    let lo = cells.iter().map(|c| c.p95).fold(f64::MAX, f64::min);
    let _ = write!(
        out,
        "<svg class=chart width={W} height={} viewBox=\"0 0 {W} {}\">",
        7.0 * ch + 30.0,
        7.0 * ch + 30.0
    );
    for (d, name) in DAYS.iter().enumerate() {
        let _ = write!(out, "<text x=4 y={:.1}>{name}</text>", d as f64 * ch + 15.0);
    }
    for h in (0..24).step_by(3) {
        let _ = write!(
            out,
            "<text x={:.1} y={:.1}>{h:02}</text>",
            40.0 + h as f64 * cw,
            7.0 * ch + 16.0
        );
    }
    for c in cells {
        let f = if hi > lo {
            (c.p95 - lo) / (hi - lo)
        } else {
            0.5
        };
        let _ = write!(
            out,
            "<rect class=cell x={:.1} y={:.1} width={} height={} fill=\"{}\"><title>{} {:02}:00 p95 {:.1} max {:.1}</title></rect>",
            40.0 + f64::from(c.hour) * cw,
            f64::from(c.weekday) * ch,
            cw - 1.0,
            ch - 1.0,
            heat(f),
            DAYS[usize::from(c.weekday)],
            c.hour,
            c.p95,
            c.max
        );
    }
    out.push_str("</svg>");
}

/// From pale yellow (0) to dark red (1).
fn heat(f: f64) -> String {
    let f = f.clamp(0.0, 1.0);
    let (r, g, b) = (255.0 - 80.0 * f, 240.0 - 200.0 * f, 200.0 - 170.0 * f);
    format!("rgb({r:.0},{g:.0},{b:.0})")
}

/// Maps data ranges onto the chart's plot area.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(xs: impl Iterator<Item = f64> + Clone, ys: impl Iterator<Item = f64> + Clone) -> Self {
        let (x0, x1) = bounds(xs);
        let (y0, y1) = bounds(ys);
        Self { x0, x1, y0, y1 }
    }

    fn x(&self, v: f64) -> f64 {
        PAD + (v - self.x0) / (self.x1 - self.x0) * (W - 2.0 * PAD)
    }

    fn y(&self, v: f64) -> f64 {
        H - PAD + -(v - self.y0) / (self.y1 - self.y0) * (H - 2.0 * PAD)
    }

    fn axes(&self, out: &mut String, x_label: &str, y_label: &str) {
        let _ = write!(
            out,
            "<line x1={PAD} y1={b} x2={r} y2={b} stroke=\"#999\"></line>\
             <line x1={PAD} y1={PAD} x2={PAD} y2={b} stroke=\"#999\"></line>\
             <text x={PAD} y={t}>{}</text><text x={r} y={t} text-anchor=end>{}</text>\
             <text x=4 y={b}>{:.1}</text><text x=4 y={PAD}>{:.1}</text>",
            esc(x_label),
            esc(y_label),
            self.y0,
            self.y1,
            b = H - PAD,
            r = W - PAD,
            t = H - PAD + 16.0,
        );
    }
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    }
}

fn svg_open(out: &mut String) {
    let _ = write!(
        out,
        "<svg class=chart width={W} height={H} viewBox=\"0 0 {W} {H}\">"
    );
}

fn polyline(out: &mut String, f: &Frame, points: &[(f64, f64)], color: &str, class: &str) {
    let _ = write!(
        out,
        "<polyline class={class} fill=none stroke=\"{color}\" points=\""
    );
    for (x, y) in points {
        let _ = write!(out, "{:.1},{:.1} ", f.x(*x), f.y(*y));
    }
    out.push_str("\"></polyline>");
}

fn scatter(out: &mut String, pairs: &[(f64, f64)]) {
    let f = Frame::new(pairs.iter().map(|p| p.0), pairs.iter().map(|p| p.1));
    svg_open(out);
    f.axes(out, "load", "CPU %");
    for (x, y) in pairs {
        let _ = write!(
            out,
            "<circle class=dot cx={:.1} cy={:.1} r=1.6 fill=\"#4a7bd0\" fill-opacity=0.5></circle>",
            f.x(*x),
            f.y(*y)
        );
    }
    out.push_str("</svg>");
}

fn memory(out: &mut String, floors: &[(i64, f64)], mb_per_day: f64) {
    let pts: Vec<(f64, f64)> = floors
        .iter()
        .map(|(t, v)| (*t as f64 / 86_400_000.0, *v))
        .collect();
    let f = Frame::new(pts.iter().map(|p| p.0), pts.iter().map(|p| p.1));
    svg_open(out);
    f.axes(out, "days", "MB (hourly floor)");
    polyline(out, &f, &pts, "#4a7bd0", "series");
    // The trend through the floors' middle point.
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        let mid = pts[pts.len() / 2];
        let at = |x: f64| mid.1 + mb_per_day * (x - mid.0);
        polyline(
            out,
            &f,
            &[(first.0, at(first.0)), (last.0, at(last.0))],
            "#b00",
            "trend",
        );
    }
    out.push_str("</svg>");
}

/// The last four weeks of history, the forecast's mean and its 95 % band, and the threshold.
fn fan(out: &mut String, history: &[(i64, f64)], forecast: &[Point], threshold: f64) {
    let start = forecast.first().map_or(0, |p| p.t_ms - 28 * 86_400_000);
    let hist: Vec<(f64, f64)> = history
        .iter()
        .filter(|(t, _)| *t >= start)
        .map(|(t, v)| (*t as f64, *v))
        .collect();
    let f = Frame::new(
        hist.iter()
            .map(|p| p.0)
            .chain(forecast.iter().map(|p| p.t_ms as f64)),
        hist.iter()
            .map(|p| p.1)
            .chain(forecast.iter().flat_map(|p| [p.low, p.high]))
            .chain([threshold]),
    );
    svg_open(out);
    f.axes(out, "history, then forecast", "%");
    out.push_str("<polygon class=band fill=\"#4a7bd0\" fill-opacity=0.2 points=\"");
    for p in forecast {
        let _ = write!(out, "{:.1},{:.1} ", f.x(p.t_ms as f64), f.y(p.high));
    }
    for p in forecast.iter().rev() {
        let _ = write!(out, "{:.1},{:.1} ", f.x(p.t_ms as f64), f.y(p.low));
    }
    out.push_str("\"></polygon>");
    polyline(out, &f, &hist, "#444", "series");
    let mean: Vec<(f64, f64)> = forecast.iter().map(|p| (p.t_ms as f64, p.mean)).collect();
    polyline(out, &f, &mean, "#4a7bd0", "forecast");
    let _ = write!(
        out,
        "<line class=threshold x1={PAD} x2={} y1={y:.1} y2={y:.1} stroke=\"#b00\" stroke-dasharray=\"4 3\"></line>",
        W - PAD,
        y = f.y(threshold)
    );
    out.push_str("</svg>");
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
