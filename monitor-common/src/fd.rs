//! Which syscalls create or close file descriptors (x86_64 numbering).
//!
//! The kernel side calls [`fd_effect`] on every target syscall exit, so it is a plain `match` on
//! the number (no tables, no strings). The user side checks these numbers against the `syscalls`
//! crate in its tests.

/// What a successful syscall does to the descriptor table.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FdEffect {
    None = 0,
    /// Returns one new descriptor.
    OpensOne = 1,
    /// Fills an array with two new descriptors and returns 0 (pipe, pipe2, socketpair).
    OpensTwo = 2,
    /// Like `OpensOne`, and its failures are counted as failed opens by errno.
    OpensPath = 3,
    /// close(): one descriptor fewer.
    Closes = 4,
    /// close_range(): any number fewer.
    ClosesRange = 5,
    /// fcntl(): a new descriptor only for F_DUPFD and F_DUPFD_CLOEXEC.
    Fcntl = 6,
}

pub mod nr {
    pub const OPEN: u32 = 2;
    pub const CLOSE: u32 = 3;
    pub const PIPE: u32 = 22;
    pub const DUP: u32 = 32;
    pub const DUP2: u32 = 33;
    pub const SOCKET: u32 = 41;
    pub const ACCEPT: u32 = 43;
    pub const SOCKETPAIR: u32 = 53;
    pub const EXIT: u32 = 60;
    pub const FCNTL: u32 = 72;
    pub const CREAT: u32 = 85;
    pub const EPOLL_CREATE: u32 = 213;
    pub const EXIT_GROUP: u32 = 231;
    pub const MQ_OPEN: u32 = 240;
    pub const INOTIFY_INIT: u32 = 253;
    pub const OPENAT: u32 = 257;
    pub const SIGNALFD: u32 = 282;
    pub const TIMERFD_CREATE: u32 = 283;
    pub const EVENTFD: u32 = 284;
    pub const ACCEPT4: u32 = 288;
    pub const SIGNALFD4: u32 = 289;
    pub const EVENTFD2: u32 = 290;
    pub const EPOLL_CREATE1: u32 = 291;
    pub const DUP3: u32 = 292;
    pub const PIPE2: u32 = 293;
    pub const INOTIFY_INIT1: u32 = 294;
    pub const PERF_EVENT_OPEN: u32 = 298;
    pub const FANOTIFY_INIT: u32 = 300;
    pub const OPEN_BY_HANDLE_AT: u32 = 304;
    pub const MEMFD_CREATE: u32 = 319;
    pub const USERFAULTFD: u32 = 323;
    pub const IO_URING_SETUP: u32 = 425;
    pub const OPEN_TREE: u32 = 428;
    pub const FSOPEN: u32 = 430;
    pub const FSMOUNT: u32 = 432;
    pub const FSPICK: u32 = 433;
    pub const PIDFD_OPEN: u32 = 434;
    pub const CLOSE_RANGE: u32 = 436;
    pub const OPENAT2: u32 = 437;
    pub const PIDFD_GETFD: u32 = 438;
    pub const LANDLOCK_CREATE_RULESET: u32 = 444;
    pub const MEMFD_SECRET: u32 = 447;
}

/// fcntl commands that return a new descriptor.
pub const F_DUPFD: u64 = 0;
pub const F_DUPFD_CLOEXEC: u64 = 1030;

#[inline(always)]
pub const fn fd_effect(syscall_nr: u32) -> FdEffect {
    use nr::*;
    match syscall_nr {
        OPEN | OPENAT | OPENAT2 | CREAT | OPEN_BY_HANDLE_AT => FdEffect::OpensPath,
        PIPE | PIPE2 | SOCKETPAIR => FdEffect::OpensTwo,
        DUP
        | DUP2
        | DUP3
        | SOCKET
        | ACCEPT
        | ACCEPT4
        | EPOLL_CREATE
        | EPOLL_CREATE1
        | EVENTFD
        | EVENTFD2
        | SIGNALFD
        | SIGNALFD4
        | TIMERFD_CREATE
        | MEMFD_CREATE
        | MEMFD_SECRET
        | INOTIFY_INIT
        | INOTIFY_INIT1
        | PERF_EVENT_OPEN
        | FANOTIFY_INIT
        | USERFAULTFD
        | IO_URING_SETUP
        | OPEN_TREE
        | FSOPEN
        | FSMOUNT
        | FSPICK
        | PIDFD_OPEN
        | PIDFD_GETFD
        | MQ_OPEN
        | LANDLOCK_CREATE_RULESET => FdEffect::OpensOne,
        CLOSE => FdEffect::Closes,
        CLOSE_RANGE => FdEffect::ClosesRange,
        FCNTL => FdEffect::Fcntl,
        _ => FdEffect::None,
    }
}
