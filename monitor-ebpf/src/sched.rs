//! On-CPU time and context switches from sched_switch.
//!
//! On-CPU time is the scheduler's own accounting, taken from one place per thread: user space
//! reads a live thread's from /proc schedstat, and this program counts a thread's whole
//! se.sum_exec_runtime at its final switch-out, when the thread has left /proc (a leader stays as
//! a zombie, which user space skips). No reading has to be taken at the same instant as another,
//! so a switch between user space's reads cannot count a slice twice or not at all; a thread
//! that dies between them is missing from one sample only. Other switch-outs count switches and
//! the slice's syscalls, and read nothing of the task.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{THREAD_LAST_OF_GROUP, THREAD_LIVE, ThreadStats, map_full};

use crate::{
    maps::{
        THREAD_STATS, begin_slice, count_map_full, counters, leave_targets, requests_enabled,
        target_slot,
    },
    task::{task_oncpu_ns, task_state},
};

// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
// since 5.18 (9c2136be0878 appended prev_state); the same without it before.
const ARG_PREEMPT: usize = 0;
const ARG_PREV: usize = 1;
const ARG_NEXT: usize = 2;
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
    // With the requests family, every switch starts the CPU's slice record: request events of
    // the next thread measure its CPU from its total here (one read of the task, one per-CPU
    // store, no event). Whoever the next thread is: a map lookup to filter would cost more.
    let slice_syscalls = if requests_enabled() {
        let next: *const u8 = ctx.arg(ARG_NEXT);
        // A failed read (never seen: the pointer is the scheduler's own) leaves 0: the slice's
        // totals are then behind the thread's last ones, which user space ignores. Written as
        // unwrap_or: a `match` on this Result, starting the slice at 0 on Err, made the
        // FastAPI tests' routes get 61 % and 2,600 % of the tree's CPU (a BPF backend
        // miscompile, as in final_switch_out; not pinned down).
        let next_oncpu = task_oncpu_ns(next).unwrap_or(0);
        // SAFETY: plain helper call.
        begin_slice(unsafe { bpf_ktime_get_ns() }, next as u64, next_oncpu)
    } else {
        0
    };
    if let Some(slot) = target_slot(prev_tgid) {
        let prev: *const u8 = ctx.arg(ARG_PREV);
        // The kernel counts a switch as voluntary when the task blocks (not preempted and no
        // longer TASK_RUNNING), the same rule as /proc/PID/status voluntary_ctxt_switches.
        let preempt: u64 = ctx.arg(ARG_PREEMPT);
        let prev_state: u64 = match state_from {
            StateFrom::Argument => ctx.arg(ARG_PREV_STATE),
            StateFrom::Task => task_state(prev)?,
        };
        if prev_state & TASK_DEAD != 0 {
            final_switch_out(prev_tid, prev_tgid, slot, task_oncpu_ns(prev)?);
        } else {
            let voluntary = (preempt & 0xff) == 0 && (prev_state & 0xffff_ffff) != 0;
            account(slot, prev_tid, prev_tgid, Some(voluntary), slice_syscalls);
        }
    }
    Ok(())
}

/// A thread's last switch-out: its on-CPU time is final now (update_curr ran before the
/// tracepoint; at sched_process_exit it is stale by the running slice), so it is counted whole
/// (less what its exit counted, nothing with this program attached) and the entry goes. The
/// thread is gone from /proc already (a leader stays as a zombie, which user space skips), so no
/// reading counts it twice. The switch itself is not counted, as the kernel's own switch counts
/// (getrusage, /proc) leave it out. What a thread runs after its process released it (the tail
/// of do_exit, a few microseconds) is counted too, though getrusage leaves it out.
#[inline(always)]
fn final_switch_out(tid: u32, tgid: u32, slot: u32, oncpu_ns: u64) {
    // Plain branches on copied fields: the BPF backend has turned Option combinators over a map
    // value into a read of a register a helper call had clobbered, which the verifier refuses.
    let (has_entry, counted, last_of_group) = match THREAD_STATS.get_ptr(tid) {
        // SAFETY: fields copied out at once; only this thread writes its entry.
        Some(t) if unsafe { (*t).tgid } == tgid => unsafe {
            (
                true,
                (*t).oncpu_counted_ns,
                (*t).exit_state == THREAD_LAST_OF_GROUP,
            )
        },
        _ => (false, 0, false),
    };
    if has_entry {
        let _ = THREAD_STATS.remove(tid);
    }
    if let Some(c) = counters(slot) {
        c.exited_oncpu_ns += oncpu_ns.saturating_sub(counted);
    }
    if last_of_group {
        // The process's last thread leaves only now, so the exit path after
        // sched_process_exit (unmapping memory, closing files) is counted.
        leave_targets(tgid);
    }
}

/// Counts a switch of a live target thread when there was one, and the syscalls it made in the
/// slice that ends (counted only while the requests family is attached), in its per-thread entry
/// (made here the first time). Returns whether the thread has an entry (it has none only when
/// the map is full).
#[inline(always)]
pub fn account(slot: u32, tid: u32, tgid: u32, voluntary: Option<bool>, syscalls: u64) -> bool {
    let (vol, invol) = match voluntary {
        Some(true) => (1, 0),
        Some(false) => (0, 1),
        None => (0, 0),
    };
    // Only the thread itself writes its entry: plain adds.
    let has_entry = match THREAD_STATS.get_ptr_mut(tid) {
        Some(t) => unsafe {
            // SAFETY: live map value, single writer.
            (*t).switches_voluntary += vol;
            (*t).switches_involuntary += invol;
            (*t).syscalls += syscalls;
            true
        },
        None => {
            let fresh = ThreadStats {
                oncpu_counted_ns: 0,
                switches_voluntary: vol,
                switches_involuntary: invol,
                tgid,
                slot: slot as u16,
                exit_state: THREAD_LIVE,
                syscalls,
            };
            if THREAD_STATS.insert(tid, fresh, 0).is_ok() {
                true
            } else {
                count_map_full(map_full::THREAD_STATS);
                false
            }
        }
    };
    if let Some(c) = counters(slot) {
        c.switches_voluntary += vol;
        c.switches_involuntary += invol;
    }
    has_entry
}
