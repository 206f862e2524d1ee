//! On-CPU time and context switches from sched_switch.
//!
//! Each CPU remembers who was switched in and when. At the next switch on that CPU the outgoing
//! task (current) is the one that was switched in, so its slice is `now - start`. Slices still
//! running are added by user space from CPU_SLICES, or a busy thread that is never switched out
//! would be under-counted.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{CpuSlice, ProcessStats, ThreadStats};

use crate::{
    maps::{CPU_SLICES, PROCESS_STATS, THREAD_STATS, counters, target_slot},
    task::task_ids,
};

// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
const ARG_PREEMPT: usize = 0;
const ARG_NEXT: usize = 2;
const ARG_PREV_STATE: usize = 3;

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx);
    0
}

fn try_sched_switch(ctx: &RawTracePointContext) -> Result<(), i64> {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let slice = CPU_SLICES.get_ptr_mut(0).ok_or(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_tid, prev_tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if let Some(slot) = target_slot(prev_tgid) {
        // The kernel counts a switch as voluntary when the task blocks (not preempted and no
        // longer TASK_RUNNING), the same rule as /proc/PID/status voluntary_ctxt_switches.
        let preempt: u64 = ctx.arg(ARG_PREEMPT);
        let prev_state: u64 = ctx.arg(ARG_PREV_STATE);
        let voluntary = (preempt & 0xff) == 0 && (prev_state & 0xffff_ffff) != 0;
        // SAFETY: per-CPU value, no concurrent writer.
        let s = unsafe { *slice };
        let ran = if s.start_ns != 0 && s.tid == prev_tid {
            now.saturating_sub(s.start_ns)
        } else {
            0
        };
        account(slot, prev_tid, prev_tgid, ran, voluntary);
    }
    let next: *const u8 = ctx.arg(ARG_NEXT);
    let (tid, tgid) = task_ids(next)?;
    // SAFETY: per-CPU value.
    unsafe {
        *slice = CpuSlice {
            start_ns: now,
            tid,
            tgid,
        }
    };
    Ok(())
}

/// Accounts the running slice of `tid` up to now and restarts it, for callers that know the
/// task is about to stop being a target.
#[inline(always)]
pub fn close_slice(slot: u32, tid: u32, tgid: u32) {
    let Some(slice) = CPU_SLICES.get_ptr_mut(0) else { return };
    // SAFETY: helper without preconditions; per-CPU value.
    let now = unsafe { bpf_ktime_get_ns() };
    let s = unsafe { &mut *slice };
    if s.start_ns != 0 && s.tid == tid {
        let ran = now.saturating_sub(s.start_ns);
        s.start_ns = now;
        if let Some(c) = counters(slot) {
            c.oncpu_ns += ran;
        }
        if let Some(p) = PROCESS_STATS.get_ptr_mut(&tgid) {
            // SAFETY: this CPU's copy of a live map value.
            unsafe { (*p).oncpu_ns += ran };
        }
    }
}

#[inline(always)]
fn account(slot: u32, tid: u32, tgid: u32, ran_ns: u64, voluntary: bool) {
    let (vol, invol) = if voluntary { (1, 0) } else { (0, 1) };
    if let Some(c) = counters(slot) {
        c.oncpu_ns += ran_ns;
        c.switches_voluntary += vol;
        c.switches_involuntary += invol;
    }
    // Threads of one process switch out on several CPUs at once, so the process entry is per
    // CPU (the bpfel target has no atomic read-modify-write in core).
    match PROCESS_STATS.get_ptr_mut(&tgid) {
        Some(p) => unsafe {
            // SAFETY: this CPU's copy of a live map value.
            (*p).oncpu_ns += ran_ns;
            (*p).switches_voluntary += vol;
            (*p).switches_involuntary += invol;
        },
        None => {
            let fresh = ProcessStats {
                oncpu_ns: ran_ns,
                switches_voluntary: vol,
                switches_involuntary: invol,
                slot,
                _pad: 0,
            };
            // A full map loses the per-process split only; the target totals above have it.
            let _ = PROCESS_STATS.insert(&tgid, &fresh, 0);
        }
    }
    // Only the thread itself writes its entry: plain adds.
    match THREAD_STATS.get_ptr_mut(&tid) {
        Some(t) => unsafe {
            // SAFETY: live map value, single writer.
            (*t).oncpu_ns += ran_ns;
            (*t).switches_voluntary += vol;
            (*t).switches_involuntary += invol;
        },
        None => {
            let fresh = ThreadStats {
                oncpu_ns: ran_ns,
                switches_voluntary: vol,
                switches_involuntary: invol,
                tgid,
                _pad: 0,
            };
            let _ = THREAD_STATS.insert(&tid, &fresh, 0);
        }
    }
}
