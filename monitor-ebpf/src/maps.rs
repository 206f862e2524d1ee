//! Maps shared by the program families. Layouts come from monitor-common.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use monitor_common::{
    BPF_F_MMAPABLE, MAX_ERRNO, MAX_START_OVERFLOW, MAX_SYSCALLS, MAX_TARGET_PROCESSES,
    MAX_TARGET_THREADS, MAX_TARGETS, START_SLOTS, SyscallStart, SyscallStat,
    TARGET_INDEX_DEFAULT_ENTRIES, TARGET_INDEX_SPAN, TargetCounters, ThreadStats, map_full,
    requests::RunningSlice,
};

/// tgid -> target slot. Written by user space (roots) and by the fork program (descendants).
/// The set user space reads; the programs filter with TARGET_INDEX.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGET_PROCESSES, 0);

/// The same set as one byte per pid (slot + 1, or 0), so the filter every program runs first
/// is an array load the verifier inlines instead of a hash lookup: this is what processes that
/// are not targets pay. Bytes, not bits: the fork and exit programs and user space (through
/// mmap) each store whole bytes, so no writer can undo another's without atomics. Sized to
/// pid_max at load; a pid beyond it (pid_max raised later) falls back to TARGETS.
#[map]
pub static TARGET_INDEX: Array<[u8; TARGET_INDEX_SPAN as usize]> =
    Array::with_max_entries(TARGET_INDEX_DEFAULT_ENTRIES, BPF_F_MMAPABLE);

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

/// tid -> start, for a target thread whose slot in SYSCALL_STARTS another target thread holds
/// mid-call (tids equal modulo START_SLOTS: pid_max above 65536 and a large thread pool). Rare,
/// so the common path stays an array access.
#[map]
pub static SYSCALL_START_OVERFLOW: HashMap<u32, SyscallStart> =
    HashMap::with_max_entries(MAX_START_OVERFLOW, 0);

/// tid -> a target thread's switches, syscalls and place in its life (removed at its final
/// switch-out or its free).
#[map]
pub static THREAD_STATS: HashMap<u32, ThreadStats> =
    HashMap::with_max_entries(MAX_TARGET_THREADS, 0);

/// Entry 0 is 1 once sched_switch is attached: it then counts each thread's time at its final
/// switch-out and ends the process at its last thread's; until then (or without it) the exit
/// program counts a thread (its free adds the rest) and ends the process. A map, not a load-time constant: whether the attach succeeds is known only after load.
#[map]
pub static SCHED_ATTACHED: Array<u32> = Array::with_max_entries(1, 0);

/// The slice running on each CPU (index 0), kept while the requests family is attached.
#[map]
pub static RUNNING_SLICES: PerCpuArray<RunningSlice> = PerCpuArray::with_max_entries(1, 0);

/// 1 when the requests family is attached (set by the loader): sched_switch keeps
/// RUNNING_SLICES and sys_exit counts a target's syscalls into it.
#[unsafe(no_mangle)]
static REQUESTS_ENABLED: u32 = 0;

#[inline(always)]
pub fn requests_enabled() -> bool {
    // SAFETY: volatile read of a constant the loader rewrites; a plain read would be folded.
    unsafe { core::ptr::read_volatile(&REQUESTS_ENABLED) != 0 }
}

/// 1 when the syscalls family's sys_exit program does the requests family's exit work
/// (`requests::on_target_exit`; set by the loader when both families are attached, and
/// requests_sys_exit is then not attached).
#[unsafe(no_mangle)]
static REQUESTS_IN_SYS_EXIT: u32 = 0;

#[inline(always)]
pub fn requests_in_sys_exit() -> bool {
    // SAFETY: volatile read of a constant the loader rewrites; a plain read would be folded.
    unsafe { core::ptr::read_volatile(&REQUESTS_IN_SYS_EXIT) != 0 }
}

/// A switch on this CPU: a new slice begins now, of the thread whose task is `next_task` and
/// has run `next_oncpu_ns` so far. Returns the syscalls the slice that ends made (a target
/// thread's, or 0).
#[inline(always)]
pub fn begin_slice(now_ns: u64, next_task: u64, next_oncpu_ns: u64) -> u64 {
    match RUNNING_SLICES.get_ptr_mut(0) {
        // SAFETY: per-CPU value; sched_switch does not nest with sys_exit on one CPU.
        Some(r) => unsafe {
            let ended = (*r).syscalls;
            (*r).since_ns = now_ns;
            (*r).oncpu_at_start_ns = next_oncpu_ns;
            (*r).task = next_task;
            (*r).syscalls = 0;
            u64::from(ended)
        },
        None => 0,
    }
}

/// Inserts that failed for lack of room, per map (`monitor_common::map_full`), per CPU.
#[map]
pub static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(map_full::COUNT, 0);

/// Counts an insert into `map` (a `monitor_common::map_full` index) that failed.
#[inline(always)]
pub fn count_map_full(map: u32) {
    if let Some(n) = MAP_FULL.get_ptr_mut(map) {
        // SAFETY: per-CPU value, no concurrent writer.
        unsafe { *n += 1 };
    }
}

/// The target slot of `tgid`, if it is in the target set.
#[inline(always)]
pub fn target_slot(tgid: u32) -> Option<u32> {
    match TARGET_INDEX.get(tgid / TARGET_INDEX_SPAN) {
        Some(bytes) => {
            let b = bytes[(tgid % TARGET_INDEX_SPAN) as usize];
            if b == 0 { None } else { Some(u32::from(b) - 1) }
        }
        // SAFETY: the value is copied out at once; a concurrent delete can at worst hand us a
        // slot that was valid a moment ago.
        None => unsafe { TARGETS.get(tgid) }.copied(),
    }
}

/// Puts `tgid` into the target set under `slot`.
#[inline(always)]
pub fn join_targets(tgid: u32, slot: u32) -> Result<(), i64> {
    if let Err(e) = TARGETS.insert(tgid, slot, 0) {
        count_map_full(map_full::TARGETS);
        return Err(e.into());
    }
    set_index(tgid, slot as u8 + 1);
    Ok(())
}

/// Takes `tgid` out of the target set (the index first, so the filter drops it at once).
#[inline(always)]
pub fn leave_targets(tgid: u32) {
    set_index(tgid, 0);
    let _ = TARGETS.remove(tgid);
}

#[inline(always)]
fn set_index(tgid: u32, value: u8) {
    if let Some(bytes) = TARGET_INDEX.get_ptr_mut(tgid / TARGET_INDEX_SPAN) {
        // SAFETY: a one-byte store into a live array value; other writers store other bytes.
        unsafe { (*bytes)[(tgid % TARGET_INDEX_SPAN) as usize] = value };
    }
}

#[inline(always)]
pub fn counters(slot: u32) -> Option<&'static mut TargetCounters> {
    // SAFETY: per-CPU value; programs do not nest on one CPU for these tracepoints' contexts
    // except via NMI, which none of ours run in.
    TARGET_COUNTERS
        .get_ptr_mut(slot)
        .map(|p| unsafe { &mut *p })
}
