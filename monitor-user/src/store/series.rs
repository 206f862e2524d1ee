//! A series' identity: target, name, and its other labels in one canonical text.
use std::fmt::Write as _;

/// Identifies a series: its target, name and other labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub target: String,
    pub name: String,
    /// `a="x",b="y"`: the label pairs other than `target`, sorted by name, values escaped as
    /// OpenMetrics text escapes them (so the text goes into an exposition as it is).
    pub labels: String,
}

/// The label that names the target; every stored series has it.
pub const TARGET_LABEL: &str = "target";

impl SeriesKey {
    /// The key of series `name` with `labels` (in any order; `target` among them or not).
    pub fn new(target: &str, name: &str, labels: &[(&str, &str)]) -> Self {
        let mut pairs: Vec<&(&str, &str)> =
            labels.iter().filter(|(k, _)| *k != TARGET_LABEL).collect();
        pairs.sort();
        let mut text = String::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let _ = write!(text, "{k}=\"{}\"", escape(v));
        }
        Self {
            target: target.to_owned(),
            name: name.to_owned(),
            labels: text,
        }
    }

    /// The series as OpenMetrics writes it: `name{target="t",a="x"}`.
    pub fn exposition(&self) -> String {
        let mut out = format!("{}{{{TARGET_LABEL}=\"{}\"", self.name, escape(&self.target));
        if !self.labels.is_empty() {
            out.push(',');
            out.push_str(&self.labels);
        }
        out.push('}');
        out
    }
}

/// A label value escaped for the text format: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_escaped_and_target_is_apart() {
        let k = SeriesKey::new(
            "api",
            "app_requests_total",
            &[
                ("status", "200"),
                ("target", "api"),
                ("route", "/a\"b\\c\nd"),
            ],
        );
        assert_eq!(k.target, "api");
        assert_eq!(k.labels, r#"route="/a\"b\\c\nd",status="200""#);
        assert_eq!(
            k.exposition(),
            r#"app_requests_total{target="api",route="/a\"b\\c\nd",status="200"}"#
        );
        assert_eq!(
            SeriesKey::new("x", "m", &[]).exposition(),
            r#"m{target="x"}"#
        );
    }
}
