//! Events of the requests family: what the kernel tells user space about a target's HTTP
//! connections and the hand-overs between its threads, through one ring buffer. Every event says
//! how much CPU its thread (and a wakeup's wakee) has had so far, so CPU between two events of
//! a thread is a difference, with no event per context switch.
//!
//! Every event starts with the same header; reads and writes carry the first bytes moved, so
//! user space can find request lines and status lines (all parsing happens there). The kernel
//! only checks that a read starts like a request line before it starts following a connection.

/// Bytes of a read copied into its event: the request line (and of small pipelined requests,
/// the following ones) fits, the body does not.
pub const READ_COPY: usize = 256;
/// Bytes of a write copied into its event: a status line's `HTTP/1.1 200 ` is 13.
pub const WRITE_COPY: usize = 16;
/// Ring buffer size in bytes (a power of two, a multiple of the page size). An I/O event takes
/// about 320 bytes: the ring holds 6,500 of them, 0.65 s at 5,000 requests a second and two
/// events each, and 22 ms of a closed-loop load on loopback (300,000 events a second), for which
/// the reader drains every millisecond or so but may wait its turn for a CPU. Not more: the
/// daemon maps the ring (its data twice) and every page counts in its RSS, used or not.
pub const RING_BYTES: u32 = 2 << 20;
/// Connections followed at once (an LRU map: one that is never closed ages out).
pub const MAX_HTTP_CONNECTIONS: u32 = 65536;
/// Processes that served HTTP at least once: only their threads' wakeups are sent.
pub const MAX_HTTP_PROCESSES: u32 = 4096;

/// `EventHeader::kind`.
pub mod kind {
    /// A read on a followed connection (or one that starts with a request-line method).
    pub const READ: u8 = 1;
    /// A write on a followed connection.
    pub const WRITE: u8 = 2;
    /// A followed connection was closed.
    pub const CLOSE: u8 = 3;
    // 4 was SLICE (an event per switch-out), replaced by the CPU every event carries.
    /// A target thread woke another thread of its process (`peer` is the wakee's tid).
    pub const WAKE: u8 = 5;
    /// An explicit tag: a `write(-1, "monitor:...", n)` by a target thread (it fails with
    /// EBADF and costs one syscall); `data` holds the marker, `ret` its length.
    pub const TAG: u8 = 6;
}

/// What an explicit tag's bytes start with (the kernel compares these 8 bytes, as a u64).
pub const TAG_PREFIX: [u8; 8] = *b"monitor:";
/// The fd a tag is written to: none (-1), so the write fails before it touches anything.
pub const TAG_FD: u32 = u32::MAX;
/// -EBADF, the result of a tag's write.
pub const TAG_RESULT: i64 = -9;

/// The start of every event.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// bpf_ktime_get_ns() when the syscall returned or the wakeup happened.
    pub ts_ns: u64,
    /// The thread's on-CPU time since it started, at `ts_ns` (the scheduler's sum_exec_runtime
    /// at its last switch-out plus the running slice so far); 0 when unknown (the thread has not
    /// switched out since the programs attached).
    pub oncpu_ns: u64,
    /// The syscall's result (bytes moved); 0 for the other kinds.
    pub ret: i64,
    /// For WAKE, the wakee's on-CPU time (it is not running: its sum_exec_runtime at its last
    /// switch-out); 0 when unknown and for the other kinds.
    pub peer_oncpu_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// The fd of READ, WRITE and CLOSE; the wakee's tid for WAKE.
    pub peer: u32,
    /// Syscalls the thread made since the family attached, this one included (wrapping); valid
    /// when `oncpu_ns` is.
    pub syscalls: u32,
    /// For WAKE, the wakee's syscalls the same way; valid when `peer_oncpu_ns` is.
    pub peer_syscalls: u32,
    /// Bytes of `data` that are valid (READ, WRITE and TAG events).
    pub copied: u16,
    /// `kind::*`.
    pub kind: u8,
    /// The target slot of the process.
    pub slot: u8,
}

/// A READ, WRITE or TAG event: the header and the first bytes moved.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IoEvent {
    pub header: EventHeader,
    pub data: [u8; READ_COPY],
}

pub const HEADER_BYTES: usize = core::mem::size_of::<EventHeader>();

const _: () = assert!(HEADER_BYTES == 56);
const _: () = assert!(core::mem::size_of::<IoEvent>() == 56 + READ_COPY);

/// The methods a followed connection's first read may start with, as the first four bytes
/// (little-endian u32): the kernel's only string work.
pub const METHOD_PREFIXES: [u32; 9] = [
    u32::from_le_bytes(*b"GET "),
    u32::from_le_bytes(*b"POST"),
    u32::from_le_bytes(*b"PUT "),
    u32::from_le_bytes(*b"HEAD"),
    u32::from_le_bytes(*b"DELE"),
    u32::from_le_bytes(*b"PATC"),
    u32::from_le_bytes(*b"OPTI"),
    u32::from_le_bytes(*b"CONN"),
    u32::from_le_bytes(*b"TRAC"),
];

/// The key of a connection: its process and fd.
#[inline(always)]
pub fn connection_key(tgid: u32, fd: u32) -> u64 {
    (u64::from(tgid) << 32) | u64::from(fd)
}

impl EventHeader {
    /// Reads a header from the start of a ring buffer record (None when it is too short).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        // SAFETY: the length is checked; the type is valid for any bits; unaligned read.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// x86-64 numbers of the syscalls that move a connection's bytes or close it.
pub mod io_nr {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const CLOSE: u32 = 3;
    pub const READV: u32 = 19;
    pub const WRITEV: u32 = 20;
    pub const SENDFILE: u32 = 40;
    pub const SENDTO: u32 = 44;
    pub const RECVFROM: u32 = 45;
    pub const SENDMSG: u32 = 46;
    pub const RECVMSG: u32 = 47;
}

/// The slice running on a CPU (whoever runs: sched_switch writes it at every switch while the
/// requests family is attached). A request event of the running thread says its CPU so far is
/// `oncpu_at_start_ns + (now - since_ns)`: the scheduler's total of the thread when it was
/// switched in, exact then (update_curr ran at its last switch-out), plus the slice. Its
/// syscalls so far are its THREAD_STATS entry's (slices that ended) plus `syscalls`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningSlice {
    /// bpf_ktime_get_ns() at the switch-in; 0 before the first switch seen on this CPU.
    pub since_ns: u64,
    /// The incoming thread's se.sum_exec_runtime at the switch-in (0 for a thread that has
    /// never run).
    pub oncpu_at_start_ns: u64,
    /// The incoming thread's task_struct address: a reader whose current task is not this one
    /// is reading another thread's slice (it was preempted and moved to another CPU inside its
    /// program, which kernels with faultable syscall tracepoints allow) and must not use it.
    pub task: u64,
    /// Syscalls a target thread made in this slice (counted at their exit).
    pub syscalls: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<RunningSlice>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no padding, valid for any bits.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::RunningSlice {}
}
