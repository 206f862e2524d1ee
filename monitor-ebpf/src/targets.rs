//! The target set follows process lifetimes in the kernel: a target's forked children join its
//! slot before they first run, and a process leaves when the last thread of its group switches
//! out for the last time (kernels whose sched_process_exit says `group_dead`, 6.16 and later), or
//! when its group leader is freed (before 6.16), so a reused pid never inherits a target's
//! membership or counts.
//!
//! Older kernels do not tell an exiting thread whether it is the last of its group, and nothing
//! they pass at that point can tell it exactly: `signal->live` reaches 0 at the last decrement,
//! but every thread still between its decrement and the tracepoint (exit_mm lies in between) then
//! reads 0 too, and the first of them to switch out would take the process out of the target set
//! while the true last thread has not yet been accounted. The leader's free (an RCU callback
//! after it was reaped) is exact instead: it happens once per process, after every thread was
//! released, and before the pid can be reused.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use aya_log_ebpf::debug;
use monitor_common::{
    START_SLOTS, SyscallStart, THREAD_EXITING, THREAD_LAST_OF_GROUP, THREAD_LIVE,
};

use crate::{
    maps::{
        SCHED_ATTACHED, SYSCALL_START_OVERFLOW, SYSCALL_STARTS, THREAD_STATS, counters,
        join_targets, leave_targets, target_slot,
    },
    sched::account,
    task::{is_group_leader, offsets_known, task_faults, task_ids, task_oncpu_ns},
};

/// 1 when sched_process_exit says `group_dead` (6.16+) and ends processes itself; 0 and the group
/// leader's free ends them. Set by the loader with the variant.
#[unsafe(no_mangle)]
static EXIT_KNOWS_GROUP_DEAD: u32 = 0;

#[inline(always)]
fn sched_attached() -> bool {
    SCHED_ATTACHED.get(0).is_some_and(|&v| v != 0)
}

// sched_process_fork: TP_PROTO(struct task_struct *parent, struct task_struct *child), called by
// the parent before the child is woken.
const ARG_CHILD: usize = 1;
// sched_process_exit: TP_PROTO(struct task_struct *p, bool group_dead) since 6.16 (the commit
// that moved it before exit_mm and added group_dead), TP_PROTO(struct task_struct *p) before;
// called by the exiting task. sched_process_free: TP_PROTO(struct task_struct *p), every kernel.
const ARG_TASK: usize = 0;
const ARG_GROUP_DEAD: usize = 1;

/// Whether the exit tracepoint says if the thread is the last of its group.
#[derive(Clone, Copy)]
enum GroupDead {
    Argument,
    /// Not known here: sched_process_free of the leader takes the process out.
    Unknown,
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

/// For kernels whose sched_process_exit passes `group_dead` (6.16 and later).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx, GroupDead::Argument);
    0
}

/// For kernels whose sched_process_exit has one argument: accounts the exiting thread only;
/// sched_process_free ends the process's membership.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_thread(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx, GroupDead::Unknown);
    0
}

/// Attached with either exit variant: removes a freed thread's entry if it is still there, and
/// with sched_process_exit_thread, the group leader's free is the process's end.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn sched_process_free(ctx: RawTracePointContext) -> i32 {
    let _ = try_free(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(slot) = target_slot(parent_tgid) else {
        return Ok(());
    };
    if !offsets_known() {
        return Err(0);
    }
    let child: *const u8 = ctx.arg(ARG_CHILD);
    let (child_tid, child_tgid) = task_ids(child)?;
    // Whatever a previous thread with this tid left (one that died while no program saw its
    // end) is not the new thread's: it would inherit the old on-CPU total and last-of-group mark.
    forget_thread(child_tid);
    if child_tgid == parent_tgid {
        // A new thread: the tgid filter already covers it.
        return Ok(());
    }
    join_targets(child_tgid, slot)?;
    if let Some(c) = counters(slot) {
        c.process_forks += 1;
    }
    debug!(
        ctx,
        "target {} forked {} (slot {})", parent_tgid, child_tgid, slot
    );
    Ok(())
}

