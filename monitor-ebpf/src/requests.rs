//! The requests family: a target's HTTP connections and the hand-overs between its threads, as
//! events.
//!
//! User space ties CPU to requests with three kinds of facts, all sent through one ring buffer:
//! - reads and writes on a target's connections, with their first bytes (request and status
//!   lines) and the instant they returned: the boundaries of each request;
//! - wakeups between threads of a process that serves HTTP: how a request read by the event
//!   loop reaches the worker thread that runs its handler;
//! - explicit tags, `write(-1, "monitor:...")` by the application: the write fails (EBADF)
//!   before the kernel touches anything, and its bytes name a unit of work.
//!
//! Every event says how much CPU its thread has had and how many syscalls it made so far (a
//! wakeup says it of the wakee too): the scheduler's sum_exec_runtime when the thread was
//! switched in plus the slice since (RUNNING_SLICES, which sched_switch restarts at every switch
//! while this family is attached), and the syscalls of its ended slices (THREAD_STATS) plus this
//! one's. CPU between two events of a thread is then a difference, exact, from the thread's
//! first slice on (a new thread's first unit of work included), and no event is sent per
//! context switch.
//!
//! A connection is followed from the first read that starts with a request-line method; every
//! other read pays a 4-byte copy and a compare. Processes that are not targets pay the filter.
//! A full ring buffer drops the event (a failed reserve, counted in REQUEST_EVENTS_LOST) and
//! never blocks the target.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user, generated::bpf_probe_read_user as probe_read_user_raw,
    },
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use monitor_common::requests::{
    EventHeader, IoEvent, MAX_HTTP_CONNECTIONS, MAX_HTTP_PROCESSES, METHOD_PREFIXES, READ_COPY,
    RING_BYTES, TAG_FD, TAG_PREFIX, TAG_RESULT, WRITE_COPY, connection_key, io_nr, kind,
};

use crate::{
    maps::{RUNNING_SLICES, THREAD_STATS, target_slot},
    task::{task_ids, task_oncpu_ns},
};

#[map]
pub static REQUEST_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Events the ring buffer had no room for, per CPU (index 0).
#[map]
pub static REQUEST_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// connection_key(tgid, fd) -> 1 for connections that carried a request line.
#[map]
pub static HTTP_CONNECTIONS: LruHashMap<u64, u8> =
    LruHashMap::with_max_entries(MAX_HTTP_CONNECTIONS, 0);

/// tgid -> 1 for target processes that served HTTP (or tagged work): their wakeups are sent.
/// An LRU map: processes that are gone (recycled workers) age out instead of filling it.
#[map]
pub static HTTP_PROCESSES: LruHashMap<u32, u8> =
    LruHashMap::with_max_entries(MAX_HTTP_PROCESSES, 0);

/// The family's own sys_exit program, for when the syscalls family's is not attached (with it,
/// that program calls [`on_target_exit`] itself: one program per syscall instead of two).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn requests_sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = target_slot((pid_tgid >> 32) as u32) else {
        return Ok(());
    };
    let regs: *const pt_regs = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: probe reads of the syscall's saved registers.
    let nr = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).orig_rax)) }? as u32;
    on_target_exit(ctx, pid_tgid, slot, nr, ret, 0)
}

/// The three argument registers the family reads, adjacent in `struct pt_regs` (dx, si, di):
/// one probe read instead of up to three.
#[repr(C)]
#[derive(Clone, Copy)]
struct Args {
    /// The third argument (a tag's length).
    rdx: u64,
    /// The second (the buffer, iovec or msghdr).
    rsi: u64,
    /// The first (the fd).
    rdi: u64,
}

// pt_regs' layout puts si and di right after dx.
const _: () = assert!(
    core::mem::offset_of!(pt_regs, rsi) == core::mem::offset_of!(pt_regs, rdx) + 8
        && core::mem::offset_of!(pt_regs, rdi) == core::mem::offset_of!(pt_regs, rdx) + 16
);

