//! The alert event shared by the rule engine and every notifier.
use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One notification about one alert: it fired, it is still firing (a repeat), or it resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name (`alertname` label).
    pub name: String,
    pub severity: Severity,
    pub status: AlertStatus,
    /// Labels beyond alertname and severity: at least `target` and `instance`, plus the rule's.
    pub labels: BTreeMap<String, String>,
    /// At least `summary` and `description`; spike context when there is one.
    pub annotations: BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub starts_at: SystemTime,
    /// Set when resolved.
    #[serde(with = "humantime_serde", default)]
    pub ends_at: Option<SystemTime>,
    /// The value that made the rule fire (or the last value, when resolved).
    pub value: f64,
}

impl Alert {
    /// Every label, alertname and severity included: what Alertmanager identifies an alert by.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("alertname".into(), self.name.clone());
        labels.insert("severity".into(), self.severity.as_str().into());
        labels
    }
}
