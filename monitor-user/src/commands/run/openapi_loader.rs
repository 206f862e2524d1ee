//! Loads the application's route templates from its OpenAPI document when a process of the
//! target serves its first request (at start, and after a worker restart), off the reader
//! thread: the fetch is a blocking HTTP call with a timeout.
use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tracing::{info, warn};

use crate::{
    collect::listening::loopback_listening_ports,
    requests::{
        SharedTracker,
        openapi::{fetch_openapi, templates_from_openapi},
        tracker::OWN_FETCH_QUERY,
    },
};

const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Said once per daemon: a target without a document keeps the heuristic quietly after that.
static FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

/// Fetches the document from a port `pid` listens on, in a thread of its own, and gives its
/// templates to the tracker's route table.
pub fn load_for(pid: u32, path: String, tracker: SharedTracker) {
    let spawned = std::thread::Builder::new()
        .name("openapi".into())
        .spawn(move || match load(pid, &path) {
            Ok((port, templates)) => {
                let n = templates.len();
                let Ok(mut t) = tracker.lock() else { return };
                let Some(target) = t.target_mut(0) else {
                    return;
                };
                let rejected = target.table.set_openapi(templates);
                info!(pid, port, templates = n, "route templates from the application's OpenAPI document");
                for e in rejected {
                    warn!(pid, "OpenAPI template not used: {e}");
                }
            }
            Err(why) => {
                if !FAILURE_LOGGED.swap(true, Ordering::Relaxed) {
                    warn!(pid, "no OpenAPI document ({why}); routes come from the config's patterns and the heuristic");
                }
            }
        });
    if let Err(e) = spawned {
        warn!("starting the OpenAPI loader: {e}");
    }
}

fn load(
    pid: u32,
    path: &str,
) -> Result<(u16, Vec<(crate::requests::http_line::Method, String)>), String> {
    let ports = loopback_listening_ports(Path::new("/proc"), pid);
    if ports.is_empty() {
        return Err(format!("pid {pid} listens on no loopback TCP port"));
    }
    let mut errors = Vec::new();
    for port in ports {
        // The marker query keeps this request out of the target's own counts.
        let sep = if path.contains('?') { '&' } else { '?' };
        let marked = format!("{path}{sep}{OWN_FETCH_QUERY}");
        match fetch_openapi(port, &marked, FETCH_TIMEOUT)
            .and_then(|body| templates_from_openapi(&body))
        {
            Ok(t) => return Ok((port, t)),
            Err(e) => errors.push(format!("port {port} {path}: {e}")),
        }
    }
    Err(errors.join("; "))
}
