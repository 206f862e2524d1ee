//! Reading ids out of a `struct task_struct` whose layout is only known at load time.
//!
//! Raw tracepoints hand us task pointers; the daemon finds the offsets of `pid` and `tgid` in the
//! running kernel's BTF and sets these globals before load (no CO-RE needed, no tracefs formats).
use aya_ebpf::helpers::bpf_probe_read_kernel;

#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = 0;

/// `pid` and `tgid` are adjacent `pid_t`s in every kernel's task_struct; the loader checks that
/// TASK_TGID_OFFSET == TASK_PID_OFFSET + 4 so one 8-byte read gets both.
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;

/// (tid, tgid) of a task.
#[inline(always)]
pub fn task_ids(task: *const u8) -> Result<(u32, u32), i64> {
    // SAFETY: volatile read of a constant the loader rewrites; a plain read would be folded to 0.
    let offset = unsafe { core::ptr::read_volatile(&TASK_PID_OFFSET) } as usize;
    // SAFETY: bpf_probe_read_kernel checks the address; a bad pointer yields an error.
    let both: u64 = unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u64) }?;
    Ok((both as u32, (both >> 32) as u32))
}

/// Whether the loader filled in the offsets (it refuses to load otherwise; this is a guard).
#[inline(always)]
pub fn offsets_known() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&TASK_TGID_OFFSET) != 0 }
}

#[unsafe(no_mangle)]
static TASK_MIN_FLT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_MAJ_FLT_OFFSET: u32 = 0;

/// The kernel's own fault accounting of a task (what getrusage sums): (min_flt, maj_flt).
#[inline(always)]
pub fn task_faults(task: *const u8) -> Result<(u64, u64), i64> {
    // SAFETY: as in task_ids.
    let (min_off, maj_off) = unsafe {
        (
            core::ptr::read_volatile(&TASK_MIN_FLT_OFFSET) as usize,
            core::ptr::read_volatile(&TASK_MAJ_FLT_OFFSET) as usize,
        )
    };
    // SAFETY: as in task_ids.
    let min = unsafe { bpf_probe_read_kernel(task.wrapping_add(min_off) as *const u64) }?;
    let maj = unsafe { bpf_probe_read_kernel(task.wrapping_add(maj_off) as *const u64) }?;
    Ok((min, maj))
}

#[unsafe(no_mangle)]
static TASK_SUM_EXEC_OFFSET: u32 = 0;

/// The scheduler's own on-CPU accounting of a task (se.sum_exec_runtime, what schedstat and
/// getrusage report). At sched_switch it is up to date for the outgoing task: update_curr() ran
/// in put_prev_task() before the tracepoint.
#[inline(always)]
pub fn task_oncpu_ns(task: *const u8) -> Result<u64, i64> {
    // SAFETY: as in task_ids.
    let offset = unsafe { core::ptr::read_volatile(&TASK_SUM_EXEC_OFFSET) } as usize;
    // SAFETY: as in task_ids.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u64) }.map_err(i64::from)
}

#[unsafe(no_mangle)]
static TASK_STATE_OFFSET: u32 = 0;

/// The task's scheduler state word (`__state`, or `state` before 5.14, where it is a `long`
/// whose low 32 bits are the same bits on little-endian). Used where sched_switch does not pass
/// `prev_state` (before 5.18): it is the same read those kernels' own tracepoint made.
#[inline(always)]
pub fn task_state(task: *const u8) -> Result<u64, i64> {
    // SAFETY: as in task_ids.
    let offset = unsafe { core::ptr::read_volatile(&TASK_STATE_OFFSET) } as usize;
    // SAFETY: as in task_ids.
    let state: u32 = unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u32) }?;
    Ok(u64::from(state))
}

#[unsafe(no_mangle)]
static TASK_GROUP_LEADER_OFFSET: u32 = 0;

/// Whether `task` leads its thread group. A thread that execs takes over its leader's pid; the
/// old leader it replaces is freed with that pid but no longer leads the group.
#[inline(always)]
pub fn is_group_leader(task: *const u8) -> Result<bool, i64> {
    // SAFETY: as in task_ids.
    let offset = unsafe { core::ptr::read_volatile(&TASK_GROUP_LEADER_OFFSET) } as usize;
    // SAFETY: as in task_ids.
    let leader: u64 = unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u64) }?;
    Ok(leader == task as u64)
}
