//! OpenMetrics text with timestamps, the format `promtool tsdb create-blocks-from openmetrics`
//! reads: parsed strictly for `monitor history import`, written for `monitor history export`.
//!
//! The parser follows the OpenMetrics 1.0 ABNF and its rules for the text format, and refuses a
//! file at its first deviation, naming the line and the reason: descriptors (`# TYPE`, `# HELP`,
//! `# UNIT`) before their family's samples and once each, families not interleaved, sample
//! names that belong to their family's type, label names unique within a sample, numbers and
//! timestamps as the grammar writes them, a series' timestamps increasing, nothing but `# EOF`
//! at the end. History needs a time and a target per sample, so a sample without a timestamp or
//! a `target` label is refused too, as are histogram, summary and the other composite types
//! (monitor's history keeps gauges and counters; it would rather refuse than drop them).
//! (No crate under a licence this project can ship parses OpenMetrics strictly, hence this one.)
use std::{collections::HashMap, fmt::Write as _};

use super::{
    chunk::Sample,
    series::{SeriesKey, TARGET_LABEL},
};

/// One series of a parsed file and its samples, in file order (increasing time).
#[derive(Debug, PartialEq)]
pub struct ParsedSeries {
    pub key: SeriesKey,
    /// The family's type: "gauge", "counter" or "unknown".
    pub kind: &'static str,
    pub samples: Vec<Sample>,
}

/// A file's reason for refusal, with its line (1-based).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// The family being read: its name and type, and what has been seen of it.
struct Family {
    name: String,
    kind: Kind,
    seen_type: bool,
    seen_help: bool,
    seen_unit: bool,
    seen_sample: bool,
}

impl Family {
    /// A family as its first line names it: of type unknown until a `# TYPE` says otherwise.
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: Kind::Unknown,
            seen_type: false,
            seen_help: false,
            seen_unit: false,
            seen_sample: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Gauge,
    Counter,
    Unknown,
    /// A type the grammar allows and history does not keep.
    Other(&'static str),
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gauge" => Self::Gauge,
            "counter" => Self::Counter,
            "unknown" => Self::Unknown,
            "histogram" => Self::Other("histogram"),
            "gaugehistogram" => Self::Other("gaugehistogram"),
            "stateset" => Self::Other("stateset"),
            "info" => Self::Other("info"),
            "summary" => Self::Other("summary"),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Unknown => "unknown",
            Self::Other(n) => n,
        }
    }
}

