//! CPU of one thread between checkpoints, from its on-CPU slices.
//!
//! A slice (switch-in to switch-out) is time the thread ran without a break, so the CPU between
//! two instants is the part of its slices between them: exact, with no sampling. Slices arrive
//! when they end, after the events inside them; an event that happens while the thread runs
//! carries where the running slice began. A checkpoint hands the CPU gathered since the last one
//! to whoever the caller says it belongs to; the part of a slice that ends later but lies before
//! a checkpoint goes to that checkpoint's owner.
use super::route_table::Route;

/// Who CPU is booked to: a route, or no request.
pub type Owner = Option<Route>;

#[derive(Debug, Default)]
pub struct ThreadCpu {
    /// CPU before this instant is booked.
    covered_ns: u64,
    /// The last checkpoint, and who got the CPU before it.
    last_ns: u64,
    last_owner: Owner,
    /// CPU after the last checkpoint, not yet booked.
    pending_ns: u64,
}

impl ThreadCpu {
    /// A finished slice. Returns CPU that belongs to the last checkpoint's owner (the slice
    /// began before it and had not been counted there).
    pub fn slice(&mut self, start_ns: u64, end_ns: u64) -> Option<(Owner, u64)> {
        let from = start_ns.max(self.covered_ns);
        if end_ns <= from {
            return None;
        }
        self.covered_ns = end_ns;
        if from < self.last_ns {
            let before = self.last_ns.min(end_ns) - from;
            self.pending_ns += end_ns.saturating_sub(self.last_ns);
            return Some((self.last_owner.clone(), before));
        }
        self.pending_ns += end_ns - from;
        None
    }

    /// A checkpoint at `ts_ns`: returns the CPU since the last one, including the running slice
    /// up to now when its start is known (`slice_start_ns` != 0; 0 for a thread that is not
    /// running, such as one being woken), which the caller books to `owner`. `owner` also gets
    /// what arrives later of a slice that began before `ts_ns`.
    pub fn checkpoint(&mut self, ts_ns: u64, slice_start_ns: u64, owner: Owner) -> u64 {
        if slice_start_ns != 0 {
            let from = slice_start_ns.max(self.covered_ns);
            if ts_ns > from {
                self.pending_ns += ts_ns - from;
            }
            self.covered_ns = self.covered_ns.max(ts_ns);
        }
        self.last_ns = self.last_ns.max(ts_ns);
        self.last_owner = owner;
        std::mem::take(&mut self.pending_ns)
    }

    /// CPU gathered since the last checkpoint (slices that ended), handed to the current owner
    /// by a periodic flush of threads that went quiet.
    pub fn take_pending(&mut self) -> u64 {
        std::mem::take(&mut self.pending_ns)
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

    #[test]
    fn a_checkpoint_inside_a_slice_splits_it_exactly() {
        let mut t = ThreadCpu::default();
        // Slice 100..400 with checkpoints at 150 (start 100) and 300.
        assert_eq!(t.checkpoint(150, 100, r("a")), 50);
        assert_eq!(t.checkpoint(300, 100, r("b")), 150);
        // The slice ends at 400: its last 100 ns are pending for the next checkpoint.
        assert_eq!(t.slice(100, 400), None);
        // Another slice 500..600, then a checkpoint at 650 inside a slice that began at 620.
        assert_eq!(t.slice(500, 600), None);
        assert_eq!(t.checkpoint(650, 620, r("c")), 100 + 100 + 30);
    }

    #[test]
    fn a_slice_that_straddles_a_checkpoint_of_a_sleeping_thread_is_split() {
        let mut t = ThreadCpu::default();
        t.checkpoint(100, 50, r("old"));
        // The thread is handed new work at 200 while not running (start unknown), before its
        // slice 150..210 has arrived: 150..200 goes to the owner before 200, 200..210 waits for
        // the new one.
        assert_eq!(t.checkpoint(200, 0, r("old")), 0);
        assert_eq!(t.slice(150, 210), Some((r("old"), 50)));
        assert_eq!(t.take_pending(), 10);
    }
}
