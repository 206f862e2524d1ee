//! Where a report's history comes from: the local store, or Prometheus for a fleet. Both give
//! each series of a target as steps (history.rs), so every analysis is the same for either.
use super::history::Steps;

/// One series of a target: its labels other than `target`, and its steps.
#[derive(Clone, Debug, Default)]
pub struct Labeled {
    pub labels: Vec<(String, String)>,
    pub steps: Steps,
}

impl Labeled {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The OpenMetrics type of a series, which decides whether it is read as a value or a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

pub trait Source {
    /// "local" or "prometheus", as the report's JSON says.
    fn name(&self) -> &'static str;

    /// The targets that have `name` in this source.
    fn targets(&mut self, name: &str) -> anyhow::Result<Vec<String>>;

    /// Every series called `name` of `target` with steps starting in [from_ms, to_ms): a
    /// minute each where the source keeps minutes, an hour where it keeps only hours. Also says
    /// whether the series is a counter.
    fn series(
        &mut self,
        target: &str,
        name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<(Kind, Vec<Labeled>)>;

    /// When the target's series `name` was last sampled (the default end of a report).
    fn last_ms(&mut self, target: &str, name: &str) -> anyhow::Result<Option<i64>>;
}
