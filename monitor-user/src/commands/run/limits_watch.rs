//! The target's limits, re-read on the sampler's cadence and logged when they change: what
//! memory % and CPU % are computed against, and what could not be read.

use std::path::Path;

use tracing::{info, warn};

use crate::collect::{
    collector::Collector,
    limits::{Assessment, Limits, effective_limits, online_cpus},
};

/// The last assessment, so that only changes are logged.
pub struct LimitsWatch {
    last: Option<Result<Assessment, String>>,
}

impl LimitsWatch {
    pub fn new() -> Self {
        Self { last: None }
    }

    /// The limits of the target's current members; the host's when it has none or they cannot
    /// be read (said in the log once per change).
    pub fn read(&mut self, collector: &Collector) -> Limits {
        let members = collector.members();
        let host = || {
            let cpus = online_cpus(Path::new("/")).map_or(1, |s| s.len());
            Limits::host(
                collector.procfs().mem_total_bytes().unwrap_or(0),
                cpus as f64,
            )
        };
        if members.is_empty() {
            return self.last_limits().unwrap_or_else(host);
        }
        let now = effective_limits(collector.procfs(), Path::new("/"), &members)
            .map_err(|e| format!("{e:#}"));
        let limits = match &now {
            Ok(a) => a.limits,
            Err(_) => host(),
        };
        if self.last.as_ref() != Some(&now) {
            log(&now, &limits, members.len());
            self.last = Some(now);
        }
        limits
    }

    fn last_limits(&self) -> Option<Limits> {
        match &self.last {
            Some(Ok(a)) => Some(a.limits),
            _ => None,
        }
    }
}

fn log(now: &Result<Assessment, String>, limits: &Limits, members: usize) {
    match now {
        Ok(a) => {
            info!(
                memory_bytes = limits.memory_bytes,
                memory_source = %limits.memory_source,
                memory_and_swap_bytes = ?limits.memory_and_swap_bytes,
                cpus = limits.cpus,
                cpu_source = %limits.cpu_source,
                cgroups = ?a.cgroups,
                "limits used for memory % and CPU %"
            );
            if a.cgroups.len() > 1 {
                warn!(
                    cgroups = ?a.cgroups,
                    "the target's {members} processes are in {} memory cgroups: the tightest limit is used, against the RSS of all of them",
                    a.cgroups.len()
                );
            }
            for note in &a.notes {
                warn!("{note}");
            }
        }
        Err(e) => warn!("reading the target's limits: {e}; using the host's capacity"),
    }
}
