//! The daemon's alerting step, run after each CPU/memory sample: spike detection, rule
//! evaluation, notifications, the event log, and alert state that survives restarts.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tracing::{info, warn};

use crate::{
    alerts::{
        Alert,
        clock::Now,
        engine::{Engine, EngineOptions, EngineState},
        from_model::{self, Routes},
        spike::{SpikeDetector, SpikeEvent},
    },
    config::Config,
    model::{Model, route_rates::RouteRates},
    notify::Notifier,
    requests::SharedTracker,
    serve::events::EventLog,
    serve::exporter::Exporter,
    state_file,
};

/// How long a spike's context is attached to CPU alerts that fire after it.
const SPIKE_CONTEXT: Duration = Duration::from_secs(300);

pub struct Alerting {
    engine: Engine,
    spikes: SpikeDetector,
    /// On the monotonic clock, which times the context's lifetime.
    last_spike: Option<(Instant, SpikeEvent)>,
    events: EventLog,
    notifier: Arc<Notifier>,
    state_path: PathBuf,
    /// The request types (with the requests family): rates per route for rules and spikes.
    requests: Option<(SharedTracker, RouteRates)>,
}

impl Alerting {
    pub fn new(
        config: &Config,
        target: &str,
        instance: &str,
        events: EventLog,
        notifier: Arc<Notifier>,
    ) -> Self {
        let options = EngineOptions {
            repeat_interval: config.alerting.repeat_interval,
            min_firing: config.alerting.min_firing,
            target: target.to_owned(),
            instance: instance.to_owned(),
        };
        let mut engine = Engine::new(config.rules.clone(), options);
        let state_path = config
            .alerting
            .state_dir
            .join(format!("alerts-{}.json", file_safe(target)));
        match load_state(&state_path) {
            Ok(Some(state)) => {
                engine.restore(state, Now::read());
                info!(path = %state_path.display(), firing = engine.firing().len(), "restored alert state");
            }
            Ok(None) => {}
            Err(e) => warn!("ignoring alert state {}: {e:#}", state_path.display()),
        }
        Self {
            engine,
            spikes: SpikeDetector::new(config.alerting.spike.clone()),
            last_spike: None,
            events,
            notifier,
            state_path,
            requests: None,
        }
    }

    /// Rules on routes and spike context read the request types from `tracker`.
    pub fn watch_requests(&mut self, tracker: SharedTracker) {
        self.requests = Some((tracker, RouteRates::default()));
    }

    /// Runs after the model took a CPU/memory sample; gives the request types over its
    /// interval (empty without the requests family).
    pub fn on_sample(&mut self, model: &Model, exporter: &Exporter) -> Routes {
        let now = Now::read();
        let routes = match (&mut self.requests, model.latest.as_ref()) {
            (Some((tracker, rates)), Some(sample)) => match tracker.lock() {
                Ok(t) => t
                    .target(0)
                    .map(|t| rates.update(&t.ledger, sample.at_ns, model.limits.cpus))
                    .unwrap_or_default(),
                Err(_) => Default::default(),
            },
            _ => Default::default(),
        };
        if let Some(interval) = from_model::interval(model, &routes, now.wall)
            && let Some(spike) = self.spikes.observe(interval)
        {
            info!(summary = %spike.summary(), "CPU spike");
            exporter.count_spike();
            self.events
                .push(serde_json::to_value(&spike).unwrap_or_default());
            self.last_spike = Some((now.mono, spike));
        }
        let spike_context = self
            .last_spike
            .as_ref()
            .filter(|(at, _)| now.mono.saturating_duration_since(*at) <= SPIKE_CONTEXT)
            .map(|(_, s)| s.clone());
        let alerts =
            self.engine
                .evaluate_with(&from_model::snapshot(model, &routes, now), |rule| {
                    let mut extra = BTreeMap::new();
                    if let Some(spike) = spike_context
                        .as_ref()
                        .filter(|_| rule.metric.starts_with("cpu"))
                    {
                        extra.insert("spike_context".into(), spike.summary());
                        if let Ok(json) = serde_json::to_string(&spike.top_syscalls_by_calls) {
                            extra.insert("spike_top_syscalls".into(), json);
                        }
                        if !spike.top_routes_by_cpu.is_empty()
                            && let Ok(json) = serde_json::to_string(&spike.top_routes_by_cpu)
                        {
                            extra.insert("spike_top_routes".into(), json);
                        }
                    }
                    extra
                });
        exporter.set_firing(&self.engine.firing());
        if alerts.is_empty() {
            return routes;
        }
        for alert in &alerts {
            self.events.push(alert_event(alert));
        }
        self.notifier.send(alerts);
        if let Err(e) = save_state(&self.state_path, &self.engine.state(now)) {
            warn!(
                "saving alert state to {}: {e:#} (alerts keep working; a restart would forget them)",
                self.state_path.display()
            );
        }
        routes
    }

