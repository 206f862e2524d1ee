//! On-CPU time and context switches from sched_switch.
//!
//! On-CPU time is the scheduler's own accounting: at each switch-out (and exit) of a target
//! thread the growth of its se.sum_exec_runtime since it was last seen is added. A switch event
//! the program does not see loses nothing: the next one catches up. User space replaces the
//! (slightly stale) values of live threads with their /proc schedstat, so slices still running
//! count too; what only the kernel can give is the time of threads that are gone.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use monitor_common::{ProcessStats, ThreadStats};

use crate::{
    maps::{PROCESS_STATS, THREAD_STATS, counters, leave_targets, target_slot},
    task::{task_oncpu_ns, task_state},
};

// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
// since 5.18 (9c2136be0878 appended prev_state); the same without it before.
const ARG_PREEMPT: usize = 0;
const ARG_PREV: usize = 1;
const ARG_PREV_STATE: usize = 3;
/// include/linux/sched.h: the state of a task switching out for the last time.
const TASK_DEAD: u64 = 0x80;

/// For kernels whose sched_switch passes `prev_state` (5.18 and later).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx, StateFrom::Argument);
    0
}

/// For kernels whose sched_switch has three arguments (before 5.18): the state is read from the
/// task, as those kernels' own tracepoint did. Reading argument 3 there would fail the attach.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch_task_state(ctx: RawTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx, StateFrom::Task);
    0
}

#[derive(Clone, Copy)]
enum StateFrom {
    Argument,
    Task,
}

#[inline(always)]
fn try_sched_switch(ctx: &RawTracePointContext, state_from: StateFrom) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_tid, prev_tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if let Some(slot) = target_slot(prev_tgid) {
        let prev: *const u8 = ctx.arg(ARG_PREV);
        // The kernel counts a switch as voluntary when the task blocks (not preempted and no
        // longer TASK_RUNNING), the same rule as /proc/PID/status voluntary_ctxt_switches.
        let preempt: u64 = ctx.arg(ARG_PREEMPT);
        let prev_state: u64 = match state_from {
            StateFrom::Argument => ctx.arg(ARG_PREV_STATE),
            StateFrom::Task => task_state(prev)?,
        };
        let voluntary = (preempt & 0xff) == 0 && (prev_state & 0xffff_ffff) != 0;
        account(
            slot,
            prev_tid,
            prev_tgid,
            task_oncpu_ns(prev)?,
            Some(voluntary),
        );
        if prev_state & TASK_DEAD != 0 {
            // The process's last thread leaves only now, so the exit path after
            // sched_process_exit (unmapping memory, closing files) is counted.
            // SAFETY: the value is copied out at once.
            if unsafe { THREAD_STATS.get(prev_tid) }.is_some_and(|t| t.last_of_group != 0) {
                leave_targets(prev_tgid);
                let _ = PROCESS_STATS.remove(prev_tgid);
            }
        }
    }
    Ok(())
}

/// Brings a target thread's on-CPU total up to `oncpu_ns` (its sum_exec_runtime now) and counts a
/// switch when there was one. Returns nothing: a full map only loses the per-thread split.
#[inline(always)]
pub fn account(slot: u32, tid: u32, tgid: u32, oncpu_ns: u64, voluntary: Option<bool>) {
    let (vol, invol) = match voluntary {
        Some(true) => (1, 0),
        Some(false) => (0, 1),
        None => (0, 0),
    };
    // Only the thread itself writes its entry: plain adds.
    let ran = match THREAD_STATS.get_ptr_mut(tid) {
        Some(t) => unsafe {
            // SAFETY: live map value, single writer.
            let ran = oncpu_ns.saturating_sub((*t).oncpu_ns);
            (*t).oncpu_ns = oncpu_ns.max((*t).oncpu_ns);
            (*t).switches_voluntary += vol;
            (*t).switches_involuntary += invol;
            ran
        },
        None => {
            // First sight of the thread: everything it ran since it started counts (a thread
            // that ran before its process joined is not in the join baseline, see user space).
            let fresh = ThreadStats {
                oncpu_ns,
                switches_voluntary: vol,
                switches_involuntary: invol,
                tgid,
                last_of_group: 0,
            };
            if THREAD_STATS.insert(tid, fresh, 0).is_err() {
                // Without its entry the next switch would count the thread's whole life again.
                return;
            }
            oncpu_ns
        }
    };
    if let Some(c) = counters(slot) {
        c.oncpu_ns += ran;
        c.switches_voluntary += vol;
        c.switches_involuntary += invol;
    }
    // Threads of one process switch out on several CPUs at once, so the process entry is per
    // CPU (the bpfel target has no atomic read-modify-write in core).
    match PROCESS_STATS.get_ptr_mut(tgid) {
        Some(p) => unsafe {
            // SAFETY: this CPU's copy of a live map value.
            (*p).oncpu_ns += ran;
            (*p).switches_voluntary += vol;
            (*p).switches_involuntary += invol;
        },
        None => {
            let fresh = ProcessStats {
                oncpu_ns: ran,
                switches_voluntary: vol,
                switches_involuntary: invol,
                slot,
                _pad: 0,
            };
            let _ = PROCESS_STATS.insert(tgid, fresh, 0);
        }
    }
}
