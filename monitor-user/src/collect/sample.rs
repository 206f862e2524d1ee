//! One reading of a target: cumulative counters since the target's processes started, and gauges.
use monitor_common::SyscallStat;

/// What the kernel programs counted for one target (absent in /proc-only mode).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelCounts {
    pub fault_exceptions_user: u64,
    pub fault_exceptions_kernel: u64,
    pub fd_opens: u64,
    pub fd_closes: u64,
    pub fd_close_range_calls: u64,
    pub fd_open_errors: u64,
    /// (errno, count)
    pub fd_open_errors_by_errno: Vec<(u32, u64)>,
    /// (syscall nr, count and total latency)
    pub syscalls: Vec<(u32, SyscallStat)>,
    pub syscall_latency_lost: u64,
    pub process_forks: u64,
    pub process_exits: u64,
    /// (kernel map, inserts that failed for lack of room), for the whole host: the maps are
    /// shared by every target.
    pub map_full: Vec<(&'static str, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// CLOCK_MONOTONIC ns when the sample was taken.
    pub at_ns: u64,
    /// At least one process of the target is alive.
    pub up: bool,
    pub processes: u64,
    /// On-CPU time of all the target's processes since they started (including slices running
    /// right now).
    pub oncpu_ns: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
    pub switches_voluntary: u64,
    pub switches_involuntary: u64,
    pub rss_bytes: u64,
    /// Filled on their own cadences; None when not due this time.
    pub vms_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    pub kernel: Option<KernelCounts>,
}
