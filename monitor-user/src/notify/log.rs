//! The log channel: every notification as one structured `tracing` event per alert. It cannot
//! fail, so its queue is not persisted: replaying log lines after a restart would only mislead.
use crate::alerts::{Alert, AlertStatus, Severity};

pub fn deliver(channel: &str, alerts: &[Alert]) {
    for a in alerts {
        let target = a.labels.get("target").map_or("", String::as_str);
        let instance = a.labels.get("instance").map_or("", String::as_str);
        let summary = a.annotations.get("summary").map_or("", String::as_str);
        let status = match a.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        };
        let starts_at = super::rfc3339(a.starts_at);
        let ends_at = a.ends_at.map(super::rfc3339).unwrap_or_default();
        // The level follows what a reader should do about it: resolutions and info are news,
        // a firing warning or critical is a problem.
        macro_rules! event {
            ($level:ident) => {
                tracing::$level!(
                    channel,
                    alertname = %a.name,
                    severity = a.severity.as_str(),
                    status,
                    target,
                    instance,
                    value = a.value,
                    starts_at,
                    ends_at,
                    summary,
                    "alert {} {status}",
                    a.name
                )
            };
        }
        match (a.status, a.severity) {
            (AlertStatus::Firing, Severity::Critical) => event!(error),
            (AlertStatus::Firing, Severity::Warning) => event!(warn),
            _ => event!(info),
        }
    }
}
