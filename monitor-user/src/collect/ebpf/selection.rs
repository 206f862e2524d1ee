//! Which kernel program families to attach (`--programs`): pay only for what you watch.
//!
//! Syscall counting and latency (two programs on every syscall of every process) is the costly
//! family; a user who wants on-CPU time and faults of a syscall-heavy service can leave it out,
//! and fd counts alone need only the exit program. The fork and exit followers always attach:
//! without them nothing can be attributed to the target.
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Family {
    /// Everything below (the default).
    All,
    /// Syscall counts and latency per syscall, and fd counts (sys_enter + sys_exit).
    Syscalls,
    /// fd opens, closes and failed opens only (sys_exit alone: one program per syscall).
    Fds,
    /// On-CPU time and context switches (sched_switch).
    Sched,
    /// Page-fault exceptions (page_fault_user, page_fault_kernel).
    Faults,
    /// HTTP request types: socket reads and writes and hand-overs between the threads of
    /// processes that serve HTTP (a ring buffer of events). Brings sched_switch along: events
    /// measure CPU from its per-thread accounting.
    Requests,
}

/// The families asked for, as the set of programs to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    families: Vec<Family>,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            families: vec![Family::All],
        }
    }
}

impl Selection {
    pub fn new(families: &[Family]) -> Self {
        if families.is_empty() {
            Self::default()
        } else {
            Self {
                families: families.to_vec(),
            }
        }
    }

    /// Every family: what `monitor check` tries.
    pub fn everything() -> Self {
        Self::default()
    }

    fn has(&self, f: Family) -> bool {
        self.families.contains(&Family::All) || self.families.contains(&f)
    }

    /// Whether sys_enter runs, i.e. syscalls are counted and timed (not only their fd effects).
    pub fn syscalls(&self) -> bool {
        self.has(Family::Syscalls)
    }

    /// Whether the program named `program` (see `probes::PROGRAMS`) is wanted.
    pub fn wants(&self, program: &str) -> bool {
        match program {
            "sys_enter" => self.has(Family::Syscalls),
            "sys_exit" => self.has(Family::Syscalls) || self.has(Family::Fds),
            "sched_switch" => self.has(Family::Sched) || self.has(Family::Requests),
            "page_fault_user" | "page_fault_kernel" => self.has(Family::Faults),
            "requests" => self.has(Family::Requests),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_by_default() {
        let s = Selection::default();
        for p in ["sys_enter", "sys_exit", "sched_switch", "page_fault_user"] {
            assert!(s.wants(p), "{p}");
        }
        assert!(s.syscalls());
        assert!(s.wants("requests"), "the requests family is on by default");
    }

    #[test]
    fn naming_the_other_families_leaves_requests_out() {
        let s = Selection::new(&[Family::Syscalls, Family::Sched, Family::Faults]);
        assert!(!s.wants("requests"));
        assert!(s.wants("sys_enter") && s.wants("sched_switch") && s.wants("page_fault_user"));
    }

    #[test]
    fn fds_alone_is_the_exit_program_and_the_followers() {
        let s = Selection::new(&[Family::Fds]);
        assert!(!s.wants("sys_enter"));
        assert!(s.wants("sys_exit"));
        assert!(!s.wants("sched_switch"));
        assert!(!s.wants("page_fault_kernel"));
        assert!(s.wants("sched_process_fork") && s.wants("sched_process_exit"));
        assert!(!s.syscalls());
    }

    #[test]
    fn requests_bring_sched_switch() {
        let s = Selection::new(&[Family::Requests]);
        assert!(s.wants("requests") && s.wants("sched_switch"));
        assert!(!s.wants("sys_enter"));
    }

    #[test]
    fn sched_and_faults() {
        let s = Selection::new(&[Family::Sched, Family::Faults]);
        assert!(s.wants("sched_switch") && s.wants("page_fault_user"));
        assert!(!s.wants("sys_exit") && !s.wants("sys_enter"));
    }
}
