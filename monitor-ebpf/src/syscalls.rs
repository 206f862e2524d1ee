//! Syscall counts and latency per target and number, and fd creations/closes from the results.
//!
//! sys_enter counts the call (so a call is the target's when it entered as a target, and counts
//! stay exact whatever happens to latency) and writes the start into a slot indexed by tid (not
//! per CPU: a blocking syscall can resume on another CPU). A slot another target thread holds
//! mid-call (tids equal modulo START_SLOTS) is left alone and the start goes to a hash map
//! instead, so neither call's latency is lost or mixed with the other's. sys_exit finds the start
//! by tid and adds the latency; only when it is not in the slot does it pay for the TGID lookup
//! (and the overflow map, or a regs read to still account fds when the start is missing).
//! With the requests family attached too, sys_exit hands every target exit to it
//! (`requests::on_target_exit`): a target's syscall runs one program at its exit, not two, and
//! pays the TGID lookup and the number's read once.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{
    MAX_ERRNO, MAX_SYSCALLS, START_FLAG_DUPFD, START_SLOTS, SyscallStart,
    fd::{F_DUPFD, F_DUPFD_CLOEXEC, FdEffect, fd_effect, nr},
    map_full,
};

use crate::{
    maps::{
        FD_OPEN_ERRORS, SYSCALL_START_OVERFLOW, SYSCALL_STARTS, SYSCALLS, count_map_full, counters,
        requests_in_sys_exit, target_slot,
    },
    requests,
};

/// 1 when sys_enter is attached; 0 when sys_exit runs alone for fd counts (`--programs fds`),
/// so every exit takes the filter path and none is a lost start. Set by the loader.
#[unsafe(no_mangle)]
static SYS_ENTER_ATTACHED: u32 = 1;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = target_slot((pid_tgid >> 32) as u32) else {
        return Ok(());
    };
    let id: i64 = ctx.arg(1);
    if !(0..MAX_SYSCALLS as i64).contains(&id) {
        return Ok(());
    }
    let nr = id as u32;
    count(slot, nr);
    if nr == nr::EXIT || nr == nr::EXIT_GROUP {
        // They never return.
        return Ok(());
    }
    let regs: *const pt_regs = ctx.arg(0);
    let flags = if nr == nr::FCNTL && is_dupfd(regs)? {
        START_FLAG_DUPFD
    } else {
        0
    };
    let tid = pid_tgid as u32;
    let start = SYSCALL_STARTS
        .get_ptr_mut(tid & (START_SLOTS - 1))
        .ok_or(0)?;
    let record = SyscallStart {
        start_ns: unsafe { bpf_ktime_get_ns() },
        tid,
        nr: nr as u16,
        slot: slot as u8,
        flags,
    };
    // SAFETY: array values are always valid for any bits; the owner is checked by tid.
    let held = unsafe { (*start).start_ns != 0 && (*start).tid != tid };
    if held {
        // Another target thread with an equal tid modulo START_SLOTS is mid-call in this slot.
        if SYSCALL_START_OVERFLOW.insert(tid, record, 0).is_err() {
            count_map_full(map_full::SYSCALL_STARTS);
        }
    } else {
        // SAFETY: as above. Two colliding threads entering within the same few nanoseconds can
        // still both find the slot free; the one whose tid does not stay loses its latency.
        unsafe { *start = record };
    }
    Ok(())
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ret: i64 = ctx.arg(1);
    // SAFETY: volatile read of a constant the loader rewrites; a plain read would be folded.
    let with_enter = unsafe { core::ptr::read_volatile(&SYS_ENTER_ATTACHED) } != 0;
    let exit = if with_enter {
        exit_after_enter(ctx, pid_tgid, ret)?
    } else {
        exit_fds(ctx, pid_tgid, ret)?
    };
    // One call site, after the paths join: the requests family's work is verified once.
    if let Some((slot, nr, now)) = exit
        && requests_in_sys_exit()
    {
        requests::on_target_exit(ctx, pid_tgid, slot, nr, ret, now)?;
    }
    Ok(())
}

