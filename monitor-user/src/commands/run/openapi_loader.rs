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

/// When a document is fetched.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// The daemon starts on processes already running: one that listens on no port is not an
    /// HTTP server (or not yet), which is no news.
    Start,
    /// A process served its first request.
    FirstRequest,
}

/// Fetches the document from a port `pid` listens on, in a thread of its own, and gives its
/// templates to the tracker's route table.
pub fn load_for(pid: u32, path: String, tracker: SharedTracker, occasion: Occasion) {
    let spawned = std::thread::Builder::new()
        .name("openapi".into())
        .spawn(move || match load(pid, &path) {
            Ok((port, templates)) => {
                let n = templates.len();
                let Ok(mut t) = tracker.lock() else { return };
                let rejected = t.set_openapi(0, templates);
                info!(pid, port, templates = n, "route templates from the application's OpenAPI document");
                for e in rejected {
                    warn!(pid, "OpenAPI template not used: {e}");
                }
            }
            Err(LoadError::NotListening(_)) if occasion == Occasion::Start => {}
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

enum LoadError {
    NotListening(u32),
    Failed(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotListening(pid) => write!(f, "pid {pid} listens on no loopback TCP port"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

fn load(
    pid: u32,
    path: &str,
) -> Result<(u16, Vec<(crate::requests::http_line::Method, String)>), LoadError> {
    let ports = loopback_listening_ports(Path::new("/proc"), pid);
    if ports.is_empty() {
        return Err(LoadError::NotListening(pid));
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
    Err(LoadError::Failed(errors.join("; ")))
}
