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
use monitor_common::{START_SLOTS, SyscallStart};

use crate::{
    maps::{
        PROCESS_STATS, SYSCALL_STARTS, THREAD_STATS, counters, join_targets, leave_targets,
        target_slot,
    },
    task::{is_group_leader, offsets_known, task_faults, task_ids, task_oncpu_ns},
};

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

/// Attached with sched_process_exit_thread: the group leader's free is the process's end.
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
    let (_, child_tgid) = task_ids(child)?;
    if child_tgid == parent_tgid {
        // A new thread: the tgid filter already covers it.
        return Ok(());
    }
    // A stale entry would be a previous process with this pid: start clean.
    let _ = PROCESS_STATS.remove(child_tgid);
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
    // Account the thread up to now, in case its final switch-out is not seen.
    let task: *const u8 = ctx.arg(ARG_TASK);
    if let Ok(oncpu) = task_oncpu_ns(task) {
        crate::sched::account(slot, tid, tgid, oncpu, None);
    }
    // The entry stays: the final switch-out adds the exit path's last microseconds to it, and
    // user space deletes it once the thread is gone from /proc (two samples in a row).
    // The thread's fault counts are final now; user space reads live threads from /proc, so
    // together they make the exact total even for threads and children that are gone.
    let (min_flt, maj_flt) = task_faults(task).unwrap_or((0, 0));
    let c = counters(slot);
    if let Some(start) = SYSCALL_STARTS.get_ptr_mut(tid & (START_SLOTS - 1)) {
        // SAFETY: array value; only clear what this thread owns.
        unsafe {
            if (*start).tid == tid {
                *start = SyscallStart::default();
            }
        }
    }
    let group_dead = match group_dead_from {
        GroupDead::Argument => ctx.arg::<u64>(ARG_GROUP_DEAD) & 0xff != 0,
        GroupDead::Unknown => false,
    };
    if group_dead {
        // Leave TARGETS at this thread's final switch-out (see sched.rs), not now.
        if let Some(t) = THREAD_STATS.get_ptr_mut(tid) {
            // SAFETY: live map value written only by this thread.
            unsafe { (*t).last_of_group = 1 };
        } else {
            leave_targets(tgid);
            let _ = PROCESS_STATS.remove(tgid);
        }
    }
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
    if tid != tgid {
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
    let _ = PROCESS_STATS.remove(tgid);
    if let Some(c) = counters(slot) {
        c.process_exits += 1;
    }
    Ok(())
}