/// The exit of a syscall whose start sys_enter recorded (or lost). Returns the target slot, the
/// syscall number and the exit's time when it was read (else 0), or None for a process that is
/// not a target.
#[inline(always)]
fn exit_after_enter(
    ctx: &RawTracePointContext,
    pid_tgid: u64,
    ret: i64,
) -> Result<Option<(u32, u32, u64)>, i64> {
    let tid = pid_tgid as u32;
    let start = SYSCALL_STARTS
        .get_ptr_mut(tid & (START_SLOTS - 1))
        .ok_or(0)?;
    // SAFETY: see try_sys_enter.
    let s = unsafe { *start };
    if s.start_ns != 0 && s.tid == tid {
        // SAFETY: as above; consuming the slot keeps a later non-target thread with this tid
        // from matching it.
        unsafe { (*start).start_ns = 0 };
        let now = unsafe { bpf_ktime_get_ns() };
        let (nr, slot) = (s.nr as u32, s.slot as u32);
        add_latency(slot, nr, now.saturating_sub(s.start_ns));
        account_fds(slot, nr, s.flags & START_FLAG_DUPFD != 0, ret);
        return Ok(Some((slot, nr, now)));
    }
    // Slow path: is this a target at all?
    if target_slot((pid_tgid >> 32) as u32).is_none() {
        return Ok(None);
    }
    // SAFETY: the value is copied out at once; only this thread writes its entry.
    if let Some(s) = unsafe { SYSCALL_START_OVERFLOW.get(tid) }.copied() {
        let _ = SYSCALL_START_OVERFLOW.remove(tid);
        let now = unsafe { bpf_ktime_get_ns() };
        let (nr, slot) = (s.nr as u32, s.slot as u32);
        add_latency(slot, nr, now.saturating_sub(s.start_ns));
        account_fds(slot, nr, s.flags & START_FLAG_DUPFD != 0, ret);
        return Ok(Some((slot, nr, now)));
    }
    let exit = exit_fds(ctx, pid_tgid, ret)?;
    if let Some((slot, _, _)) = exit
        && let Some(c) = counters(slot)
    {
        c.syscall_starts_lost += 1;
    }
    Ok(exit)
}

/// The fd effect of a target's syscall exit, its number read from the saved registers.
/// Returns the target slot, the number (NO_SYSCALL when out of range) and 0 (the time, not read
/// here), or None for a process that is not a target.
#[inline(always)]
fn exit_fds(
    ctx: &RawTracePointContext,
    pid_tgid: u64,
    ret: i64,
) -> Result<Option<(u32, u32, u64)>, i64> {
    let Some(slot) = target_slot((pid_tgid >> 32) as u32) else {
        return Ok(None);
    };
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: probe read of the syscall's saved registers.
    let id = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).orig_rax)) }? as i64;
    if !(0..MAX_SYSCALLS as i64).contains(&id) {
        return Ok(Some((slot, NO_SYSCALL, 0)));
    }
    let nr = id as u32;
    let dupfd = nr == nr::FCNTL && is_dupfd(regs)?;
    account_fds(slot, nr, dupfd, ret);
    Ok(Some((slot, nr, 0)))
}

/// A syscall number no table has (the saved number was out of range).
const NO_SYSCALL: u32 = u32::MAX;

#[inline(always)]
fn is_dupfd(regs: *const pt_regs) -> Result<bool, i64> {
    // SAFETY: probe read of fcntl's second argument.
    let cmd = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rsi)) }?;
    Ok(cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
}

#[inline(always)]
fn count(slot: u32, nr: u32) {
    if let Some(stat) = SYSCALLS.get_ptr_mut(slot * MAX_SYSCALLS + nr) {
        // SAFETY: per-CPU value, no concurrent writer.
        unsafe { (*stat).count += 1 };
    }
}

#[inline(always)]
fn add_latency(slot: u32, nr: u32, ns: u64) {
    if let Some(stat) = SYSCALLS.get_ptr_mut(slot * MAX_SYSCALLS + nr) {
        // SAFETY: per-CPU value (the exit's CPU; the sum over CPUs is what user space reads).
        unsafe { (*stat).total_ns += ns };
    }
}

#[inline(always)]
fn account_fds(slot: u32, nr: u32, dupfd: bool, ret: i64) {
    let effect = fd_effect(nr);
    if effect == FdEffect::None {
        return;
    }
    let Some(c) = counters(slot) else { return };
    match effect {
        FdEffect::OpensOne if ret >= 0 => c.fd_opens += 1,
        FdEffect::OpensTwo if ret == 0 => c.fd_opens += 2,
        FdEffect::Fcntl if dupfd && ret >= 0 => c.fd_opens += 1,
        FdEffect::OpensPath if ret >= 0 => c.fd_opens += 1,
        FdEffect::OpensPath => {
            c.fd_open_errors += 1;
            let errno = (-ret) as u32;
            let errno = if errno < MAX_ERRNO { errno } else { 0 };
            if let Some(n) = FD_OPEN_ERRORS.get_ptr_mut(slot * MAX_ERRNO + errno) {
                // SAFETY: per-CPU value.
                unsafe { *n += 1 };
            }
        }
        FdEffect::Closes if ret == 0 => c.fd_closes += 1,
        FdEffect::ClosesRange if ret == 0 => c.fd_close_range_calls += 1,
        _ => {}
    }
}
