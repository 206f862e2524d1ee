//! Names for syscall numbers and errno values, resolved in user space (never in the kernel).
use std::borrow::Cow;

pub fn syscall_name(nr: u32) -> Cow<'static, str> {
    match syscalls::Sysno::new(nr as usize) {
        Some(s) => Cow::Borrowed(s.name()),
        None => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// "ENOENT" for 2; errno 0 is where the kernel side puts values it does not index.
pub fn errno_name(errno: u32) -> String {
    if errno == 0 {
        return "other".into();
    }
    let e = nix::errno::Errno::from_raw(errno as i32);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{errno}")
    } else {
        format!("{e:?}")
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::fd::{FdEffect, fd_effect, nr};
    use syscalls::Sysno;

    use super::*;

    #[test]
    fn names() {
        assert_eq!(syscall_name(110), "getppid");
        assert_eq!(syscall_name(511), "syscall_511");
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(0), "other");
    }

    /// The kernel side's hand-kept numbers must be the real ones.
    #[test]
    fn fd_syscall_numbers_match_the_syscall_table() {
        let cases = [
            (nr::OPEN, Sysno::open),
            (nr::CLOSE, Sysno::close),
            (nr::PIPE, Sysno::pipe),
            (nr::DUP, Sysno::dup),
            (nr::DUP2, Sysno::dup2),
            (nr::SOCKET, Sysno::socket),
            (nr::ACCEPT, Sysno::accept),
            (nr::SOCKETPAIR, Sysno::socketpair),
            (nr::FCNTL, Sysno::fcntl),
            (nr::CREAT, Sysno::creat),
            (nr::EPOLL_CREATE, Sysno::epoll_create),
            (nr::MQ_OPEN, Sysno::mq_open),
            (nr::INOTIFY_INIT, Sysno::inotify_init),
            (nr::OPENAT, Sysno::openat),
            (nr::SIGNALFD, Sysno::signalfd),
            (nr::TIMERFD_CREATE, Sysno::timerfd_create),
            (nr::EVENTFD, Sysno::eventfd),
            (nr::ACCEPT4, Sysno::accept4),
            (nr::SIGNALFD4, Sysno::signalfd4),
            (nr::EVENTFD2, Sysno::eventfd2),
            (nr::EPOLL_CREATE1, Sysno::epoll_create1),
            (nr::DUP3, Sysno::dup3),
            (nr::PIPE2, Sysno::pipe2),
            (nr::INOTIFY_INIT1, Sysno::inotify_init1),
            (nr::PERF_EVENT_OPEN, Sysno::perf_event_open),
            (nr::FANOTIFY_INIT, Sysno::fanotify_init),
            (nr::OPEN_BY_HANDLE_AT, Sysno::open_by_handle_at),
            (nr::MEMFD_CREATE, Sysno::memfd_create),
            (nr::USERFAULTFD, Sysno::userfaultfd),
            (nr::IO_URING_SETUP, Sysno::io_uring_setup),
            (nr::OPEN_TREE, Sysno::open_tree),
            (nr::FSOPEN, Sysno::fsopen),
            (nr::FSMOUNT, Sysno::fsmount),
            (nr::FSPICK, Sysno::fspick),
            (nr::PIDFD_OPEN, Sysno::pidfd_open),
            (nr::CLOSE_RANGE, Sysno::close_range),
            (nr::OPENAT2, Sysno::openat2),
            (nr::PIDFD_GETFD, Sysno::pidfd_getfd),
            (nr::LANDLOCK_CREATE_RULESET, Sysno::landlock_create_ruleset),
            (nr::MEMFD_SECRET, Sysno::memfd_secret),
        ];
        for (ours, real) in cases {
            assert_eq!(ours as usize, real.id() as usize, "{}", real.name());
            assert_ne!(
                fd_effect(ours),
                FdEffect::None,
                "{} has no fd effect",
                real.name()
            );
        }
        assert_eq!(fd_effect(Sysno::read.id() as u32), FdEffect::None);
        // Counted at entry by the kernel side because they never return.
        assert_eq!(nr::EXIT as usize, Sysno::exit.id() as usize);
        assert_eq!(nr::EXIT_GROUP as usize, Sysno::exit_group.id() as usize);
    }
}