/// Parses a whole exposition. Every sample has a timestamp (seconds; kept to the millisecond)
/// and a `target` label.
pub fn parse(text: &str) -> Result<Vec<ParsedSeries>, ParseError> {
    let mut out: Vec<ParsedSeries> = Vec::new();
    let mut index: HashMap<SeriesKey, usize> = HashMap::new();
    let mut families_done: std::collections::HashSet<String> = Default::default();
    let mut family: Option<Family> = None;
    let mut eof = false;
    if text.is_empty() {
        return bail_line(1, "an empty file (an exposition ends with # EOF)");
    }
    // The grammar's last LF is optional.
    let body = text.strip_suffix('\n').unwrap_or(text);
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        let err = |reason: String| ParseError { line: n, reason };
        if eof {
            return Err(err("content after # EOF".into()));
        }
        if line.is_empty() {
            return Err(err("an empty line (OpenMetrics has none)".into()));
        }
        if line.ends_with('\r') {
            return Err(err("a carriage return (lines end with \\n alone)".into()));
        }
        if let Some(rest) = line.strip_prefix('#') {
            if rest == " EOF" {
                eof = true;
                continue;
            }
            let rest = rest
                .strip_prefix(' ')
                .ok_or_else(|| err("a comment without a space after #".into()))?;
            let (keyword, rest) = rest
                .split_once(' ')
                .ok_or_else(|| err(format!("\"# {rest}\" is not a descriptor")))?;
            let (name, value) = match rest.split_once(' ') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            check_metric_name(name).map_err(err)?;
            let starts_family = family.as_ref().is_none_or(|f| f.name != name);
            if starts_family {
                if families_done.contains(name) {
                    return Err(err(format!(
                        "family {name} appears again after another family (families must not be interleaved)"
                    )));
                }
                if let Some(f) = family.take() {
                    families_done.insert(f.name);
                }
                family = Some(Family::new(name));
            }
            let f = family.as_mut().expect("set above");
            if f.seen_sample {
                return Err(err(format!(
                    "# {keyword} for {name} after its samples (descriptors come first)"
                )));
            }
            match keyword {
                "TYPE" => {
                    let v = value.ok_or_else(|| err(format!("# TYPE {name} without a type")))?;
                    if f.seen_type {
                        return Err(err(format!("a second # TYPE for {name}")));
                    }
                    f.kind = Kind::parse(v)
                        .ok_or_else(|| err(format!("\"{v}\" is not an OpenMetrics type")))?;
                    f.seen_type = true;
                }
                "HELP" => {
                    // The grammar puts a space before the text, even an empty one.
                    let Some(value) = value else {
                        return Err(err(format!(
                            "# HELP {name} without a space before its text"
                        )));
                    };
                    if f.seen_help {
                        return Err(err(format!("a second # HELP for {name}")));
                    }
                    unescape(value).map_err(err)?;
                    f.seen_help = true;
                }
                "UNIT" => {
                    let Some(unit) = value else {
                        return Err(err(format!(
                            "# UNIT {name} without a space before its unit"
                        )));
                    };
                    if f.seen_unit {
                        return Err(err(format!("a second # UNIT for {name}")));
                    }
                    if !unit
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                    {
                        return Err(err(format!("\"{unit}\" is not a unit")));
                    }
                    if !unit.is_empty() && !name.ends_with(&format!("_{unit}")) {
                        return Err(err(format!("{name} does not end with its unit _{unit}")));
                    }
                    f.seen_unit = true;
                }
                other => return Err(err(format!("\"# {other}\" is not a descriptor"))),
            }
            continue;
        }
        let s = sample_line(line).map_err(err)?;
        // The sample's family: the current one when the name belongs to it, else a new family
        // of type unknown named as the sample.
        let belongs = family
            .as_ref()
            .is_some_and(|f| sample_belongs(f.kind, &f.name, s.name));
        if !belongs {
            if families_done.contains(s.name) || family.as_ref().is_some_and(|f| f.name == s.name) {
                return Err(err(format!(
                    "sample {} does not belong to its family's type, or its family was interleaved",
                    s.name
                )));
            }
            if let Some(f) = family.take() {
                families_done.insert(f.name);
            }
            family = Some(Family::new(s.name));
        }
        let f = family.as_mut().expect("set above");
        f.seen_sample = true;
        let kind = match f.kind {
            Kind::Other(t) => {
                return Err(err(format!(
                    "{} is a {t}: monitor's history keeps gauges, counters and unknown-typed series",
                    f.name
                )));
            }
            k => k,
        };
        let Some(t_ms) = s.t_ms else {
            return Err(err(format!(
                "sample {} has no timestamp (history needs one)",
                s.name
            )));
        };
        let target = s
            .labels
            .iter()
            .find(|(k, _)| *k == TARGET_LABEL)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| err(format!("sample {} has no target label", s.name)))?;
        let pairs: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let key = SeriesKey::new(target, s.name, &pairs);
        let at = *index.entry(key.clone()).or_insert_with(|| {
            out.push(ParsedSeries {
                key,
                kind: kind.name(),
                samples: Vec::new(),
            });
            out.len() - 1
        });
        let series = &mut out[at];
        if let Some(last) = series.samples.last()
            && last.t_ms >= t_ms
        {
            return Err(err(format!(
                "{} goes back in time or repeats a timestamp ({} ms after {} ms); a series' timestamps must increase",
                series.key.exposition(),
                t_ms,
                last.t_ms
            )));
        }
        series.samples.push(Sample {
            t_ms,
            value: s.value,
        });
    }
    if !eof {
        return Err(ParseError {
            line: body.split('\n').count(),
            reason: "the file does not end with # EOF".into(),
        });
    }
    Ok(out)
}

fn bail_line<T>(line: usize, reason: &str) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        reason: reason.to_owned(),
    })
}

