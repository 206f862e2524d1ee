//! CPU and syscalls of one thread between checkpoints, from the thread's own running totals.
//!
//! Every kernel event says how much CPU its thread has had since it started (the scheduler's
//! sum_exec_runtime, plus its running slice) and how many syscalls it has made: the work between
//! two checkpoints of a thread is the difference of the two, exact, with no sampling and no
//! event per context switch. Work after a thread's last event is found at its next one; for a
//! thread that goes quiet while it works for someone (a long handler), the caller reads the
//! scheduler's total from /proc at its tick ([`ThreadCpu::observe_cpu`]).
use super::route_table::Route;

/// Who work is booked to: a route, or no request.
pub type Owner = Option<Route>;

/// CPU time and syscalls, booked together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    pub cpu_ns: u64,
    pub syscalls: u64,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.cpu_ns == 0 && self.syscalls == 0
    }
}

/// A thread's running totals at an instant: on-CPU ns since it started and syscalls counted
/// since the kernel programs attached (a wrapping u32, as the kernel sends it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub oncpu_ns: u64,
    pub syscalls: u32,
}

impl Progress {
    /// From an event's fields: None when the kernel did not know (it sends 0).
    pub fn known(oncpu_ns: u64, syscalls: u32) -> Option<Self> {
        (oncpu_ns != 0).then_some(Self { oncpu_ns, syscalls })
    }
}

/// Syscall counts further apart than this are a reordering, not progress.
const SYSCALLS_SANE: u32 = 1 << 31;

#[derive(Debug, Default)]
pub struct ThreadCpu {
    /// The totals at the last checkpoint whose totals were known.
    last: Option<Progress>,
    /// The instant of the last checkpoint or observation.
    last_ns: u64,
    /// The instant of the checkpoint `last` is from.
    last_known_ns: u64,
}

/// Totals behind the last ones by more than this are not a late event but a glitch.
const BEHIND_SANE_NS: u64 = 100_000_000;
/// Slack over the wall time for CPU between two checkpoints (clock reads on two CPUs, a slice's
/// interrupt time).
const AHEAD_SLACK_NS: u64 = 50_000_000;

/// Whether `now` at `ts_ns` cannot follow `last` at `last_ns` on one thread: a thread runs at
/// most the wall time between two instants.
fn implausible(last: Progress, last_ns: u64, now: Progress, ts_ns: u64) -> bool {
    if now.oncpu_ns < last.oncpu_ns {
        return last.oncpu_ns - now.oncpu_ns > BEHIND_SANE_NS;
    }
    let wall = ts_ns.saturating_sub(last_ns);
    now.oncpu_ns - last.oncpu_ns > wall.saturating_add(AHEAD_SLACK_NS)
}

impl ThreadCpu {
    /// A checkpoint at `ts_ns` where the thread's totals are `now` (None: unknown). Returns the
    /// work since the last known checkpoint, which the caller books to whoever the thread worked
    /// for in between. Totals behind the last ones (an event that waited in another CPU's part of
    /// the ring buffer) book nothing and move nothing back.
    pub fn checkpoint(&mut self, ts_ns: u64, now: Option<Progress>) -> Work {
        self.last_ns = self.last_ns.max(ts_ns);
        let Some(now) = now else {
            return Work::default();
        };
        let work = match self.last {
            // Far behind, or ahead by more than the wall time since: not this thread's progress.
            // The kernel sent another thread's totals this way on 6.18 until its slice record
            // named its task (RunningSlice::task); kept as a net: start counting afresh from
            // here rather than book it, or stay stuck behind it.
            Some(last) if implausible(last, self.last_known_ns, now, ts_ns) => {
                self.last = Some(now);
                self.last_known_ns = ts_ns;
                return Work::default();
            }
            Some(last) if now.oncpu_ns < last.oncpu_ns => return Work::default(),
            Some(last) => {
                let syscalls = now.syscalls.wrapping_sub(last.syscalls);
                Work {
                    cpu_ns: now.oncpu_ns - last.oncpu_ns,
                    syscalls: if syscalls < SYSCALLS_SANE {
                        u64::from(syscalls)
                    } else {
                        0
                    },
                }
            }
            None => Work::default(),
        };
        self.last = Some(now);
        self.last_known_ns = ts_ns;
        work
    }