    /// The alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        self.engine.firing_alerts()
    }
}

fn alert_event(alert: &Alert) -> serde_json::Value {
    let mut v = serde_json::to_value(alert).unwrap_or_default();
    v["kind"] = "alert".into();
    v["at_unix_ms"] = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .into();
    v
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A temporary file left by a crash during a save is not read (the previous state is whole);
/// the next save replaces it.
fn load_state(path: &Path) -> anyhow::Result<Option<EngineState>> {
    if let Err(e) = state_file::make_private(path) {
        warn!(
            "cannot make {} private to monitor's user: {e}",
            path.display()
        );
    }
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaced whole and fsync'd (state_file::replace): a crash leaves the old state or the new one.
fn save_state(path: &Path, state: &EngineState) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        state_file::create_dir(dir)?;
    }
    state_file::replace(path, &serde_json::to_vec(state)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::alerts::{AlertStatus, engine::Snapshot, rules::with_defaults};
    use crate::notify::tests::alert;

    fn mode(path: &Path) -> String {
        format!(
            "{:03o}",
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777
        )
    }

    /// A state that holds something: an unsent resolved alert.
    fn some_state() -> EngineState {
        serde_json::from_value(serde_json::json!({ "unsent": [alert("A")] })).unwrap()
    }

    #[test]
    fn alert_state_and_the_directory_made_for_it_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let path = state_dir.join("alerts-app.json");
        save_state(&path, &some_state()).unwrap();
        assert_eq!(mode(&path), "600");
        assert_eq!(mode(&state_dir), "700");
    }

    #[test]
    fn saved_state_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts-app.json");
        save_state(&path, &some_state()).unwrap();
        save_state(&path, &EngineState::default()).unwrap();
        assert_eq!(load_state(&path).unwrap(), Some(EngineState::default()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["alerts-app.json"]);
    }

    #[test]
    fn a_temp_file_left_by_a_crash_breaks_neither_loading_nor_saving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts-app.json");
        save_state(&path, &some_state()).unwrap();
        // Torn, and read-only as an interrupted copy or restore can leave it.
        let tmp = dir.path().join("alerts-app.json.tmp");
        std::fs::write(&tmp, b"{\"rules\": {\"Hi").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load_state(&path).unwrap(), Some(some_state()));
        save_state(&path, &EngineState::default()).unwrap();
        assert_eq!(load_state(&path).unwrap(), Some(EngineState::default()));
        assert!(!tmp.exists());
    }

    #[test]
    fn a_symlink_at_the_temp_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"not monitor's").unwrap();
        let path = dir.path().join("alerts-app.json");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("alerts-app.json.tmp")).unwrap();
        save_state(&path, &some_state()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&elsewhere).unwrap(),
            "not monitor's"
        );
        assert_eq!(load_state(&path).unwrap(), Some(some_state()));
    }

    #[test]
    fn a_world_readable_state_file_is_made_private_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts-app.json");
        std::fs::write(&path, serde_json::to_vec(&some_state()).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_state(&path).unwrap(), Some(some_state()));
        assert_eq!(mode(&path), "600");
    }

    #[test]
    fn a_target_down_resolution_names_its_reason_in_the_event_log() {
        let mut engine = Engine::new(with_defaults(Vec::new()), EngineOptions::default());
        let start = Now::read();
        let mut resolved = Vec::new();
        for s in (0..=200).step_by(5) {
            let values = if s < 60 {
                BTreeMap::from([("up", 1.0), ("memory_percent", 95.0)])
            } else {
                BTreeMap::from([("up", 0.0)])
            };
            let at = Now {
                mono: start.mono + Duration::from_secs(s),
                wall: start.wall + Duration::from_secs(s),
            };
            let alerts = engine.evaluate(&Snapshot {
                at,
                values,
                routes: BTreeMap::new(),
            });
            resolved.extend(
                alerts
                    .into_iter()
                    .filter(|a| a.status == AlertStatus::Resolved),
            );
        }
        let names: Vec<&str> = resolved.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["HighMemory", "CriticalMemory"]);
        for alert in &resolved {
            let event = alert_event(alert);
            assert_eq!(event["kind"], "alert");
            assert_eq!(event["status"], "resolved");
            assert_eq!(
                event["annotations"]["resolved_reason"], "target_down",
                "{event}"
            );
        }
    }
}