/// Whether a sample named `sample` belongs to family `family` of type `kind`.
fn sample_belongs(kind: Kind, family: &str, sample: &str) -> bool {
    let suffixes: &[&str] = match kind {
        Kind::Gauge | Kind::Unknown => &[""],
        Kind::Counter => &["_total", "_created"],
        Kind::Other("histogram" | "gaugehistogram") => {
            &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        }
        Kind::Other("summary") => &["", "_count", "_sum", "_created"],
        Kind::Other("info") => &["_info"],
        Kind::Other(_) => &[""],
    };
    sample
        .strip_prefix(family)
        .is_some_and(|rest| suffixes.contains(&rest))
}

struct SampleLine<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
    t_ms: Option<i64>,
}

/// `name{labels} value [timestamp] [# exemplar]`.
fn sample_line(line: &str) -> Result<SampleLine<'_>, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("\"{line}\" is not a sample (name, labels, value)"))?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(after)?;
        labels = parsed;
        rest = after;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value of {name}"))?;
    // An exemplar starts with " # ": history has no place for it; it must still be well formed.
    let (main, exemplar) = match rest.split_once(" # ") {
        Some((m, e)) => (m, Some(e)),
        None => (rest, None),
    };
    if let Some(e) = exemplar {
        check_exemplar(e).map_err(|why| format!("a malformed exemplar: {why}"))?;
    }
    let mut parts = main.split(' ');
    let value_text = parts.next().unwrap_or("");
    let value = number(value_text).ok_or_else(|| format!("\"{value_text}\" is not a number"))?;
    let t_ms = match parts.next() {
        Some(ts) => {
            let secs = real_number(ts).ok_or_else(|| format!("\"{ts}\" is not a timestamp"))?;
            let ms = (secs * 1000.0).round();
            if !ms.is_finite() || ms.abs() > 9.0e15 {
                return Err(format!("timestamp {ts} is out of range"));
            }
            Some(ms as i64)
        }
        None => None,
    };
    if let Some(extra) = parts.next() {
        return Err(format!("\"{extra}\" after the timestamp"));
    }
    Ok(SampleLine {
        name,
        labels,
        value,
        t_ms,
    })
}

/// `{labels} value [timestamp]`.
fn check_exemplar(e: &str) -> Result<(), String> {
    let after = e.strip_prefix('{').ok_or("no label set")?;
    let (_, rest) = label_set(after)?;
    let rest = rest.strip_prefix(' ').ok_or("no value")?;
    let mut parts = rest.split(' ');
    let v = parts.next().unwrap_or("");
    number(v).ok_or_else(|| format!("\"{v}\" is not a number"))?;
    if let Some(ts) = parts.next() {
        real_number(ts).ok_or_else(|| format!("\"{ts}\" is not a timestamp"))?;
    }
    match parts.next() {
        Some(x) => Err(format!("\"{x}\" after the exemplar")),
        None => Ok(()),
    }
}

/// The labels after `{`: the pairs, and the text after `}`.
#[allow(clippy::type_complexity)]
fn label_set(mut s: &str) -> Result<(Vec<(&str, String)>, &str), String> {
    let mut labels: Vec<(&str, String)> = Vec::new();
    if let Some(rest) = s.strip_prefix('}') {
        return Ok((labels, rest));
    }
    loop {
        let eq = s.find('=').ok_or("a label without =")?;
        let name = &s[..eq];
        if !is_label_name(name) {
            return Err(format!("\"{name}\" is not a label name"));
        }
        if labels.iter().any(|(k, _)| *k == name) {
            return Err(format!("label {name} appears twice"));
        }
        let after = s[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label {name} is not quoted"))?;
        let close =
            closing_quote(after).ok_or_else(|| format!("label {name}'s value is not closed"))?;
        let value = unescape(&after[..close])?;
        labels.push((name, value));
        s = &after[close + 1..];
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        s = s
            .strip_prefix(',')
            .ok_or("labels not separated by a comma")?;
    }
}

/// The index of the unescaped `"` that ends a quoted string.
fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// An escaped string: `\\`, `\n` and `\"` are its only escapes, and a bare `"` is not allowed.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') => out.push('"'),
                Some(o) => return Err(format!("\"\\{o}\" is not an escape")),
                None => return Err("a string ending in a lone backslash".into()),
            },
            '"' => return Err("an unescaped \" in a string".into()),
            '\n' => return Err("a newline in a string".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("\"{name}\" is not a metric name"))
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `number = realnumber / [sign] ("inf" / "infinity") / "nan"`, case-insensitive words.
fn number(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (sign, word) = match lower.as_bytes().first() {
        Some(b'+') => (1.0, &lower[1..]),
        Some(b'-') => (-1.0, &lower[1..]),
        _ => (1.0, lower.as_str()),
    };
    match word {
        "inf" | "infinity" => Some(sign * f64::INFINITY),
        "nan" if word.len() == lower.len() => Some(f64::NAN),
        _ => real_number(s),
    }
}