#[inline(always)]
fn try_exit(ctx: &RawTracePointContext, group_dead_from: GroupDead) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let Some(slot) = target_slot(tgid) else {
        return Ok(());
    };
    let task: *const u8 = ctx.arg(ARG_TASK);
    let group_dead = match group_dead_from {
        GroupDead::Argument => ctx.arg::<u64>(ARG_GROUP_DEAD) & 0xff != 0,
        GroupDead::Unknown => false,
    };
    // Every exiting thread gets an entry saying so, whatever its final switch-out does: if the
    // process has left the target set by then, the thread's free still counts it. With
    // sched_switch the thread is counted whole at its final switch-out, when it has left /proc,
    // where user space reads it until then. Without it, nothing runs once the thread is gone
    // from /proc but its free, an RCU grace period later: it is counted now, stale by its
    // running slice, user space skips exiting threads, and the free adds the rest.
    let with_sched = sched_attached();
    let oncpu = task_oncpu_ns(task)?;
    let counted = if with_sched { 0 } else { oncpu };
    let mark = if group_dead && with_sched {
        THREAD_LAST_OF_GROUP
    } else {
        THREAD_EXITING
    };
    let has_entry = account(slot, tid, tgid, None, 0);
    if has_entry && let Some(t) = THREAD_STATS.get_ptr_mut(tid) {
        // SAFETY: live map value written only by this thread.
        unsafe {
            (*t).exit_state = mark;
            (*t).oncpu_counted_ns = counted;
        }
    }
    // No room for an entry: without sched_switch nothing later can count the thread, and the
    // last thread's process leaves the target set below, before its final switch-out. Count
    // what is known now (with sched_switch, a thread that is not the last is counted whole at
    // its final switch-out, entry or not).
    let count_now = if has_entry {
        counted
    } else if group_dead || !with_sched {
        oncpu
    } else {
        0
    };
    if count_now != 0
        && let Some(c) = counters(slot)
    {
        c.exited_oncpu_ns += count_now;
    }
    if group_dead && !(with_sched && has_entry) {
        // No final switch-out will end it (sched_switch left out, or no entry to say so).
        leave_targets(tgid);
    }
    // The thread's fault counts are final now; user space reads live threads from /proc, so
    // together they make the exact total even for threads and children that are gone.
    let (min_flt, maj_flt) = task_faults(task).unwrap_or((0, 0));
    let c = counters(slot);
    clear_syscall_start(tid);
    if let Some(c) = c {
        c.exited_minflt += min_flt;
        c.exited_majflt += maj_flt;
        if group_dead {
            // Only written when it changes: sched_process_free (softirq) adds to it too.
            c.process_exits += 1;
        }
    }
    Ok(())
}

fn try_free(ctx: &RawTracePointContext) -> Result<(), i64> {
    // Runs from an RCU callback: the current task is unrelated, the freed one is the argument.
    let task: *const u8 = ctx.arg(ARG_TASK);
    let (tid, tgid) = task_ids(task)?;
    // An exited thread whose entry is still here was not counted whole at a final switch-out
    // (sched_switch not attached, or its process had left the target set by then): its time is
    // final now, and what its exit counted is taken off. One hash lookup per task freed on the
    // host. A live entry under this tid is a new thread's (the tid was released before this free).
    // SAFETY: the value is copied out at once.
    let entry = unsafe { THREAD_STATS.get(tid) }.copied();
    if let Some(t) = entry.filter(|t| t.tgid == tgid && t.exit_state != THREAD_LIVE) {
        let _ = THREAD_STATS.remove(tid);
        if let (Ok(oncpu), Some(c)) = (task_oncpu_ns(task), counters(u32::from(t.slot))) {
            c.exited_oncpu_ns += oncpu.saturating_sub(t.oncpu_counted_ns);
        }
    }
    // SAFETY: volatile read of a constant the loader rewrites; a plain read would be folded.
    if tid != tgid || unsafe { core::ptr::read_volatile(&EXIT_KNOWS_GROUP_DEAD) } != 0 {
        return Ok(());
    }
    let Some(slot) = target_slot(tgid) else {
        return Ok(());
    };
    if !is_group_leader(task)? {
        // The old leader replaced by a thread that exec'd: the process lives on under this pid.
        return Ok(());
    }
    leave_targets(tgid);
    if let Some(c) = counters(slot) {
        c.process_exits += 1;
    }
    Ok(())
}

/// Drops the per-thread entry of `tid` and any syscall start it holds.
#[inline(always)]
fn forget_thread(tid: u32) {
    let _ = THREAD_STATS.remove(tid);
    clear_syscall_start(tid);
}

/// Clears the syscall start `tid` holds, in its slot or the overflow map.
#[inline(always)]
fn clear_syscall_start(tid: u32) {
    if let Some(start) = SYSCALL_STARTS.get_ptr_mut(tid & (START_SLOTS - 1)) {
        // SAFETY: array value; only clear what this thread owns.
        unsafe {
            if (*start).tid == tid {
                *start = SyscallStart::default();
            }
        }
    }
    let _ = SYSCALL_START_OVERFLOW.remove(tid);
}