/// The exit of syscall `nr` (which returned `ret`) by a thread of the target in `slot`: counts it
/// in the running slice and, for a connection's reads, writes and close or a tag, sends the event.
/// `now` is the exit's bpf_ktime_get_ns when the caller read it already, else 0.
#[inline(always)]
pub fn on_target_exit(
    ctx: &RawTracePointContext,
    pid_tgid: u64,
    slot: u32,
    nr: u32,
    ret: i64,
    now: u64,
) -> Result<(), i64> {
    let tgid = (pid_tgid >> 32) as u32;
    count_slice_syscall();
    let regs: *const pt_regs = ctx.arg(0);
    // Every arm defines both halves: an enum with payloads here once left the verifier an
    // uninitialised register to spill on the close path.
    let (io, buffer) = match nr {
        io_nr::READ | io_nr::RECVFROM => (Io::Read, Buffer::Plain),
        io_nr::READV => (Io::Read, Buffer::Iovec),
        io_nr::RECVMSG => (Io::Read, Buffer::Msghdr),
        io_nr::WRITE | io_nr::SENDTO => (Io::Write, Buffer::Plain),
        io_nr::WRITEV => (Io::Write, Buffer::Iovec),
        io_nr::SENDMSG => (Io::Write, Buffer::Msghdr),
        io_nr::SENDFILE => (Io::Write, Buffer::None),
        io_nr::CLOSE => (Io::Close, Buffer::None),
        _ => return Ok(()),
    };
    // SAFETY: probe read of the syscall's saved argument registers.
    let args: Args = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rdx).cast()) }?;
    let fd = args.rdi as u32;
    let now = if now != 0 {
        now
    } else {
        // SAFETY: plain helper call.
        unsafe { bpf_ktime_get_ns() }
    };
    if fd == TAG_FD && ret == TAG_RESULT && nr == io_nr::WRITE {
        return send_tag(pid_tgid, slot, now, args.rsi, args.rdx);
    }
    let key = connection_key(tgid, fd);
    // SAFETY: the value is only tested for presence.
    let followed = unsafe { HTTP_CONNECTIONS.get(key) }.is_some();
    match io {
        Io::Close => {
            if followed && ret == 0 {
                let _ = HTTP_CONNECTIONS.remove(key);
                send_header(pid_tgid, slot, now, kind::CLOSE, fd, 0)?;
            }
        }
        Io::Read if ret > 0 => {
            let (ptr, len) = buffer.first(args.rsi, ret as u64)?;
            if !followed {
                if len < 4 {
                    return Ok(());
                }
                let head: u32 = unsafe { bpf_probe_read_user(ptr as *const u32) }?;
                if !METHOD_PREFIXES.contains(&head) {
                    return Ok(());
                }
                let _ = HTTP_CONNECTIONS.insert(key, 1, 0);
                let _ = HTTP_PROCESSES.insert(tgid, 1, 0);
            }
            send_io(
                pid_tgid,
                slot,
                now,
                kind::READ,
                fd,
                ret,
                ptr,
                len,
                READ_COPY,
            )?;
        }
        Io::Write if ret > 0 && followed => {
            let (ptr, len) = match buffer {
                Buffer::None => (0, 0),
                _ => buffer.first(args.rsi, ret as u64)?,
            };
            send_io(
                pid_tgid,
                slot,
                now,
                kind::WRITE,
                fd,
                ret,
                ptr,
                len,
                WRITE_COPY,
            )?;
        }
        _ => {}
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Io {
    Read,
    Write,
    Close,
}

/// Where a syscall's bytes are, from its second argument.
#[derive(Clone, Copy)]
enum Buffer {
    /// The argument is the buffer (read, write, recvfrom, sendto).
    Plain,
    /// The argument is a `struct iovec *` (readv, writev): its first element.
    Iovec,
    /// The argument is a `struct msghdr *` (recvmsg, sendmsg): msg_iov's first element.
    Msghdr,
    /// No user buffer (sendfile).
    None,
}

/// `struct msghdr`: msg_name, msg_namelen (padded), then msg_iov.
const MSGHDR_IOV_OFFSET: u64 = 16;

impl Buffer {
    /// The user address and length of the first bytes moved, `moved` being the syscall's result.
    #[inline(always)]
    fn first(self, arg: u64, moved: u64) -> Result<(u64, u64), i64> {
        let iov = match self {
            Buffer::Plain => return Ok((arg, moved)),
            Buffer::None => return Ok((0, 0)),
            Buffer::Iovec => arg,
            // SAFETY: probe read of user memory; a bad pointer is an error.
            Buffer::Msghdr => {
                unsafe { bpf_probe_read_user((arg + MSGHDR_IOV_OFFSET) as *const u64) }?
            }
        };
        // SAFETY: as above; `struct iovec` is { void *iov_base; size_t iov_len; }.
        let base: u64 = unsafe { bpf_probe_read_user(iov as *const u64) }?;
        let len: u64 = unsafe { bpf_probe_read_user((iov + 8) as *const u64) }?;
        Ok((base, if len < moved { len } else { moved }))
    }
}

/// A tag: `write(-1, buf, n)` whose buffer starts with TAG_PREFIX. Its process's wakeups are
/// sent from now on, as an HTTP server's are.
#[inline(always)]
fn send_tag(pid_tgid: u64, slot: u32, now: u64, ptr: u64, len: u64) -> Result<(), i64> {
    if len < TAG_PREFIX.len() as u64 {
        return Ok(());
    }
    // SAFETY: probe read of the user buffer.
    let head: u64 = unsafe { bpf_probe_read_user(ptr as *const u64) }?;
    if head != u64::from_le_bytes(TAG_PREFIX) {
        return Ok(());
    }
    let _ = HTTP_PROCESSES.insert((pid_tgid >> 32) as u32, 1, 0);
    send_io(
        pid_tgid,
        slot,
        now,
        kind::TAG,
        TAG_FD,
        len as i64,
        ptr,
        len,
        READ_COPY,
    )
}

/// One more syscall of the running target thread, in its CPU's running slice. (A switch that
/// preempts this add between its load and store can lose one count; sched_switch resets the
/// slice it would have gone to.)
#[inline(always)]
fn count_slice_syscall() {
    if let Some(r) = RUNNING_SLICES.get_ptr_mut(0) {
        // SAFETY: per-CPU value.
        unsafe { (*r).syscalls += 1 };
    }
}

/// A thread's syscalls (wrapping) counted in its slices that ended, from THREAD_STATS: 0 when it
/// has no entry (not switched out since the programs attached, so none ended) or the entry is
/// another process's (a reused tid).
#[inline(always)]
fn switched_out_syscalls(tid: u32, tgid: u32) -> u32 {
    // Plain branches on copied fields (see sched.rs's final_switch_out).
    match THREAD_STATS.get_ptr(tid) {
        // SAFETY: fields copied out at once.
        Some(t) if unsafe { (*t).tgid } == tgid => unsafe { (*t).syscalls as u32 },
        _ => 0,
    }
}

/// The running thread's on-CPU ns and syscalls at `now`: its scheduler total at the switch-in
/// plus the slice since, and the syscalls of its ended slices plus this one's. (0, 0), which
/// user space reads as unknown, before the first switch this CPU's sched_switch saw.
#[inline(always)]
fn running_progress(tid: u32, tgid: u32, now: u64) -> (u64, u32) {
    let (since, at_start, in_slice, task) = match RUNNING_SLICES.get(0) {
        Some(r) => (r.since_ns, r.oncpu_at_start_ns, r.syscalls, r.task),
        None => (0, 0, 0, 0),
    };
    // Another thread's slice (see RunningSlice::task): seen on 6.18 as totals of host threads
    // (2.7 s, 51.8 s) in a target thread's events, a few times a minute under load.
    // SAFETY: plain helper call.
    if since == 0 || now < since || task != unsafe { bpf_get_current_task() } {
        return (0, 0);
    }
    // A thread in its very first nanosecond would say 0, the wire's "unknown": 1 ns off instead.
    let oncpu = (at_start + (now - since)).max(1);
    (
        oncpu,
        switched_out_syscalls(tid, tgid).wrapping_add(in_slice),
    )
}

#[inline(always)]
fn count_lost() {
    if let Some(n) = REQUEST_EVENTS_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU value.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn header(pid_tgid: u64, slot: u32, ts_ns: u64, kind: u8, peer: u32, ret: i64) -> EventHeader {
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let (oncpu_ns, syscalls) = running_progress(tid, tgid, ts_ns);
    EventHeader {
        ts_ns,
        oncpu_ns,
        ret,
        peer_oncpu_ns: 0,
        tgid,
        tid,
        peer,
        syscalls,
        peer_syscalls: 0,
        copied: 0,
        kind,
        slot: slot as u8,
    }
}

#[inline(always)]
fn send_header(
    pid_tgid: u64,
    slot: u32,
    now: u64,
    kind: u8,
    peer: u32,
    ret: i64,
) -> Result<(), i64> {
    let event = header(pid_tgid, slot, now, kind, peer, ret);
    if REQUEST_EVENTS.output::<EventHeader>(&event, 0).is_err() {
        count_lost();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn send_io(
    pid_tgid: u64,
    slot: u32,
    now: u64,
    kind: u8,
    fd: u32,
    ret: i64,
    ptr: u64,
    len: u64,
    limit: usize,
) -> Result<(), i64> {
    let Some(mut entry) = REQUEST_EVENTS.reserve::<IoEvent>(0) else {
        count_lost();
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved record of IoEvent's size; `n` bytes fit in data.
    unsafe {
        // The header first: its helper calls clobber the argument registers, and a size
        // bounded before them is spilled and refilled, which the verifiers of 5.10 and 6.1
        // track as unbounded. The volatile read keeps the compiler from bounding it earlier:
        // bounded after it, the size goes straight into the call.
        let mut h = header(pid_tgid, slot, now, kind, fd, ret);
        let len = core::ptr::read_volatile(&len);
        let mut n = if len < limit as u64 {
            len
        } else {
            limit as u64
        };
        // A mask the verifier can follow: n is at most READ_COPY.
        n &= (READ_COPY as u64 * 2) - 1;
        if n > READ_COPY as u64 {
            n = READ_COPY as u64;
        }
        if ptr != 0 && n > 0 {
            let copied = probe_read_user_raw(
                core::ptr::addr_of_mut!((*event).data).cast(),
                n as u32,
                ptr as *const core::ffi::c_void,
            );
            if copied == 0 {
                h.copied = n as u16;
            }
        }
        core::ptr::addr_of_mut!((*event).header).write(h);
    }
    entry.submit(0);
    Ok(())
}

/// A target thread of an HTTP-serving process waking a thread of the same process.
#[raw_tracepoint(tracepoint = "sched_waking")]
pub fn requests_waking(ctx: RawTracePointContext) -> i32 {
    let _ = try_wake(&ctx);
    0
}

/// The same for a thread just created (its first wakeup is sched_wakeup_new).
#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn requests_wakeup_new(ctx: RawTracePointContext) -> i32 {
    let _ = try_wake(&ctx);
    0
}

#[inline(always)]
fn try_wake(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(slot) = target_slot(tgid) else {
        return Ok(());
    };
    // SAFETY: presence test only.
    if unsafe { HTTP_PROCESSES.get(tgid) }.is_none() {
        return Ok(());
    }
    let wakee: *const u8 = ctx.arg(0);
    let (wakee_tid, wakee_tgid) = task_ids(wakee)?;
    if wakee_tgid != tgid || wakee_tid == pid_tgid as u32 {
        return Ok(());
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut event = header(pid_tgid, slot, now, kind::WAKE, wakee_tid, 0);
    // The wakee is not running (or is about to stop): the scheduler's total is its CPU so far,
    // exact since its last switch-out. A thread just created has run 0 ns: sent as 1, since 0
    // is the wire's "unknown", so the request it is handed gets all its CPU.
    event.peer_oncpu_ns = task_oncpu_ns(wakee)?.max(1);
    event.peer_syscalls = switched_out_syscalls(wakee_tid, tgid);
    if REQUEST_EVENTS.output::<EventHeader>(&event, 0).is_err() {
        count_lost();
    }
    Ok(())
}