/// `realnumber`: sign, digits, an optional fraction and exponent; at least one digit.
fn real_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse().ok()
}

/// The family a stored series is written under, and the type line's name: a counter's samples
/// end in `_total` (or `_created`), its family does not.
pub fn family_of<'a>(name: &'a str, kind: &str) -> &'a str {
    if kind == "counter" {
        for suffix in ["_total", "_created"] {
            if let Some(f) = name.strip_suffix(suffix) {
                return f;
            }
        }
    }
    name
}

/// A value as the grammar writes it, the shortest text that reads back to the same bits.
pub fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Rust's Display is the shortest round-trip form, never with an exponent.
        let _ = write!(out, "{v}");
    }
}

/// A timestamp in seconds, to the millisecond.
pub fn format_timestamp(t_ms: i64, out: &mut String) {
    let sign = if t_ms < 0 { "-" } else { "" };
    let a = t_ms.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:03}", a / 1000, a % 1000);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        parse(text).expect_err(text)
    }

    #[test]
    fn a_well_formed_file_parses_with_families_types_and_escapes() {
        let text = "# TYPE app_syscalls counter\n# HELP app_syscalls Syscalls \\\\ made\n\
                    app_syscalls_total{target=\"api\",syscall=\"read\"} 7 1700000000.5\n\
                    app_syscalls_total{target=\"api\",syscall=\"read\"} 9 1700000005.5\n\
                    app_syscalls_total{syscall=\"write\",target=\"api\"} 1e3 1700000000.5\n\
                    app_cpu_usage_percent{target=\"a\\\"b\"} +Inf 1700000000\n\
                    # TYPE app_memory_usage_percent gauge\n\
                    # UNIT app_memory_usage_percent percent\n\
                    app_memory_usage_percent{target=\"api\"} NaN 1.7e9\n# EOF\n";
        let p = parse(text).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].kind, "counter");
        assert_eq!(
            p[0].key,
            SeriesKey::new("api", "app_syscalls_total", &[("syscall", "read")])
        );
        assert_eq!(
            p[0].samples,
            vec![
                Sample {
                    t_ms: 1_700_000_000_500,
                    value: 7.0
                },
                Sample {
                    t_ms: 1_700_000_005_500,
                    value: 9.0
                }
            ]
        );
        assert_eq!(p[1].samples[0].value, 1000.0);
        assert_eq!(p[2].kind, "unknown");
        assert_eq!(p[2].key.target, "a\"b");
        assert!(p[3].samples[0].value.is_nan());
        assert_eq!(p[3].samples[0].t_ms, 1_700_000_000_000);
    }

    #[test]
    fn every_deviation_is_refused_with_its_line() {
        let ok = "m{target=\"t\"} 1 1\n";
        let cases: &[(&str, usize, &str)] = &[
            ("m{target=\"t\"} 1 1\n", 1, "# EOF"),
            ("", 1, "empty file"),
            ("m{target=\"t\"} 1 1 # {a=\"b\"} x\n# EOF\n", 1, "exemplar"),
            ("m{target=\"t\"} 1 1\n\n# EOF\n", 2, "empty line"),
            (
                "m{target=\"t\"} 1 1\n# EOF\nm{target=\"t\"} 1 2\n",
                3,
                "after # EOF",
            ),
            ("m{target=\"t\"} 1\n# EOF\n", 1, "no timestamp"),
            ("m{job=\"t\"} 1 1\n# EOF\n", 1, "no target"),
            (
                "m{target=\"t\"} 1 2\nm{target=\"t\"} 1 2\n# EOF\n",
                2,
                "repeats",
            ),
            (
                "m{target=\"t\"} 1 2\nm{target=\"t\"} 1 1\n# EOF\n",
                2,
                "back in time",
            ),
            ("m{target=\"t\",target=\"u\"} 1 1\n# EOF\n", 1, "twice"),
            ("m{target=\"t\"} one 1\n# EOF\n", 1, "not a number"),
            ("m{target=\"t\"} 1 1.2.3\n# EOF\n", 1, "not a timestamp"),
            ("m{target=\"t\"} 1 1 5\n# EOF\n", 1, "after the timestamp"),
            ("1m{target=\"t\"} 1 1\n# EOF\n", 1, "metric name"),
            ("m{9=\"t\"} 1 1\n# EOF\n", 1, "label name"),
            ("m{target=t} 1 1\n# EOF\n", 1, "not quoted"),
            ("m{target=\"t\\x\"} 1 1\n# EOF\n", 1, "escape"),
            ("m{target=\"t\" } 1 1\n# EOF\n", 1, "comma"),
            (
                "# TYPE m counter\nm{target=\"t\"} 1 1\n# EOF\n",
                2,
                "belong",
            ),
            (
                "# TYPE m gauge\n# TYPE m gauge\n# EOF\n",
                2,
                "second # TYPE",
            ),
            ("# TYPE m widget\n# EOF\n", 1, "not an OpenMetrics type"),
            (
                "# TYPE h histogram\nh_bucket{target=\"t\",le=\"1\"} 1 1\n# EOF\n",
                2,
                "histogram",
            ),
            (
                "m{target=\"t\"} 1 1\n# TYPE m gauge\n# EOF\n",
                2,
                "after its samples",
            ),
            (
                "a{target=\"t\"} 1 1\nb{target=\"t\"} 1 1\na{target=\"t\"} 1 2\n# EOF\n",
                3,
                "interleaved",
            ),
            ("m{target=\"t\"} 1 1\r\n# EOF\n", 1, "carriage return"),
            ("#comment\n# EOF\n", 1, "space after #"),
            ("# UNIT m_bytes seconds\n# EOF\n", 1, "unit"),
            ("# HELP m\n# EOF\n", 1, "space before its text"),
            ("# UNIT m_bytes\n# EOF\n", 1, "space before its unit"),
            ("m{target=\"t\"}  1 1\n# EOF\n", 1, "not a number"),
        ];
        assert!(parse(&format!("{ok}# EOF\n")).is_ok());
        assert!(
            parse(&format!("{ok}# EOF")).is_ok(),
            "the last LF is optional"
        );
        assert!(parse("m{target=\"t\"} 1 1 # {a=\"b\"} 2 3\n# EOF\n").is_ok());
        for (text, line, reason) in cases {
            let e = err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn values_and_timestamps_are_written_so_they_read_back_exactly() {
        for v in [
            0.0,
            -0.0,
            1.5,
            0.1 + 0.2,
            1e300,
            -4.9e-324,
            f64::MAX,
            123456789.0,
        ] {
            let mut s = String::new();
            format_value(v, &mut s);
            assert_eq!(number(&s).unwrap().to_bits(), v.to_bits(), "{s}");
        }
        let mut s = String::new();
        format_value(f64::NEG_INFINITY, &mut s);
        assert_eq!(s, "-Inf");
        for t in [0, 1, 999, 1_700_000_000_005, -1500] {
            let mut s = String::new();
            format_timestamp(t, &mut s);
            assert_eq!((real_number(&s).unwrap() * 1000.0).round() as i64, t, "{s}");
        }
        assert_eq!(family_of("app_syscalls_total", "counter"), "app_syscalls");
        assert_eq!(family_of("app_x_total", "gauge"), "app_x_total");
    }
}
