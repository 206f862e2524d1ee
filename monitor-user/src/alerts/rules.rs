//! Alert rules: the built-in defaults, user rules from the `[[rule]]` array of the daemon's config
//! file, and their Prometheus equivalent for teams that evaluate alerts centrally.
//!
//! ```toml
//! [[rule]]                     # a threshold rule (kind = "threshold" is the default)
//! name = "BigRss"              # alertname; a default rule of the same name is replaced
//! metric = "rss_mb"            # one of METRICS
//! above = 50                   # or below = N
//! clear = 45                   # optional: once firing, resolves only at or below 45 (default: above)
//! for = "5s"                   # optional: how long the condition must hold (default 0s)
//! severity = "warning"         # info | warning | critical (default warning)
//! labels = { team = "db" }     # optional, added to the alert's labels
//! annotations = { runbook_url = "https://wiki.example/BigRss" }
//!
//! [[rule]]
//! name = "FdGrowth"
//! kind = "trend"               # least-squares slope over a sliding window
//! metric = "open_fds"
//! slope_per_min_above = 5      # or slope_per_min_below = N
//! window = "10m"               # default 10m
//! min_r2 = 0.8                 # how steady the slope must be, 0..1 (default 0.8)
//! clear = 2                    # optional, in the slope's unit
//!
//! [[rule]]
//! name = "CpuRunaway"
//! kind = "exponential"         # log-linear fit over a sliding window
//! metric = "cpu_percent"
//! doubling_time_below = "10m"  # default 10m
//! window = "5m"                # default 5m
//! min_r2 = 0.8                 # default 0.8
//! min_level = 5                # ignore growth while the latest value is below this (default 0)
//! ```
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::Severity;

/// The series rules can watch. The daemon feeds each evaluation a snapshot with these keys.
pub const METRICS: [&str; 13] = [
    "cpu_percent",
    "cpu_avg_1m",
    "memory_percent",
    "rss_mb",
    "vms_mb",
    "open_fds",
    "threads",
    "processes",
    "syscall_rate",
    "fault_rate",
    "fd_open_rate",
    "fd_open_error_rate",
    "context_switch_rate",
];

/// The unit a metric is written with in alert texts.
pub fn unit(metric: &str) -> &'static str {
    match metric {
        "cpu_percent" | "cpu_avg_1m" | "memory_percent" => "%",
        "rss_mb" | "vms_mb" => " MB",
        "open_fds" => " fds",
        "threads" => " threads",
        "processes" => " processes",
        _ => "/s",
    }
}

