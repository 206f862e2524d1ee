//! The web config in force, re-read when its file or a certificate, key or CA file it names
//! changes (a renewed certificate needs no restart, nor does a new user). A change that does not
//! load is logged once and the last good config stays in force: nothing is served unprotected
//! or refused because of a half-written file.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rustls::ServerConfig;
use tracing::{error, info};

use super::web_config::{WebConfig, WebConfigError};

/// One loaded web config with its TLS server configuration built.
#[derive(Debug)]
pub struct ActiveWebConfig {
    pub config: WebConfig,
    pub tls: Option<Arc<ServerConfig>>,
}

impl ActiveWebConfig {
    fn load(path: &Path) -> Result<Self, WebConfigError> {
        let (config, tls) = WebConfig::load_with_tls(path)?;
        Ok(Self { config, tls })
    }
}

#[derive(Clone)]
pub struct WebConfigWatch {
    path: PathBuf,
    state: Arc<Mutex<WatchState>>,
}

struct WatchState {
    active: Arc<ActiveWebConfig>,
    /// The stamps of the files `active` was loaded from.
    loaded: Vec<Stamp>,
    /// The stamps of the last change that failed to load (logged once).
    failed: Option<Vec<Stamp>>,
}

/// What tells a changed file: its inode (a replaced file, as cert renewal tools do), size and
/// modification time; None when it cannot be read.
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

impl WebConfigWatch {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let active = ActiveWebConfig::load(path)?;
        let loaded = stamps(&active.config.watched_files());
        Ok(Self {
            path: path.to_owned(),
            state: Arc::new(Mutex::new(WatchState {
                active: Arc::new(active),
                loaded,
                failed: None,
            })),
        })
    }

    /// The config in force, reloaded first when one of its files changed. A few stat calls:
    /// cheap enough for every connection and request.
    pub fn current(&self) -> Arc<ActiveWebConfig> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamps(&state.active.config.watched_files());
        if now == state.loaded || state.failed.as_ref() == Some(&now) {
            return state.active.clone();
        }
        match ActiveWebConfig::load(&self.path) {
            Ok(active) => {
                info!(
                    file = %self.path.display(),
                    tls = active.tls.is_some(),
                    users = active.config.users.len(),
                    "web config reloaded"
                );
                state.loaded = stamps(&active.config.watched_files());
                state.active = Arc::new(active);
                state.failed = None;
            }
            Err(e) => {
                error!("{e}; the previous web config stays in force");
                state.failed = Some(now);
            }
        }
        state.active.clone()
    }
}
