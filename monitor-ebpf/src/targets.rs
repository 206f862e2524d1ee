//! The target set follows process lifetimes in the kernel: a target's forked children join its
//! slot before they first run, and a process leaves when the last thread of its group switches
//! out for the last time, so a reused pid never inherits a target's membership or counts.
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
    task::{offsets_known, task_faults, task_ids, task_oncpu_ns},
};

// sched_process_fork: TP_PROTO(struct task_struct *parent, struct task_struct *child), called by
// the parent before the child is woken.
const ARG_CHILD: usize = 1;
// sched_process_exit: TP_PROTO(struct task_struct *p, bool group_dead), called by the exiting task.
const ARG_TASK: usize = 0;
const ARG_GROUP_DEAD: usize = 1;

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
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

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
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
    let group_dead = ctx.arg::<u64>(ARG_GROUP_DEAD) & 0xff != 0;
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
        c.process_exits += group_dead as u64;
    }
    Ok(())
}
