//! The event log: CPU spikes and alert transitions, newest last, served at /api/events and
//! printed by `monitor events`. Bounded, so a long-running daemon keeps the recent past only.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use serde_json::Value;

#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<VecDeque<Value>>>,
    capacity: usize,
}

/// Room made at start; the log grows to its capacity from there.
const PREALLOCATED: usize = 1024;

impl EventLog {
    /// Keeps the `capacity` most recent events (none for 0: the config refuses it, and a bound
    /// that keeps nothing is still a bound).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(
                capacity.min(PREALLOCATED),
            ))),
            capacity,
        }
    }

    pub fn push(&self, event: Value) {
        if self.capacity == 0 {
            return;
        }
        let mut events = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while events.len() >= self.capacity {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The `n` newest events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Value> {
        let events = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .skip(events.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn snapshot(&self) -> Vec<Value> {
        let events = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

/// One line per event for `monitor events`.
pub fn render(event: &Value) -> String {
    let at = event["at_unix_ms"].as_u64().map_or_else(String::new, |ms| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    });
    match event["kind"].as_str() {
        Some("cpu_spike") => {
            let top: Vec<String> = event["top_syscalls_by_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .map(|c| {
                    format!(
                        "{} +{:.0}/s",
                        c["syscall"].as_str().unwrap_or("?"),
                        c["added_calls_per_sec"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            format!(
                "{at}  cpu_spike  {:.1}% (baseline {:.1}%, {})  top syscalls: {}",
                event["cpu_percent"].as_f64().unwrap_or(0.0),
                event["baseline_median_percent"].as_f64().unwrap_or(0.0),
                event["trigger"].as_str().unwrap_or("?"),
                if top.is_empty() {
                    "none".into()
                } else {
                    top.join(", ")
                }
            )
        }
        Some(kind) => format!("{at}  {kind}  {event}"),
        None => event.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_events() {
        let log = EventLog::new(2);
        for i in 0..3 {
            log.push(serde_json::json!({ "kind": "x", "i": i }));
        }
        let events = log.snapshot();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["i"], 1);
        assert_eq!(events[1]["i"], 2);
        assert_eq!(log.recent(1), [serde_json::json!({ "kind": "x", "i": 2 })]);
        assert_eq!(log.recent(5).len(), 2);
    }

    #[test]
    fn a_log_of_no_capacity_keeps_nothing() {
        let log = EventLog::new(0);
        for i in 0..3 {
            log.push(serde_json::json!({ "kind": "x", "i": i }));
        }
        assert!(log.snapshot().is_empty());
    }

    #[test]
    fn renders_a_spike() {
        let e = serde_json::json!({
            "kind": "cpu_spike", "at_unix_ms": 0, "cpu_percent": 80.0, "baseline_median_percent": 2.0,
            "trigger": "baseline", "top_syscalls_by_calls": [{"syscall": "getppid", "added_calls_per_sec": 1000.0}]
        });
        let line = render(&e);
        assert!(
            line.contains("cpu_spike") && line.contains("getppid +1000/s"),
            "{line}"
        );
    }
}
