//! The kernel's request events, decoded from ring-buffer records (monitor-common's layout).
use monitor_common::requests::{EventHeader, HEADER_BYTES, kind};

use super::thread_cpu::Progress;

/// One event, borrowing the record's copied bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A read of `len` bytes on `fd`, the first of them in `data`.
    Read {
        io: Io,
        data: &'a [u8],
    },
    /// A write of `len` bytes on `fd`.
    Write {
        io: Io,
        data: &'a [u8],
    },
    Close {
        io: Io,
    },
    /// An explicit tag written by thread `io.tid`: `data` is the marker, `monitor:` first.
    Tag {
        io: Io,
        data: &'a [u8],
    },
    /// Thread `tid` woke thread `wakee` of its process, whose totals were `wakee_progress`.
    Wake {
        tgid: u32,
        tid: u32,
        wakee: u32,
        ts_ns: u64,
        progress: Option<Progress>,
        wakee_progress: Option<Progress>,
    },
}

/// What every read, write and close says: who, which fd, when, and the thread's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    pub tgid: u32,
    pub tid: u32,
    pub slot: u8,
    pub fd: u32,
    pub ts_ns: u64,
    /// The thread's CPU and syscalls so far (None: the kernel did not know).
    pub progress: Option<Progress>,
    /// Bytes moved by the syscall.
    pub len: u64,
}

impl<'a> Event<'a> {
    /// Decodes a record; None for one that is too short or of an unknown kind (a kernel object
    /// newer than this daemon), which the reader counts and skips.
    pub fn decode(record: &'a [u8]) -> Option<Self> {
        let h = EventHeader::from_bytes(record)?;
        let io = Io {
            tgid: h.tgid,
            tid: h.tid,
            slot: h.slot,
            fd: h.peer,
            ts_ns: h.ts_ns,
            progress: Progress::known(h.oncpu_ns, h.syscalls),
            len: h.ret.max(0) as u64,
        };
        let data = || {
            let end = (HEADER_BYTES + usize::from(h.copied)).min(record.len());
            &record[HEADER_BYTES..end]
        };
        Some(match h.kind {
            kind::READ => Event::Read { io, data: data() },
            kind::WRITE => Event::Write { io, data: data() },
            kind::CLOSE => Event::Close { io },
            kind::TAG => Event::Tag { io, data: data() },
            kind::WAKE => Event::Wake {
                tgid: h.tgid,
                tid: h.tid,
                wakee: h.peer,
                ts_ns: h.ts_ns,
                progress: io.progress,
                wakee_progress: Progress::known(h.peer_oncpu_ns, h.peer_syscalls),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
pub(crate) fn record(h: EventHeader, data: &[u8]) -> Vec<u8> {
    // SAFETY: EventHeader is repr(C) plain data without padding.
    let bytes = unsafe {
        std::slice::from_raw_parts((&h as *const EventHeader).cast::<u8>(), HEADER_BYTES)
    };
    let mut v = bytes.to_vec();
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_carries_only_its_copied_bytes() {
        let h = EventHeader {
            ts_ns: 10,
            oncpu_ns: 5,
            ret: 100,
            peer_oncpu_ns: 0,
            tgid: 7,
            tid: 8,
            peer: 9,
            syscalls: 3,
            peer_syscalls: 0,
            copied: 4,
            kind: kind::READ,
            slot: 0,
        };
        let r = record(h, b"GET /junk");
        match Event::decode(&r).unwrap() {
            Event::Read { io, data } => {
                assert_eq!(data, b"GET ");
                assert_eq!((io.fd, io.len), (9, 100));
                assert_eq!(io.progress, Progress::known(5, 3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Event::decode(&r[..10]), None);
        let mut wake = h;
        (
            wake.kind,
            wake.oncpu_ns,
            wake.peer_oncpu_ns,
            wake.peer_syscalls,
        ) = (kind::WAKE, 0, 70, 2);
        match Event::decode(&record(wake, b"")).unwrap() {
            Event::Wake {
                wakee,
                progress,
                wakee_progress,
                ..
            } => {
                assert_eq!((wakee, progress), (9, None));
                assert_eq!(wakee_progress, Progress::known(70, 2));
            }
            other => panic!("{other:?}"),
        }
        let mut unknown = h;
        unknown.kind = 99;
        assert_eq!(Event::decode(&record(unknown, b"")), None);
    }
}
