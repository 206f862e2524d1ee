//! The daemon's writer: a thread of its own that takes each sample's points from a bounded
//! queue and writes them, so a slow or full disk never delays sampling, alerts or /metrics.
//!
//! A write that fails (disk full, a read-only file system, an unreachable store) keeps its
//! points in memory and is tried again with the next batch; it is counted in
//! `monitor_history_write_errors_total` and logged once until a write succeeds again. What
//! waits is bounded ([`MAX_PENDING_POINTS`]): past it the oldest points are dropped and
//! counted, never the daemon's memory.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use prometheus::{IntCounter, IntGauge, Registry};
use tracing::{info, warn};

use super::{
    chunk::Sample,
    db::{Retention, Store, Tier, window_start},
    series::SeriesKey,
};

/// One point of a sample: a series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub key: SeriesKey,
    /// The OpenMetrics type of the series' family.
    pub kind: &'static str,
    pub value: f64,
}

/// The points of one sample, taken at `t_ms` (Unix ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub t_ms: i64,
    pub points: Vec<Point>,
}

/// Batches the queue holds between the sampler and the writer (over an hour at 5 s).
const QUEUE_BATCHES: usize = 1024;
/// Points held in memory while writes fail: past this the oldest go (about 10 MB).
pub const MAX_PENDING_POINTS: usize = 100_000;
/// SQLite's page cache for the writer: a batch touches the head's last pages and the series
/// index; sealing a window reads and writes a few chunks. SQLite's default (2 MiB) fills as a
/// long-running daemon seals windows, and would stay resident for nothing.
const WRITER_CACHE_KIB: u32 = 256;
/// How often closed windows are sealed and old chunks expired, at most.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// A raw window is sealed once it ended this long ago: samples of its last seconds may still be
/// on their way.
const SEAL_GRACE_MS: i64 = 60_000;

/// The writer's own series, registered in the daemon's registry.
#[derive(Clone)]
pub struct WriterMetrics {
    pub write_errors: IntCounter,
    pub points_written: IntCounter,
    pub points_dropped: IntCounter,
    pub pending: IntGauge,
}

impl WriterMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let pending = IntGauge::new(
            "monitor_history_pending_points",
            "Points waiting to be written to the history store",
        )?;
        registry.register(Box::new(pending.clone()))?;
        Ok(Self {
            write_errors: counter(
                "monitor_history_write_errors_total",
                "Writes to the history store that failed (their points are kept and retried)",
            )?,
            points_written: counter(
                "monitor_history_points_written_total",
                "Points written to the history store",
            )?,
            points_dropped: counter(
                "monitor_history_points_dropped_total",
                "Points the history store lost: its queue was full, or writes failed for so long that the oldest were dropped",
            )?,
            pending,
        })
    }
}

/// The sampler's end of the writer.
pub struct Writer {
    tx: Option<SyncSender<Batch>>,
    handle: Option<JoinHandle<()>>,
    metrics: WriterMetrics,
}

