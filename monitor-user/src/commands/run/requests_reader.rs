//! The requests family's reader: a thread that drains the kernel's ring buffer into the
//! tracker, ends quiet responses, and forgets processes that are gone.
//!
//! A thread of its own, not the sampler: events arrive thousands a second and must not wait
//! for a slow /proc read; the sampler never waits for them either. It drains in batches every
//! DRAIN_PERIOD, so its cost is per event, not per wakeup.
use std::{
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use anyhow::Context as _;
use tracing::warn;

use super::openapi_loader::{Occasion, load_for};

use crate::{
    collect::{ebpf::request_events::RequestEvents, procfs::ProcFs},
    config::RequestsConfig,
    requests::{
        SharedTracker,
        ledger::Ledger,
        route_table::RouteTable,
        tracker::{TargetRequests, Tracker},
    },
};

const DRAIN_PERIOD: Duration = Duration::from_millis(20);
const TICK_PERIOD: Duration = Duration::from_millis(250);
/// Records handled under one lock, so a scrape never waits long.
const BATCH: usize = 4096;

/// The tracker for one target, its routes set up from the config (errors name the pattern).
pub fn tracker(config: &RequestsConfig) -> anyhow::Result<SharedTracker> {
    let patterns: Vec<String> = config.routes.iter().map(|r| r.pattern.clone()).collect();
    let table = RouteTable::new(&patterns, config.max_routes)
        .context("[[requests.route]] in the config")?;
    Ok(Arc::new(Mutex::new(Tracker::new(vec![TargetRequests {
        table,
        ledger: Ledger::default(),
    }]))))
}

/// Starts the reader; it ends when `stop` fires or its sender is dropped.
pub fn start(
    mut events: RequestEvents,
    tracker: SharedTracker,
    config: &RequestsConfig,
    running: &[u32],
    stop: mpsc::Receiver<()>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let openapi = config.openapi.then(|| config.openapi_path.clone());
    // Processes already serving: their templates before their next request, not after it.
    if let Some(path) = &openapi {
        for &pid in running {
            load_for(pid, path.clone(), tracker.clone(), Occasion::Start);
        }
    }
    std::thread::Builder::new()
        .name("requests".into())
        .spawn(move || {
            let mut since_tick = Duration::ZERO;
            let procfs = ProcFs::new("/proc");
            // Threads that went quiet inside a request: the scheduler's total now.
            let mut oncpu_now = |tgid: u32, tid: u32| procfs.thread_schedstat_ns(tgid, tid).ok();
            loop {
                loop {
                    let Ok(mut t) = tracker.lock() else { return };
                    let n = events.drain(BATCH, |record| t.record(record));
                    if n < BATCH {
                        break;
                    }
                }
                since_tick += DRAIN_PERIOD;
                if since_tick >= TICK_PERIOD {
                    since_tick = Duration::ZERO;
                    let lost = events.lost();
                    let Ok(mut t) = tracker.lock() else { return };
                    if lost > t.events_lost {
                        warn!(
                            lost = lost - t.events_lost,
                            "request events lost: the ring buffer was full"
                        );
                    }
                    t.events_lost = lost;
                    t.tick(monotonic_ns(), &mut oncpu_now);
                    if let Some(path) = &openapi {
                        for pid in t.take_new_processes() {
                            load_for(pid, path.clone(), tracker.clone(), Occasion::FirstRequest);
                        }
                    }
                    t.retain_processes(|tgid| {
                        std::path::Path::new(&format!("/proc/{tgid}")).exists()
                    });
                }
                match stop.recv_timeout(DRAIN_PERIOD) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .context("starting the requests reader thread")
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the kernel's bpf_ktime_get_ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
