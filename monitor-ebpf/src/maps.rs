//! Maps shared by the program families. Layouts come from monitor-common.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use monitor_common::{
    MAX_ERRNO, MAX_SYSCALLS, MAX_TARGET_PROCESSES, MAX_TARGET_THREADS, MAX_TARGETS, ProcessStats,
    START_SLOTS, SyscallStart, SyscallStat, TargetCounters, ThreadStats,
};

/// tgid -> target slot. Written by user space (roots) and by the fork program (descendants).
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGET_PROCESSES, 0);

#[map]
pub static TARGET_COUNTERS: PerCpuArray<TargetCounters> =
    PerCpuArray::with_max_entries(MAX_TARGETS, 0);

/// Indexed by `slot * MAX_SYSCALLS + nr`.
#[map]
pub static SYSCALLS: PerCpuArray<SyscallStat> =
    PerCpuArray::with_max_entries(MAX_TARGETS * MAX_SYSCALLS, 0);

/// Indexed by `slot * MAX_ERRNO + errno` (errno 0 collects values >= MAX_ERRNO).
#[map]
pub static FD_OPEN_ERRORS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(MAX_TARGETS * MAX_ERRNO, 0);

/// Start of the syscall each target thread is in, indexed by `tid & (START_SLOTS - 1)`. Not per
/// CPU: a syscall that blocks and resumes on another CPU must find its start.
#[map]
pub static SYSCALL_STARTS: Array<SyscallStart> = Array::with_max_entries(START_SLOTS, 0);

/// tgid -> scheduler totals, per CPU because a process's threads run on several CPUs at once.
#[map]
pub static PROCESS_STATS: PerCpuHashMap<u32, ProcessStats> =
    PerCpuHashMap::with_max_entries(MAX_TARGET_PROCESSES, 0);

#[map]
pub static THREAD_STATS: HashMap<u32, ThreadStats> =
    HashMap::with_max_entries(MAX_TARGET_THREADS, 0);

/// The target slot of `tgid`, if it is in the target set.
#[inline(always)]
pub fn target_slot(tgid: u32) -> Option<u32> {
    // SAFETY: the value is copied out at once; a concurrent delete can at worst hand us a slot
    // that was valid a moment ago.
    unsafe { TARGETS.get(tgid) }.copied()
}

#[inline(always)]
pub fn counters(slot: u32) -> Option<&'static mut TargetCounters> {
    // SAFETY: per-CPU value; programs do not nest on one CPU for these tracepoints' contexts
    // except via NMI, which none of ours run in.
    TARGET_COUNTERS
        .get_ptr_mut(slot)
        .map(|p| unsafe { &mut *p })
}