impl Writer {
    /// Starts the writer thread on the store at `path` (opened there, off the caller's thread:
    /// a quick check of a large file takes a while).
    pub fn start(
        path: PathBuf,
        retention: Retention,
        metrics: WriterMetrics,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let m = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || run(&path, retention, &rx, &m))
            .context("starting the history writer thread")?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            metrics,
        })
    }

    /// Queues a sample's points; never blocks. A full queue drops them (counted).
    pub fn send(&self, batch: Batch) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                self.metrics.points_dropped.inc_by(b.points.len() as u64);
            }
        }
    }

    /// Closes the queue and waits for the writer to write what it holds (as dropping does;
    /// this names the wait where it happens).
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The writer thread: open, then write each batch as it comes, sealing and expiring now and then.
fn run(
    path: &std::path::Path,
    retention: Retention,
    rx: &mpsc::Receiver<Batch>,
    m: &WriterMetrics,
) {
    let mut state = WriterState::new();
    loop {
        let closed = match rx.recv_timeout(MAINTENANCE_EVERY) {
            Ok(batch) => {
                state.push(batch, m);
                // Take whatever else is queued: one transaction for all of it.
                while let Ok(b) = rx.try_recv() {
                    state.push(b, m);
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        state.write(path, m);
        state.maintain(path, &retention, m, closed);
        m.pending.set(state.pending_points as i64);
        if closed {
            return;
        }
    }
}

struct WriterState {
    store: Option<Store>,
    pending: VecDeque<Batch>,
    pending_points: usize,
    /// The last write failed: the next failure is not logged again.
    failing: bool,
    /// Raw windows ending at or before this are sealed.
    sealed_until: i64,
    last_maintenance: Option<Instant>,
}

impl WriterState {
    /// Nothing open, pending or sealed yet: the first maintenance seals what an earlier run
    /// left in the head.
    fn new() -> Self {
        Self {
            store: None,
            pending: VecDeque::new(),
            pending_points: 0,
            failing: false,
            sealed_until: i64::MIN,
            last_maintenance: None,
        }
    }

    fn push(&mut self, batch: Batch, m: &WriterMetrics) {
        self.pending_points += batch.points.len();
        self.pending.push_back(batch);
        while self.pending_points > MAX_PENDING_POINTS {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.pending_points -= old.points.len();
            m.points_dropped.inc_by(old.points.len() as u64);
        }
    }

    /// Opens the store on first use (and again after a failure to open).
    fn open(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        if self.store.is_none() {
            let (store, _aside) = Store::open(path)?;
            store.set_cache_kib(WRITER_CACHE_KIB)?;
            info!(store = %path.display(), "history store open");
            self.store = Some(store);
        }
        Ok(())
    }

    fn write(&mut self, path: &std::path::Path, m: &WriterMetrics) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = self.open(path) {
            return self.failed(path, m, &e);
        }
        let (Some(store), pending) = (self.store.as_mut(), &self.pending) else {
            return;
        };
        let result = store.transaction(|tx| {
            let mut ids = std::collections::HashMap::new();
            for batch in pending {
                for p in &batch.points {
                    let id = match ids.get(&p.key) {
                        Some(&id) => id,
                        None => {
                            let id = tx.series_id(&p.key, p.kind)?;
                            ids.insert(p.key.clone(), id);
                            id
                        }
                    };
                    tx.put(
                        id,
                        Sample {
                            t_ms: batch.t_ms,
                            value: p.value,
                        },
                    )?;
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                m.points_written.inc_by(self.pending_points as u64);
                self.pending.clear();
                self.pending_points = 0;
                if self.failing {
                    info!(store = %path.display(), "history writes succeed again");
                    self.failing = false;
                }
            }
            Err(e) => self.failed(path, m, &e),
        }
    }

    fn failed(&mut self, path: &std::path::Path, m: &WriterMetrics, e: &anyhow::Error) {
        m.write_errors.inc();
        if damaged(e) {
            // Opened again with the next batch: the open's check moves the file aside (naming
            // it) and starts a new store; the points waiting go there.
            self.store = None;
        }
        if !self.failing {
            warn!(
                store = %path.display(),
                pending = self.pending_points,
                "writing history failed; keeping the points and retrying with the next sample \
                 (logged once until it succeeds): {e:#}"
            );
            self.failing = true;
        }
    }

    /// Seals the raw windows that closed since the last time and expires old chunks; on every
    /// call at `closing`, else once a window boundary has passed or MAINTENANCE_EVERY.
    fn maintain(
        &mut self,
        path: &std::path::Path,
        retention: &Retention,
        m: &WriterMetrics,
        closing: bool,
    ) {
        let now = super::unix_ms(SystemTime::now());
        let boundary = window_start(Tier::Raw, now - SEAL_GRACE_MS);
        let due = self
            .last_maintenance
            .is_none_or(|t| t.elapsed() >= MAINTENANCE_EVERY);
        if !(due && (boundary > self.sealed_until || closing)) || self.store.is_none() {
            return;
        }
        self.last_maintenance = Some(Instant::now());
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let result = store.transaction(|tx| {
            for (series, start) in tx.closed_windows(boundary)? {
                tx.seal(series, start)?;
            }
            tx.expire(now, retention)?;
            Ok(())
        });
        match result {
            Ok(()) => self.sealed_until = boundary,
            Err(e) => self.failed(path, m, &e.context("sealing closed windows")),
        }
    }
}

/// Whether SQLite said the store is damaged (not a database, or corrupt) anywhere in `e`.
fn damaged(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    e.chain().any(|cause| {
        cause
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|c| matches!(c, DatabaseCorrupt | NotADatabase))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_damaged_under_the_writer_is_moved_aside_and_writing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let m = WriterMetrics::new(&Registry::new()).unwrap();
        let mut state = WriterState::new();
        let batch = |t_ms| Batch {
            t_ms,
            points: vec![Point {
                key: SeriesKey::new("api", "app_up", &[]),
                kind: "gauge",
                value: 1.0,
            }],
        };
        state.push(batch(1000), &m);
        state.write(&path, &m);
        assert_eq!(m.points_written.get(), 1);
        // Garbage over the whole file while the writer holds it open.
        drop(state.store.take());
        std::fs::write(&path, vec![0x55u8; 64 * 1024]).unwrap();
        let _ = std::fs::remove_file(dir.path().join("h.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("h.db-shm"));
        state.store = Some(Store::open_unchecked_for_tests(&path));
        state.push(batch(2000), &m);
        state.write(&path, &m);
        assert_eq!(
            m.write_errors.get(),
            1,
            "the write to the damaged file fails"
        );
        assert!(state.store.is_none(), "the damaged store is let go");
        state.write(&path, &m);
        assert_eq!(
            m.points_written.get(),
            2,
            "the next write goes to a new store"
        );
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside, "the damaged file was moved aside");
    }
}
