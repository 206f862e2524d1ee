//! The requests family's reader: a thread that drains the kernel's ring buffer into the
//! tracker, ends quiet responses, and forgets processes that are gone.
//!
//! A thread of its own, not the sampler: events arrive thousands a second and must not wait
//! for a slow /proc read; the sampler never waits for them either. Under load it drains in
//! batches every DRAIN_PERIOD, so its cost is per event, not per wakeup; idle, it sleeps until
//! the kernel says a record is there.
use std::{
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd},
        unix::net::UnixStream,
    },
    sync::{Arc, Mutex},
    time::{Duration, Instant},
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
/// The tick when no process is followed yet (a target that serves no HTTP).
const IDLE_TICK_PERIOD: Duration = Duration::from_secs(1);
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

/// Starts the reader; it ends when `stop`'s peer is closed.
pub fn start(
    mut events: RequestEvents,
    tracker: SharedTracker,
    config: &RequestsConfig,
    running: &[u32],
    stop: UnixStream,
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
            let procfs = ProcFs::new("/proc");
            // Threads that went quiet inside a request: the scheduler's total now.
            let mut oncpu_now = |tgid: u32, tid: u32| procfs.thread_schedstat_ns(tgid, tid).ok();
            let mut last_tick = Instant::now();
            let mut last_drain = Instant::now();
            loop {
                let mut drained = 0;
                let due = loop {
                    let Ok(mut t) = tracker.lock() else { return };
                    let n = events.drain(BATCH, |record| t.record(record));
                    drained += n;
                    if n < BATCH {
                        break if t.follows_nothing() {
                            IDLE_TICK_PERIOD
                        } else {
                            TICK_PERIOD
                        };
                    }
                };
                if last_tick.elapsed() >= due {
                    last_tick = Instant::now();
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
                if drained == 0 {
                    // Idle: sleep until a record comes or the next tick, not every
                    // DRAIN_PERIOD: a thread's wakeup costs tens of µs on a VM, 50 a second
                    // were 0.3 % of a core. With no process followed, ticks have nothing to do.
                    match wait(
                        &stop,
                        Some(&events),
                        due.saturating_sub(last_tick.elapsed()),
                    ) {
                        Woke::Stop => break,
                        Woke::Timeout => continue,
                        Woke::Ready => {}
                    }
                }
                // Then let records gather for a while: a drain per DRAIN_PERIOD, sooner when they
                // come so fast that the ring would fill a quarter of the way before then.
                let now = Instant::now();
                let pause = pause_after(drained, now.duration_since(last_drain));
                last_drain = now;
                if let Woke::Stop = wait(&stop, None, pause) {
                    break;
                }
            }
            // What the ring still holds is the end of the run: `monitor stat` reports it.
            if let Ok(mut t) = tracker.lock() {
                events.drain(usize::MAX, |record| t.record(record));
            }
        })
        .context("starting the requests reader thread")
}

/// Records the ring holds: I/O events, the largest, with the ring's 8-byte record header.
const RING_RECORDS: usize = monitor_common::requests::RING_BYTES as usize
    / (std::mem::size_of::<monitor_common::requests::IoEvent>() + 8);
/// The shortest pause between drains.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// How long to let records gather after draining `drained` of them over `since` (the last
/// pause and the drain): DRAIN_PERIOD unless at that rate the ring would be a quarter full
/// sooner. A closed-loop load on loopback makes 300,000 events a second, which fill the 2 MiB
/// ring in 22 ms.
fn pause_after(drained: usize, since: Duration) -> Duration {
    if drained == 0 {
        return DRAIN_PERIOD;
    }
    let per_record = since / u32::try_from(drained).unwrap_or(u32::MAX);
    let quarter = per_record.saturating_mul(u32::try_from(RING_RECORDS / 4).unwrap_or(1));
    quarter.clamp(MIN_PAUSE, DRAIN_PERIOD)
}

enum Woke {
    Ready,
    Timeout,
    Stop,
}

/// Sleeps until `stop`'s peer is gone, the ring (when given) holds a record, or `timeout`.
fn wait(stop: &UnixStream, ring: Option<&RequestEvents>, timeout: Duration) -> Woke {
    let poll_fd = |fd: BorrowedFd<'_>| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Without a ring the second entry's negative fd makes poll skip it.
    let mut fds = [
        poll_fd(stop.as_fd()),
        libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        },
    ];
    if let Some(r) = ring {
        fds[1] = poll_fd(r.fd());
    }
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: two valid pollfds that outlive the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if ready < 0 {
        // EINTR: as a timeout; the loop comes back.
        return Woke::Timeout;
    }
    // The peer closed (or wrote): stop.
    if fds[0].revents != 0 {
        return Woke::Stop;
    }
    if fds[1].revents & libc::POLLIN != 0 {
        Woke::Ready
    } else {
        Woke::Timeout
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_sooner_when_records_come_fast() {
        assert_eq!(pause_after(0, Duration::from_millis(20)), DRAIN_PERIOD);
        // 5,000 requests a second, two events each: 200 in 20 ms, far from a quarter ring.
        assert_eq!(pause_after(200, Duration::from_millis(20)), DRAIN_PERIOD);
        // 300,000 events a second: a quarter of the ring comes sooner than DRAIN_PERIOD.
        let fast = pause_after(6_000, Duration::from_millis(20));
        assert!(fast < DRAIN_PERIOD && fast >= MIN_PAUSE, "{fast:?}");
        let records_in_pause = 300_000.0 * fast.as_secs_f64();
        assert!(records_in_pause <= RING_RECORDS as f64 / 4.0 + 1.0);
        // Faster than the floor allows: the floor.
        assert_eq!(pause_after(1_000_000, Duration::from_millis(20)), MIN_PAUSE);
    }
}