    /// The scheduler's total read at `ts_ns` (from /proc) for a thread that made no event for a
    /// while: returns the CPU since the last checkpoint (its syscalls wait for the next event).
    /// Nothing for a thread whose totals were never known: there is no start to count from.
    pub fn observe_cpu(&mut self, ts_ns: u64, oncpu_ns: u64) -> Work {
        let Some(last) = self.last else {
            return Work::default();
        };
        self.last_ns = self.last_ns.max(ts_ns);
        if oncpu_ns <= last.oncpu_ns {
            return Work::default();
        }
        self.last = Some(Progress {
            oncpu_ns,
            syscalls: last.syscalls,
        });
        self.last_known_ns = ts_ns;
        Work {
            cpu_ns: oncpu_ns - last.oncpu_ns,
            syscalls: 0,
        }
    }

    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(oncpu_ns: u64, syscalls: u32) -> Option<Progress> {
        Progress::known(oncpu_ns, syscalls)
    }

    fn work(cpu_ns: u64, syscalls: u64) -> Work {
        Work { cpu_ns, syscalls }
    }

    #[test]
    fn work_between_checkpoints_is_the_difference_of_the_totals() {
        let mut t = ThreadCpu::default();
        // The first known totals are a start, not work.
        assert_eq!(t.checkpoint(150, at(1000, 7)), work(0, 0));
        assert_eq!(t.checkpoint(300, at(1150, 10)), work(150, 3));
        // The thread slept from 300 to 900 and ran 40 ns before its next event.
        assert_eq!(t.checkpoint(940, at(1190, 12)), work(40, 2));
    }

    #[test]
    fn unknown_and_stale_totals_book_nothing_and_keep_the_start() {
        let mut t = ThreadCpu::default();
        assert_eq!(t.checkpoint(10, None), work(0, 0));
        assert_eq!(t.checkpoint(20, at(500, 1)), work(0, 0));
        assert_eq!(t.checkpoint(30, None), work(0, 0));
        // An older event processed late: nothing, and the totals stay where they were.
        assert_eq!(t.checkpoint(25, at(450, 0)), work(0, 0));
        assert_eq!(t.checkpoint(40, at(600, 4)), work(100, 3));
        // The kernel's u32 count wraps.
        let mut w = ThreadCpu::default();
        w.checkpoint(1, at(10, u32::MAX - 1));
        assert_eq!(w.checkpoint(2, at(20, 3)), work(10, 5));
    }

    #[test]
    fn a_total_no_thread_could_reach_books_nothing_and_counting_goes_on_from_it() {
        let mut t = ThreadCpu::default();
        t.checkpoint(1_000_000_000, at(5_000_000, 1));
        // 20 s more CPU than 10 ms of wall time allow: nothing booked.
        assert_eq!(
            t.checkpoint(1_010_000_000, at(20_005_000_000, 2)),
            work(0, 0)
        );
        // The next totals count from the implausible one only if they follow it; these are
        // far behind it, so counting starts afresh from them.
        assert_eq!(t.checkpoint(1_020_000_000, at(5_010_000, 3)), work(0, 0));
        assert_eq!(
            t.checkpoint(1_030_000_000, at(5_015_000, 4)),
            work(5_000, 1)
        );
        // A late event a little behind is still ignored, the start kept.
        assert_eq!(t.checkpoint(1_031_000_000, at(5_014_000, 4)), work(0, 0));
        assert_eq!(
            t.checkpoint(1_040_000_000, at(5_020_000, 5)),
            work(5_000, 1)
        );
    }

    #[test]
    fn a_quiet_thread_is_observed_from_the_schedulers_total() {
        let mut t = ThreadCpu::default();
        assert_eq!(t.observe_cpu(5, 900), work(0, 0), "no start yet");
        t.checkpoint(10, at(1000, 5));
        assert_eq!(t.observe_cpu(2_000, 1_800), work(800, 0));
        assert_eq!(t.last_ns(), 2_000);
        // The next event books the rest, and the syscalls since the last event.
        assert_eq!(t.checkpoint(2_100, at(1_850, 9)), work(50, 4));
    }
}
