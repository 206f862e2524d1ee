//! Writing Prometheus rule files (the YAML `promtool check rules` reads): quoting, durations,
//! and the alerting and recording rules of a group. Every string is double-quoted, so no
//! expression, label or template can change the document's structure.
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

/// A YAML double-quoted scalar: JSON's string escapes are a subset of YAML's.
pub fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A PromQL string literal (Go escapes, which JSON's are a subset of).
pub fn promql_str(s: &str) -> String {
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

/// Starts a group: the rules written after it belong to it.
pub fn write_group_header(y: &mut String, name: &str) {
    let _ = writeln!(y, "  - name: {}", yaml_str(name));
    y.push_str("    rules:\n");
}

/// One alerting rule of a group.
pub struct AlertingRule {
    /// A comment above the rule: what its PromQL cannot say.
    pub note: Option<String>,
    pub name: String,
    pub expr: String,
    /// `for`, left out when zero.
    pub for_duration: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl AlertingRule {
    pub fn write(&self, y: &mut String) {
        if let Some(note) = &self.note {
            let _ = writeln!(y, "      # {note}");
        }
        let _ = writeln!(y, "      - alert: {}", yaml_str(&self.name));
        let _ = writeln!(y, "        expr: {}", yaml_str(&self.expr));
        if !self.for_duration.is_zero() {
            let _ = writeln!(y, "        for: {}", prometheus_duration(self.for_duration));
        }
        for (key, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if map.is_empty() {
                continue;
            }
            let _ = writeln!(y, "        {key}:");
            for (k, v) in map {
                let _ = writeln!(y, "          {k}: {}", yaml_str(v));
            }
        }
    }
}

/// One recording rule of a group.
pub struct RecordingRule {
    pub record: &'static str,
    pub expr: String,
}

impl RecordingRule {
    pub fn write(&self, y: &mut String) {
        let _ = writeln!(y, "      - record: {}", yaml_str(self.record));
        let _ = writeln!(y, "        expr: {}", yaml_str(&self.expr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_prometheus_syntax() {
        assert_eq!(prometheus_duration(Duration::ZERO), "0s");
        assert_eq!(prometheus_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(prometheus_duration(Duration::from_secs(30)), "30s");
        assert_eq!(prometheus_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(prometheus_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }
}
