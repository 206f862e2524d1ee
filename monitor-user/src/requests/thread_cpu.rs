//! CPU and syscalls of one thread between checkpoints, from its on-CPU slices.
//!
//! A slice (switch-in to switch-out) is time the thread ran without a break, so the CPU between
//! two instants is the part of its slices between them: exact, with no sampling. Slices arrive
//! when they end, after the events inside them; an event that happens while the thread runs
//! carries where the running slice began and how many syscalls the thread made in it so far. A
//! checkpoint hands the work gathered since the last one to whoever the caller says it belongs
//! to; the part of a slice that ends later but lies before a checkpoint goes to that
//! checkpoint's owner (its syscalls in proportion to time: the kernel counts them per slice).
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

/// Where a thread was when an event happened: its running slice's start (0 when unknown: the
/// thread is not running, or its slice began before the programs attached) and its syscalls in
/// that slice so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SliceSoFar {
    pub start_ns: u64,
    pub syscalls: u32,
}

#[derive(Debug, Default)]
pub struct ThreadCpu {
    /// CPU before this instant is booked.
    covered_ns: u64,
    /// The last checkpoint, and who got the CPU before it.
    last_ns: u64,
    last_owner: Owner,
    /// Work after the last checkpoint, not yet booked.
    pending: Work,
    /// The slice whose syscalls were last counted, and how many of them were.
    seen_start_ns: u64,
    seen_syscalls: u32,
}

impl ThreadCpu {
    /// Syscalls of the slice that began at `start_ns` not counted yet, `so_far` being its
    /// count now.
    fn new_syscalls(&mut self, start_ns: u64, so_far: u32) -> u64 {
        let counted = if self.seen_start_ns == start_ns {
            self.seen_syscalls
        } else {
            0
        };
        self.seen_start_ns = start_ns;
        self.seen_syscalls = so_far.max(counted);
        u64::from(so_far.saturating_sub(counted))
    }

    /// A finished slice that made `syscalls` syscalls. Returns work that belongs to the last
    /// checkpoint's owner (the slice began before it and had not been counted there).
    pub fn slice(&mut self, start_ns: u64, end_ns: u64, syscalls: u32) -> Option<(Owner, Work)> {
        let new_syscalls = self.new_syscalls(start_ns, syscalls);
        let from = start_ns.max(self.covered_ns);
        if end_ns <= from {
            self.pending.syscalls += new_syscalls;
            return None;
        }
        self.covered_ns = end_ns;
        if from < self.last_ns {
            let before = self.last_ns.min(end_ns) - from;
            let after = end_ns.saturating_sub(self.last_ns);
            let syscalls_before =
                (new_syscalls as f64 * before as f64 / (before + after) as f64).round() as u64;
            self.pending.cpu_ns += after;
            self.pending.syscalls += new_syscalls - syscalls_before;
            let work = Work {
                cpu_ns: before,
                syscalls: syscalls_before,
            };
            return Some((self.last_owner.clone(), work));
        }
        self.pending.cpu_ns += end_ns - from;
        self.pending.syscalls += new_syscalls;
        None
    }

    /// A checkpoint at `ts_ns`: returns the work since the last one, including the running
    /// slice up to now when its start is known, which the caller books to `owner`. `owner` also
    /// gets what arrives later of a slice that began before `ts_ns`.
    pub fn checkpoint(&mut self, ts_ns: u64, slice: SliceSoFar, owner: Owner) -> Work {
        if slice.start_ns != 0 {
            let from = slice.start_ns.max(self.covered_ns);
            if ts_ns > from {
                self.pending.cpu_ns += ts_ns - from;
            }
            self.covered_ns = self.covered_ns.max(ts_ns);
            self.pending.syscalls += self.new_syscalls(slice.start_ns, slice.syscalls);
        }
        self.last_ns = self.last_ns.max(ts_ns);
        self.last_owner = owner;
        std::mem::take(&mut self.pending)
    }

    /// Work gathered since the last checkpoint (slices that ended), handed to the current owner
    /// by a periodic flush of threads that went quiet.
    pub fn take_pending(&mut self) -> Work {
        std::mem::take(&mut self.pending)
    }

    pub fn last_ns(&self) -> u64 {
        self.last_ns.max(self.covered_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::http_line::Method;

    fn r(t: &str) -> Owner {
        Some(Route {
            method: Method::Get,
            template: t.into(),
        })
    }

    fn at(start_ns: u64, syscalls: u32) -> SliceSoFar {
        SliceSoFar { start_ns, syscalls }
    }

    fn work(cpu_ns: u64, syscalls: u64) -> Work {
        Work { cpu_ns, syscalls }
    }

    #[test]
    fn a_checkpoint_inside_a_slice_splits_it_exactly() {
        let mut t = ThreadCpu::default();
        // Slice 100..400 (7 syscalls) with checkpoints at 150 (2 so far) and 300 (5 so far).
        assert_eq!(t.checkpoint(150, at(100, 2), r("a")), work(50, 2));
        assert_eq!(t.checkpoint(300, at(100, 5), r("b")), work(150, 3));
        // The slice ends at 400: its last 100 ns and 2 syscalls wait for the next checkpoint.
        assert_eq!(t.slice(100, 400, 7), None);
        // Another slice 500..600 (1 syscall), then a checkpoint at 650 in a slice from 620.
        assert_eq!(t.slice(500, 600, 1), None);
        assert_eq!(
            t.checkpoint(650, at(620, 1), r("c")),
            work(100 + 100 + 30, 2 + 1 + 1)
        );
    }

    #[test]
    fn a_slice_that_straddles_a_checkpoint_of_a_sleeping_thread_is_split() {
        let mut t = ThreadCpu::default();
        t.checkpoint(100, at(50, 1), r("old"));
        // The thread is handed new work at 200 while not running (start unknown), before its
        // slice 150..210 has arrived: 150..200 goes to the owner before 200, 200..210 waits for
        // the new one; its 6 syscalls are split by time, 5 and 1.
        assert_eq!(
            t.checkpoint(200, SliceSoFar::default(), r("old")),
            work(0, 0)
        );
        assert_eq!(t.slice(150, 210, 6), Some((r("old"), work(50, 5))));
        assert_eq!(t.take_pending(), work(10, 1));
    }
}