const DEFAULT_TREND_WINDOW: Duration = Duration::from_secs(600);
const DEFAULT_EXP_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_DOUBLING: Duration = Duration::from_secs(600);
const DEFAULT_MIN_R2: f64 = 0.8;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// TOML syntax, or a value of the wrong type (toml's message names the key).
    #[error("{}:{line}: {message}", file.display())]
    Toml {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: rule {rule}: {key}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        /// The rule's quoted name, or `#N` (1-based) when it has none.
        rule: String,
        key: &'static str,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

impl Direction {
    /// Strictly beyond `limit` on this side.
    pub fn beyond(self, value: f64, limit: f64) -> bool {
        match self {
            Self::Above => value > limit,
            Self::Below => value < limit,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Above => "above",
            Self::Below => "below",
        }
    }

    fn op(self) -> &'static str {
        match self {
            Self::Above => ">",
            Self::Below => "<",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// The value is beyond `threshold`; once firing it stays so while beyond `clear`.
    Threshold {
        direction: Direction,
        threshold: f64,
        clear: f64,
    },
    /// The least-squares slope over `window`, per minute, is beyond `slope_per_min` with
    /// r² ≥ `min_r2`; once pending or firing it stays so while the slope is beyond `clear` (r²
    /// is only a gate to enter: a leak that gets noisier is still a leak).
    Trend {
        direction: Direction,
        slope_per_min: f64,
        clear: f64,
        window: Duration,
        min_r2: f64,
    },
    /// The log-linear fit over `window` doubles faster than `doubling_time_below`, with
    /// r² ≥ `min_r2`, better than a straight line does, while the latest value is at least
    /// `min_level`; once firing it stays so while the fit still doubles that fast.
    Exponential {
        doubling_time_below: Duration,
        window: Duration,
        min_r2: f64,
        min_level: f64,
    },
}

impl Condition {
    /// The sliding window of a fitted rule.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Self::Threshold { .. } => None,
            Self::Trend { window, .. } | Self::Exponential { window, .. } => Some(*window),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The `alertname`.
    pub name: String,
    /// One of [`METRICS`].
    pub metric: &'static str,
    pub condition: Condition,
    /// `for`: how long the condition must hold before the alert fires.
    pub for_duration: Duration,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    fn builtin(name: &str, metric: &'static str, condition: Condition, for_secs: u64) -> Self {
        Self {
            name: name.into(),
            metric,
            condition,
            for_duration: Duration::from_secs(for_secs),
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// The built-in rules (the seed's thresholds, plus leak and runaway detection). The `clear`
/// margins are ours: a memory percentage hovering at 80 would otherwise resolve and re-fire.
pub fn default_rules() -> Vec<Rule> {
    use Direction::Above;
    vec![
        Rule::builtin(
            "HighMemory",
            "memory_percent",
            Condition::Threshold {
                direction: Above,
                threshold: 80.0,
                clear: 75.0,
            },
            30,
        ),
        Rule::builtin(
            "CriticalMemory",
            "memory_percent",
            Condition::Threshold {
                direction: Above,
                threshold: 90.0,
                clear: 85.0,
            },
            0,
        )
        .with_severity(Severity::Critical),
        Rule::builtin(
            "HighCpu",
            "cpu_avg_1m",
            Condition::Threshold {
                direction: Above,
                threshold: 85.0,
                clear: 75.0,
            },
            60,
        ),
        // "Growth > 10 MB/min sustained 5 min": the slope over a 5 min window (whose r² says
        // the growth was steady across it), held for 5 more minutes, so a 5 min burst of
        // allocation, or a GC cycle as long as the window, is not called a leak.
        Rule::builtin(
            "MemoryLeak",
            "rss_mb",
            Condition::Trend {
                direction: Above,
                slope_per_min: 10.0,
                clear: 5.0,
                window: Duration::from_secs(300),
                min_r2: DEFAULT_MIN_R2,
            },
            300,
        ),
        // `for` 1 min: a startup ramp (idle to busy in a minute, then flat) also fits an
        // exponential briefly; one doubling every few minutes outlasts that.
        Rule::builtin(
            "CpuExponentialGrowth",
            "cpu_percent",
            Condition::Exponential {
                doubling_time_below: DEFAULT_DOUBLING,
                window: DEFAULT_EXP_WINDOW,
                min_r2: DEFAULT_MIN_R2,
                min_level: 5.0,
            },
            60,
        ),
        Rule::builtin(
            "FdLeak",
            "open_fds",
            Condition::Trend {
                direction: Above,
                slope_per_min: 5.0,
                clear: 2.0,
                window: DEFAULT_TREND_WINDOW,
                min_r2: DEFAULT_MIN_R2,
            },
            0,
        ),
    ]
}

/// The defaults followed by the user's rules; a user rule with a default's name replaces it
/// in place.
pub fn with_defaults(user: Vec<Rule>) -> Vec<Rule> {
    let mut rules = default_rules();
    for rule in user {
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(slot) => *slot = rule,
            None => rules.push(rule),
        }
    }
    rules
}

/// One `[[rule]]` entry as written; every key is checked by hand so errors name its line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
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

        Ok(Rule {
            name: name.get_ref().clone(),
            metric,
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

/// The PromQL expression of a metric over the exporter's series, and whether it is a bare
/// selector (range selectors need one; anything else takes a subquery).
fn promql(metric: &str, selector: &str) -> (String, bool) {
    let bare = |name: &str| (format!("{name}{selector}"), true);
    let rate = |name: &str| format!("rate({name}{selector}[1m])");
    let summed = |name: &str| (format!("sum by (target) ({})", rate(name)), false);
    match metric {
        "cpu_percent" => bare("app_cpu_usage_percent"),
        "cpu_avg_1m" => bare("app_cpu_usage_percent_avg_1m"),
        "memory_percent" => bare("app_memory_usage_percent"),
        "rss_mb" => (
            format!("app_resident_memory_bytes{selector} / 1048576"),
            false,
        ),
        "vms_mb" => (
            format!("app_virtual_memory_bytes{selector} / 1048576"),
            false,
        ),
        "open_fds" => bare("app_open_fds"),
        "threads" => bare("app_threads"),
        "processes" => bare("app_processes"),
        "syscall_rate" => summed("app_syscalls_total"),
        "fault_rate" => summed("app_page_faults_total"),
        "fd_open_rate" => (rate("app_fd_opens_total"), false),
        "fd_open_error_rate" => summed("app_fd_open_errors_total"),
        _ => summed("app_context_switches_total"),
    }
}

/// A YAML double-quoted scalar: JSON's string escapes are a subset of YAML's.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A PromQL string literal (Go escapes, which JSON's are a subset of).
fn promql_str(s: &str) -> String {
    yaml_str(s)
}

/// Prometheus' duration syntax (`1h30m`, `500ms`).
pub fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

/// Prometheus alerting rules equivalent to `rules`, as a rule file (`groups:` document), for
/// teams that evaluate alerts centrally. `target` restricts every series to that `target` label
/// value; empty means every target.
///
/// Equivalence is exact for threshold rules, `clear` included (it keeps firing through the
/// `ALERTS` series). For fitted rules PromQL has no r²: trend rules keep the slope (`deriv`,
/// the same least-squares slope) and exponential rules the growth rate of `ln(value)` and the
/// level floor, without the fit-quality gates; the YAML says so above each such rule.
pub fn prometheus_rules_yaml(rules: &[Rule], target: &str) -> String {
    let selector = if target.is_empty() {
        String::new()
    } else {
        format!("{{target={}}}", promql_str(target))
    };
    let mut y = String::new();
    y.push_str("# Prometheus alerting rules equivalent to monitor's alert rules (generated).\n");
    y.push_str("groups:\n  - name: \"monitor\"\n    rules:\n");
    for rule in rules {
        let (series, is_bare) = promql(rule.metric, &selector);
        let firing_alert = format!(
            "ALERTS{{alertname={}, alertstate=\"firing\"{}}}",
            promql_str(&rule.name),
            if target.is_empty() {
                String::new()
            } else {
                format!(", target={}", promql_str(target))
            }
        );
        let ranged = |window: Duration, inner: &str| {
            let w = prometheus_duration(window);
            if is_bare && inner == series {
                format!("{inner}[{w}]")
            } else {
                format!("({inner})[{w}:]")
            }
        };
        // Keep firing between threshold and clear only while already firing.
        let with_clear = |value: &str, direction: Direction, limit: f64, clear: f64| {
            let op = direction.op();
            if clear == limit {
                format!("{value} {op} {limit}")
            } else {
                format!(
                    "{value} {op} {limit} or ({value} {op} {clear} and on (target) {firing_alert})"
                )
            }
        };
        let unit = unit(rule.metric);
        let on_target = " on {{ $labels.target }}";
        let (expr, summary, description, note) = match &rule.condition {
            Condition::Threshold {
                direction,
                threshold,
                clear,
            } => (
                with_clear(&series, *direction, *threshold, *clear),
                format!(
                    "{} {} {threshold}{unit}{on_target}",
                    rule.metric,
                    direction.word()
                ),
                format!(
                    "{} is {{{{ $value | printf \"%.2f\" }}}}{unit}, {} the {threshold}{unit} \
                     threshold.",
                    rule.metric,
                    direction.word()
                ),
                None,
            ),
            Condition::Trend {
                direction,
                slope_per_min,
                clear,
                window,
                min_r2,
            } => (
                with_clear(
                    &format!("deriv({}) * 60", ranged(*window, &series)),
                    *direction,
                    *slope_per_min,
                    *clear,
                ),
                format!(
                    "{} changing {} {slope_per_min}{unit}/min{on_target}",
                    rule.metric,
                    direction.word()
                ),
                format!(
                    "{} changes by {{{{ $value | printf \"%.2f\" }}}}{unit}/min over the last \
                     {}, {} the {slope_per_min}{unit}/min threshold.",
                    rule.metric,
                    prometheus_duration(*window),
                    direction.word()
                ),
                Some(format!(
                    "monitor also requires the fit's r\u{b2} >= {min_r2}, which PromQL cannot \
                     express"
                )),
            ),
            Condition::Exponential {
                doubling_time_below,
                window,
                min_r2,
                min_level,
            } => {
                let rate_per_min =
                    std::f64::consts::LN_2 / doubling_time_below.as_secs_f64() * 60.0;
                let mut expr = format!(
                    "deriv({}) * 60 > {rate_per_min}",
                    ranged(*window, &format!("ln({series})"))
                );
                if *min_level > 0.0 {
                    let _ = write!(expr, " and {series} >= {min_level}");
                }
                (
                    expr,
                    format!("{} growing exponentially{on_target}", rule.metric),
                    format!(
                        "{} grows by {{{{ $value | printf \"%.3f\" }}}} of itself per minute \
                         (ln-rate) over the last {}: it doubles in less than {}.",
                        rule.metric,
                        prometheus_duration(*window),
                        prometheus_duration(*doubling_time_below)
                    ),
                    Some(format!(
                        "monitor also requires the log-linear fit's r\u{b2} >= {min_r2} and a \
                         better fit than a straight line, which PromQL cannot express"
                    )),
                )
            }
        };
        if let Some(note) = note {
            let _ = writeln!(y, "      # {note}");
        }
        let _ = writeln!(y, "      - alert: {}", yaml_str(&rule.name));
        let _ = writeln!(y, "        expr: {}", yaml_str(&expr));
        if !rule.for_duration.is_zero() {
            let _ = writeln!(y, "        for: {}", prometheus_duration(rule.for_duration));
        }
        let mut labels = rule.labels.clone();
        labels.insert("severity".into(), rule.severity.as_str().into());
        y.push_str("        labels:\n");
        for (k, v) in &labels {
            let _ = writeln!(y, "          {k}: {}", yaml_str(v));
        }
        let mut annotations = BTreeMap::from([
            ("summary".to_string(), format!("{}: {summary}", rule.name)),
            ("description".to_string(), description),
        ]);
        annotations.extend(rule.annotations.clone());
        y.push_str("        annotations:\n");
        for (k, v) in &annotations {
            let _ = writeln!(y, "          {k}: {}", yaml_str(v));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn parse(text: &str) -> Result<Vec<Rule>, RulesError> {
        parse_rules(text, Path::new("/etc/monitor.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let rules = parse(
            r#"
listen = "127.0.0.1:8001"
[cadence]
cpu_memory = "5s"

[[rule]]
name = "BigRss"
metric = "rss_mb"
above = 50
for = "5s"
severity = "warning"
"#,
        )
        .unwrap();
        assert_eq!(
            rules,
            vec![Rule {
                name: "BigRss".into(),
                metric: "rss_mb",
                condition: Condition::Threshold {
                    direction: Direction::Above,
                    threshold: 50.0,
                    clear: 50.0,
                },
                for_duration: Duration::from_secs(5),
                severity: Severity::Warning,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            }]
        );
    }

    #[test]
    fn a_config_without_rules_has_none() {
        assert_eq!(parse("listen = \"127.0.0.1:1\"\n").unwrap(), vec![]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn every_key_parses() {
        let rules = parse(
            r#"
[[rule]]
name = "LowThreads"
metric = "threads"
below = 4
clear = 6
severity = "critical"
labels = { team = "db" }
annotations = { runbook_url = "https://wiki.example/LowThreads" }

[[rule]]
name = "FdGrowth"
kind = "trend"
metric = "open_fds"
slope_per_min_above = 5
window = "10m"
min_r2 = 0.9
clear = 1
for = "1m"

[[rule]]
name = "Runaway"
kind = "exponential"
metric = "cpu_percent"
doubling_time_below = "3m"
window = "4m"
min_level = 2.5
severity = "info"
"#,
        )
        .unwrap();
        assert_eq!(
            rules[0].condition,
            Condition::Threshold {
                direction: Direction::Below,
                threshold: 4.0,
                clear: 6.0
            }
        );
        assert_eq!(rules[0].severity, Severity::Critical);
        assert_eq!(rules[0].labels["team"], "db");
        assert_eq!(
            rules[0].annotations["runbook_url"],
            "https://wiki.example/LowThreads"
        );
        assert_eq!(
            rules[1].condition,
            Condition::Trend {
                direction: Direction::Above,
                slope_per_min: 5.0,
                clear: 1.0,
                window: Duration::from_secs(600),
                min_r2: 0.9
            }
        );
        assert_eq!(rules[1].for_duration, Duration::from_secs(60));
        assert_eq!(
            rules[2].condition,
            Condition::Exponential {
                doubling_time_below: Duration::from_secs(180),
                window: Duration::from_secs(240),
                min_r2: 0.8,
                min_level: 2.5
            }
        );
        assert_eq!(rules[2].severity, Severity::Info);
        assert_eq!(rules[2].condition.window(), Some(Duration::from_secs(240)));
    }

    #[test]
    fn unknown_metric_suggests_the_nearest_with_its_line() {
        let e = err("\n[[rule]]\nname = \"X\"\nmetric = \"rss_mbb\"\nabove = 1\n");
        assert_eq!(
            e,
            "/etc/monitor.toml:4: rule \"X\": metric: unknown metric \"rss_mbb\" (did you mean \
             \"rss_mb\"?)"
        );
        let e = err("[[rule]]\nname = \"X\"\nmetric = \"zzzz\"\nabove = 1\n");
        assert!(e.contains("known: cpu_percent, cpu_avg_1m"), "{e}");
    }

    #[test]
    fn semantic_errors_name_file_line_rule_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nbelow = 2\n",
                "/etc/monitor.toml:5: rule \"X\": below: give either above or below, not both",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\n",
                "/etc/monitor.toml:1: rule \"X\": above: a threshold rule needs above or below",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 10\nclear = 12\n",
                "/etc/monitor.toml:5: rule \"X\": clear: 12 must be at or below above = 10 (a \
                 firing alert resolves when the value falls back to clear)",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nbelow = 10\nclear = 8\n",
                "/etc/monitor.toml:5: rule \"X\": clear: 8 must be at or above below = 10 (a \
                 firing alert resolves when the value rises back to clear)",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nfor = \"5 parsecs\"\n",
                "/etc/monitor.toml:5: rule \"X\": for: \"5 parsecs\" is not a duration",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nfor = 30\n",
                "/etc/monitor.toml:5: rule \"X\": for: expected a string, found integer",
            ),
            (
                "\n\n[[rule]]\nmetric = \"rss_mb\"\nabove = 1\n",
                "/etc/monitor.toml:3: rule #1: name: every rule needs a name",
            ),
            (
                "[[rule]]\nname = \"big rss\"\nmetric = \"rss_mb\"\nabove = 1\n",
                "/etc/monitor.toml:2: rule \"big rss\": name: must be letters",
            ),
            (
                "[[rule]]\nname = \"X\"\nabove = 1\n",
                "/etc/monitor.toml:1: rule \"X\": metric: every rule needs a metric",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nseverity = \"page\"\n",
                "/etc/monitor.toml:5: rule \"X\": severity: unknown severity \"page\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nkind = \"spike\"\n",
                "/etc/monitor.toml:5: rule \"X\": kind: unknown kind \"spike\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\nwindow = \"5m\"\n",
                "/etc/monitor.toml:5: rule \"X\": window: does not apply to kind = \"threshold\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"trend\"\nmetric = \"rss_mb\"\nabove = 1\n",
                "/etc/monitor.toml:5: rule \"X\": above: does not apply to kind = \"trend\"",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"trend\"\nmetric = \"rss_mb\"\n\
                 slope_per_min_above = 1\nmin_r2 = 1.5\n",
                "/etc/monitor.toml:6: rule \"X\": min_r2: 1.5 is not between 0 and 1",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"trend\"\nmetric = \"rss_mb\"\n",
                "/etc/monitor.toml:1: rule \"X\": slope_per_min_above: a trend rule needs \
                 slope_per_min_above or slope_per_min_below",
            ),
            (
                "[[rule]]\nname = \"X\"\nkind = \"exponential\"\nmetric = \"cpu_percent\"\n\
                 window = \"0s\"\n",
                "/etc/monitor.toml:5: rule \"X\": window: must be at least 1s",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = nan\n",
                "/etc/monitor.toml:4: rule \"X\": above: must be a finite number",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\n\
                 labels = { severity = \"page\" }\n",
                "/etc/monitor.toml:5: rule \"X\": labels: \"severity\" is set by monitor",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\n\
                 annotations = { \"run-book\" = \"x\" }\n",
                "/etc/monitor.toml:5: rule \"X\": annotations: \"run-book\" is not a valid name",
            ),
            (
                "[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 1\n\n\
                 [[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = 2\n",
                "/etc/monitor.toml:7: rule \"X\": name: a rule of this name is already defined \
                 on line 2",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.starts_with(want),
                "for\n{text}\ngot:  {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn toml_errors_name_file_and_line() {
        let e = err("[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabove = \"high\"\n");
        assert!(e.starts_with("/etc/monitor.toml:4: "), "{e}");
        let e = err("[[rule]]\nname = \"X\"\nmetric = \"rss_mb\"\nabovee = 1\n");
        assert!(
            e.starts_with("/etc/monitor.toml:4: unknown field `abovee`"),
            "{e}"
        );
        let e = err("[[rule]\n");
        assert!(e.starts_with("/etc/monitor.toml:1: "), "{e}");
    }

    #[test]
    fn user_rules_replace_defaults_of_the_same_name() {
        let user = parse(
            "[[rule]]\nname = \"HighMemory\"\nmetric = \"memory_percent\"\nabove = 95\n\n\
             [[rule]]\nname = \"BigRss\"\nmetric = \"rss_mb\"\nabove = 50\n",
        )
        .unwrap();
        let rules = with_defaults(user);
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "HighMemory",
                "CriticalMemory",
                "HighCpu",
                "MemoryLeak",
                "CpuExponentialGrowth",
                "FdLeak",
                "BigRss"
            ]
        );
        assert!(matches!(
            rules[0].condition,
            Condition::Threshold {
                threshold: 95.0,
                ..
            }
        ));
    }

    #[test]
    fn default_rules_are_the_seeds() {
        let rules = default_rules();
        let find = |n: &str| rules.iter().find(|r| r.name == n).unwrap();
        let high = find("HighMemory");
        assert_eq!(
            (high.metric, high.for_duration, high.severity),
            ("memory_percent", Duration::from_secs(30), Severity::Warning)
        );
        assert!(matches!(
            high.condition,
            Condition::Threshold {
                threshold: 80.0,
                ..
            }
        ));
        let critical = find("CriticalMemory");
        assert_eq!(
            (critical.for_duration, critical.severity),
            (Duration::ZERO, Severity::Critical)
        );
        assert!(matches!(
            critical.condition,
            Condition::Threshold {
                threshold: 90.0,
                ..
            }
        ));
        let cpu = find("HighCpu");
        assert_eq!(
            (cpu.metric, cpu.for_duration),
            ("cpu_avg_1m", Duration::from_secs(60))
        );
        let leak = find("MemoryLeak");
        assert_eq!(leak.metric, "rss_mb");
        assert!(matches!(
            leak.condition,
            Condition::Trend {
                slope_per_min: 10.0,
                ..
            }
        ));
        assert_eq!(find("FdLeak").metric, "open_fds");
        assert_eq!(find("CpuExponentialGrowth").metric, "cpu_percent");
        for r in &rules {
            assert!(METRICS.contains(&r.metric));
        }
    }

    #[test]
    fn durations_in_prometheus_syntax() {
        assert_eq!(prometheus_duration(Duration::ZERO), "0s");
        assert_eq!(prometheus_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(prometheus_duration(Duration::from_secs(30)), "30s");
        assert_eq!(prometheus_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(prometheus_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }

    #[test]
    fn prometheus_expressions() {
        let rules = with_defaults(
            parse("[[rule]]\nname = \"BigRss\"\nmetric = \"rss_mb\"\nabove = 50\nfor = \"5s\"\n")
                .unwrap(),
        );
        let y = prometheus_rules_yaml(&rules, "myapp");
        for want in [
            r#"expr: "app_memory_usage_percent{target=\"myapp\"} > 80 or (app_memory_usage_percent{target=\"myapp\"} > 75 and on (target) ALERTS{alertname=\"HighMemory\", alertstate=\"firing\", target=\"myapp\"})""#,
            "for: 30s",
            r#"expr: "app_resident_memory_bytes{target=\"myapp\"} / 1048576 > 50""#,
            r#"deriv(app_open_fds{target=\"myapp\"}[10m]) * 60 > 5"#,
            r#"deriv((app_resident_memory_bytes{target=\"myapp\"} / 1048576)[5m:]) * 60 > 10"#,
            r#"deriv((ln(app_cpu_usage_percent{target=\"myapp\"}))[5m:]) * 60 > 0.0693"#,
            r#"and app_cpu_usage_percent{target=\"myapp\"} >= 5"#,
            "severity: \"critical\"",
        ] {
            assert!(y.contains(want), "missing {want} in\n{y}");
        }
        let every: Vec<Rule> = METRICS
            .iter()
            .map(|m| {
                Rule::builtin(
                    &format!("R_{m}"),
                    m,
                    default_rules()[0].condition.clone(),
                    0,
                )
            })
            .collect();
        let y = prometheus_rules_yaml(&every, "");
        assert!(
            y.contains("sum by (target) (rate(app_syscalls_total[1m])) > 80"),
            "{y}"
        );
        assert!(y.contains("rate(app_fd_opens_total[1m]) > 80"), "{y}");
    }

    /// promtool is the judge of the rule file, as Prometheus itself would load it.
    #[test]
    fn prometheus_rules_pass_promtool() {
        let mut rules = with_defaults(
            parse(
                r#"
[[rule]]
name = "BigRss"
metric = "rss_mb"
above = 50
for = "5s"
severity = "warning"
labels = { team = "db" }
annotations = { runbook_url = "https://wiki.example/BigRss", note = "quote \" and\nnewline" }

[[rule]]
name = "FewThreads"
metric = "threads"
below = 2
clear = 3

[[rule]]
name = "SyscallSurge"
kind = "trend"
metric = "syscall_rate"
slope_per_min_above = 100
window = "90s"
"#,
            )
            .unwrap(),
        );
        rules.extend(METRICS.iter().map(|m| {
            Rule::builtin(
                &format!("Every_{m}"),
                m,
                default_rules()[3].condition.clone(),
                0,
            )
        }));
        rules.extend(METRICS.iter().map(|m| {
            Rule::builtin(
                &format!("Exp_{m}"),
                m,
                default_rules()[4].condition.clone(),
                0,
            )
        }));
        for target in ["myapp", "", "we\"ird\\name"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rules.yml");
            std::fs::write(&path, prometheus_rules_yaml(&rules, target)).unwrap();
            let out = Command::new("promtool")
                .arg("check")
                .arg("rules")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "promtool could not run ({e}): run `cargo xtask setup --test-deps` to \
                         install it (Debian package prometheus)"
                    )
                });
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                out.status.success(),
                "promtool check rules failed:\n{}{}\n--- file:\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("SUCCESS: {} rules found", rules.len())),
                "{stdout}"
            );
        }
    }
}
