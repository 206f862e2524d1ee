//! Parsing and checking the `[[rule]]` entries of a config file; every error names the file, the
//! line and the key.
use std::{collections::BTreeMap, ops::Range, path::Path, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::*;

/// One `[[rule]]` entry as written; every key is checked by hand so errors name its line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    route: Option<Spanned<String>>,
    above: Option<Spanned<f64>>,
    below: Option<Spanned<f64>>,
    clear: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    for_duration: Option<Spanned<toml::Value>>,
    severity: Option<Spanned<String>>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    annotations: Option<Spanned<BTreeMap<String, String>>>,
    slope_per_min_above: Option<Spanned<f64>>,
    slope_per_min_below: Option<Spanned<f64>>,
    window: Option<Spanned<toml::Value>>,
    min_r2: Option<Spanned<f64>>,
    doubling_time_below: Option<Spanned<toml::Value>>,
    min_level: Option<Spanned<f64>>,
}

/// The whole config file, of which only `rule` matters here (the rest is config.rs's).
#[derive(Deserialize)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleConfig>>,
}

/// Parses the `[[rule]]` entries of a whole config file. Other tables are ignored.
pub fn parse_rules(text: &str, file: &Path) -> Result<Vec<Rule>, RulesError> {
    let lines = Lines { text, file };
    let parsed: RulesFile = toml::from_str(text).map_err(|e| RulesError::Toml {
        file: file.to_path_buf(),
        line: e.span().map_or(1, |s| lines.line(s.start)),
        message: e.message().to_string(),
    })?;
    let mut rules: Vec<Rule> = Vec::with_capacity(parsed.rule.len());
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    for (index, entry) in parsed.rule.iter().enumerate() {
        let checker = Checker {
            lines: &lines,
            rule: entry.get_ref().name.as_ref().map_or_else(
                || format!("#{}", index + 1),
                |n| format!("{:?}", n.get_ref()),
            ),
            line: lines.line(entry.span().start),
        };
        let rule = checker.rule(entry.get_ref())?;
        let line = entry
            .get_ref()
            .name
            .as_ref()
            .map_or(checker.line, |n| lines.line(n.span().start));
        if let Some(first) = first_line.insert(rule.name.clone(), line) {
            return Err(checker.error(
                Some(line),
                "name",
                format!("a rule of this name is already defined on line {first}"),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

struct Lines<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Lines<'_> {
    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// Builds one rule, reporting the first problem with its line and key.
struct Checker<'a> {
    lines: &'a Lines<'a>,
    rule: String,
    /// The `[[rule]]` header's line, for keys that are missing.
    line: usize,
}

/// A kind-specific key: its name, where it was given, and the kinds it applies to.
type KindKey = (&'static str, Option<Range<usize>>, &'static [Kind]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Threshold,
    Trend,
    Exponential,
}

impl Checker<'_> {
    fn error(&self, line: Option<usize>, key: &'static str, message: String) -> RulesError {
        RulesError::Invalid {
            file: self.lines.file.to_path_buf(),
            line: line.unwrap_or(self.line),
            rule: self.rule.clone(),
            key,
            message,
        }
    }

    fn at(&self, span: Range<usize>, key: &'static str, message: String) -> RulesError {
        self.error(Some(self.lines.line(span.start)), key, message)
    }

    fn missing(&self, key: &'static str, message: &str) -> RulesError {
        self.error(None, key, message.to_string())
    }

    fn number(
        &self,
        value: &Option<Spanned<f64>>,
        key: &'static str,
    ) -> Result<Option<f64>, RulesError> {
        match value {
            Some(v) if !v.get_ref().is_finite() => {
                Err(self.at(v.span(), key, "must be a finite number".into()))
            }
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    }

    fn duration(
        &self,
        value: &Option<Spanned<toml::Value>>,
        key: &'static str,
    ) -> Result<Option<Duration>, RulesError> {
        let Some(v) = value else { return Ok(None) };
        let hint = "write a duration such as \"30s\", \"5m\" or \"1h\"";
        match v.get_ref() {
            toml::Value::String(s) => humantime::parse_duration(s).map(Some).map_err(|e| {
                self.at(
                    v.span(),
                    key,
                    format!("{s:?} is not a duration ({e}); {hint}"),
                )
            }),
            other => Err(self.at(
                v.span(),
                key,
                format!("expected a string, found {}; {hint}", other.type_str()),
            )),
        }
    }

    fn positive_duration(
        &self,
        value: &Option<Spanned<toml::Value>>,
        key: &'static str,
        default: Duration,
    ) -> Result<Duration, RulesError> {
        let d = self.duration(value, key)?.unwrap_or(default);
        match value {
            Some(v) if d < Duration::from_secs(1) => {
                Err(self.at(v.span(), key, "must be at least 1s".into()))
            }
            _ => Ok(d),
        }
    }

    fn min_r2(&self, value: &Option<Spanned<f64>>) -> Result<f64, RulesError> {
        let r2 = self.number(value, "min_r2")?.unwrap_or(DEFAULT_MIN_R2);
        match value {
            Some(v) if !(0.0..=1.0).contains(&r2) => {
                Err(self.at(v.span(), "min_r2", format!("{r2} is not between 0 and 1")))
            }
            _ => Ok(r2),
        }
    }

    /// Exactly one of the two sides; returns it with its value.
    fn one_side(
        &self,
        (above_key, above): (&'static str, &Option<Spanned<f64>>),
        (below_key, below): (&'static str, &Option<Spanned<f64>>),
        kind: &str,
    ) -> Result<(Direction, f64), RulesError> {
        let a = self.number(above, above_key)?;
        let b = self.number(below, below_key)?;
        match (a, b, below) {
            (Some(_), Some(_), Some(b_span)) => Err(self.at(
                b_span.span(),
                below_key,
                format!("give either {above_key} or {below_key}, not both"),
            )),
            (Some(a), _, _) => Ok((Direction::Above, a)),
            (None, Some(b), _) => Ok((Direction::Below, b)),
            _ => Err(self.missing(
                above_key,
                &format!("a {kind} rule needs {above_key} or {below_key}"),
            )),
        }
    }

    /// `clear` must be on the resolving side of the threshold (or equal to it).
    fn clear(
        &self,
        value: &Option<Spanned<f64>>,
        direction: Direction,
        threshold: f64,
        threshold_key: &str,
    ) -> Result<f64, RulesError> {
        let Some(clear) = self.number(value, "clear")? else {
            return Ok(threshold);
        };
        if direction.beyond(clear, threshold) {
            let (side, verb) = match direction {
                Direction::Above => ("at or below", "falls back to"),
                Direction::Below => ("at or above", "rises back to"),
            };
            let span = value.as_ref().map(|v| v.span()).unwrap_or_default();
            return Err(self.at(
                span,
                "clear",
                format!(
                    "{clear} must be {side} {threshold_key} = {threshold} (a firing alert \
                     resolves when the value {verb} clear)"
                ),
            ));
        }
        Ok(clear)
    }

    fn name_map(
        &self,
        map: &Option<Spanned<BTreeMap<String, String>>>,
        key: &'static str,
        reserved: &[&str],
    ) -> Result<BTreeMap<String, String>, RulesError> {
        let Some(map) = map else {
            return Ok(BTreeMap::new());
        };
        for name in map.get_ref().keys() {
            if !is_label_name(name) || name.starts_with("__") {
                return Err(self.at(
                    map.span(),
                    key,
                    format!(
                        "{name:?} is not a valid name (letters, digits and '_', not starting \
                         with a digit or \"__\")"
                    ),
                ));
            }
            if reserved.contains(&name.as_str()) {
                return Err(self.at(
                    map.span(),
                    key,
                    format!("{name:?} is set by monitor itself and cannot be given here"),
                ));
            }
        }
        Ok(map.get_ref().clone())
    }

    fn rule(&self, c: &RuleConfig) -> Result<Rule, RulesError> {
        let name = c
            .name
            .as_ref()
            .ok_or_else(|| self.missing("name", "every rule needs a name (its alertname)"))?;
        if !is_label_name(name.get_ref()) {
            return Err(self.at(
                name.span(),
                "name",
                "must be letters, digits and '_', not starting with a digit (like HighMemory)"
                    .into(),
            ));
        }
        let kind = match &c.kind {
            None => Kind::Threshold,
            Some(k) => match k.get_ref().as_str() {
                "threshold" => Kind::Threshold,
                "trend" => Kind::Trend,
                "exponential" => Kind::Exponential,
                other => {
                    return Err(self.at(
                        k.span(),
                        "kind",
                        format!(
                            "unknown kind {other:?} (expected \"threshold\", \"trend\" or \
                             \"exponential\")"
                        ),
                    ));
                }
            },
        };
        let kind_name = match kind {
            Kind::Threshold => "threshold",
            Kind::Trend => "trend",
            Kind::Exponential => "exponential",
        };
        let metric_cfg = c
            .metric
            .as_ref()
            .ok_or_else(|| self.missing("metric", "every rule needs a metric"))?;
        let metric = METRICS
            .iter()
            .copied()
            .find(|m| m == metric_cfg.get_ref())
            .ok_or_else(|| {
                self.at(
                    metric_cfg.span(),
                    "metric",
                    unknown_metric(metric_cfg.get_ref()),
                )
            })?;

        // Keys that belong to another kind are mistakes, not options to ignore.
        let specific: [KindKey; 9] = [
            (
                "above",
                c.above.as_ref().map(|v| v.span()),
                &[Kind::Threshold],
            ),
            (
                "below",
                c.below.as_ref().map(|v| v.span()),
                &[Kind::Threshold],
            ),
            (
                "clear",
                c.clear.as_ref().map(|v| v.span()),
                &[Kind::Threshold, Kind::Trend],
            ),
            (
                "slope_per_min_above",
                c.slope_per_min_above.as_ref().map(|v| v.span()),
                &[Kind::Trend],
            ),
            (
                "slope_per_min_below",
                c.slope_per_min_below.as_ref().map(|v| v.span()),
                &[Kind::Trend],
            ),
            (
                "window",
                c.window.as_ref().map(|v| v.span()),
                &[Kind::Trend, Kind::Exponential],
            ),
            (
                "min_r2",
                c.min_r2.as_ref().map(|v| v.span()),
                &[Kind::Trend, Kind::Exponential],
            ),
            (
                "doubling_time_below",
                c.doubling_time_below.as_ref().map(|v| v.span()),
                &[Kind::Exponential],
            ),
            (
                "min_level",
                c.min_level.as_ref().map(|v| v.span()),
                &[Kind::Exponential],
            ),
        ];
        for (key, at, kinds) in &specific {
            if let Some(at) = at
                && !kinds.contains(&kind)
            {
                let hint = match kind {
                    Kind::Threshold => "above or below, and clear",
                    Kind::Trend => {
                        "slope_per_min_above or slope_per_min_below, window, min_r2, clear"
                    }
                    Kind::Exponential => "doubling_time_below, window, min_r2, min_level",
                };
                return Err(self.at(
                    at.clone(),
                    key,
                    format!("does not apply to kind = {kind_name:?} (it takes {hint})"),
                ));
            }
        }

        let condition = match kind {
            Kind::Threshold => {
                let (direction, threshold) =
                    self.one_side(("above", &c.above), ("below", &c.below), kind_name)?;
                let clear = self.clear(&c.clear, direction, threshold, direction.word())?;
                Condition::Threshold {
                    direction,
                    threshold,
                    clear,
                }
            }
            Kind::Trend => {
                let (direction, slope) = self.one_side(
                    ("slope_per_min_above", &c.slope_per_min_above),
                    ("slope_per_min_below", &c.slope_per_min_below),
                    kind_name,
                )?;
                let key = match direction {
                    Direction::Above => "slope_per_min_above",
                    Direction::Below => "slope_per_min_below",
                };
                Condition::Trend {
                    direction,
                    slope_per_min: slope,
                    clear: self.clear(&c.clear, direction, slope, key)?,
                    window: self.positive_duration(&c.window, "window", DEFAULT_TREND_WINDOW)?,
                    min_r2: self.min_r2(&c.min_r2)?,
                }
            }
            Kind::Exponential => Condition::Exponential {
                doubling_time_below: self.positive_duration(
                    &c.doubling_time_below,
                    "doubling_time_below",
                    DEFAULT_DOUBLING,
                )?,
                window: self.positive_duration(&c.window, "window", DEFAULT_EXP_WINDOW)?,
                min_r2: self.min_r2(&c.min_r2)?,
                min_level: self.number(&c.min_level, "min_level")?.unwrap_or(0.0),
            },
        };

        let severity = match &c.severity {
            None => Severity::Warning,
            Some(s) => match s.get_ref().as_str() {
                "info" => Severity::Info,
                "warning" => Severity::Warning,
                "critical" => Severity::Critical,
                other => {
                    return Err(self.at(
                        s.span(),
                        "severity",
                        format!(
                            "unknown severity {other:?} (expected \"info\", \"warning\" or \
                             \"critical\")"
                        ),
                    ));
                }
            },
        };

        let route = match &c.route {
            None => None,
            Some(r) if !is_route_metric(metric) => {
                return Err(self.at(
                    r.span(),
                    "route",
                    format!(
                        "a route selects request types; metric {metric:?} is not one of \
                         request_rate, request_cpu_percent, request_p99_seconds"
                    ),
                ));
            }
            Some(r) => {
                Some(route_selector(r.get_ref()).map_err(|m| self.at(r.span(), "route", m))?)
            }
        };
        Ok(Rule {
            name: name.get_ref().clone(),
            metric,
            route,
            condition,
            for_duration: self.duration(&c.for_duration, "for")?.unwrap_or_default(),
            severity,
            labels: self.name_map(
                &c.labels,
                "labels",
                &["alertname", "severity", "target", "instance"],
            )?,
            annotations: self.name_map(&c.annotations, "annotations", &[])?,
        })
    }
}

/// Prometheus' label-name syntax: what every alertname, label and annotation name must follow
/// to survive the trip to Alertmanager and promtool.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A route selector as written: `METHOD /template`, `/template` or `TAG name`.
fn route_selector(text: &str) -> Result<String, String> {
    use crate::requests::http_line::Method;
    let (first, rest) = text.split_once(' ').unwrap_or(("", text));
    let known = Method::ALL
        .iter()
        .map(|m| m.as_str())
        .chain(["TAG"])
        .any(|m| m == first);
    if !first.is_empty() && !known {
        return Err(format!(
            "unknown method {first:?} in {text:?} (expected \"METHOD /template\", \"/template\" or \"TAG name\")"
        ));
    }
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{text:?} names no route"));
    }
    if first != "TAG" && !rest.starts_with('/') {
        return Err(format!("the template in {text:?} must start with `/`"));
    }
    Ok(text.to_owned())
}

fn unknown_metric(name: &str) -> String {
    let nearest = METRICS
        .iter()
        .map(|m| (strsim::jaro_winkler(name, m), *m))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        // clap's cut-off for "did you mean": close enough to be a typo.
        Some((score, m)) if score > 0.8 => {
            format!("unknown metric {name:?} (did you mean {m:?}?)")
        }
        _ => format!("unknown metric {name:?} (known: {})", METRICS.join(", ")),
    }
}
