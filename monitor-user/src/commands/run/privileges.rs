//! Dropping the capabilities the daemon no longer needs once its programs are attached.
//!
//! Map reads and writes go through file descriptors we already hold and need no capability on
//! kernels since 6.5 (1d28635abcf1 moved the unprivileged-BPF check from every bpf() command to
//! map and program creation); before that, with `kernel.unprivileged_bpf_disabled` set (the
//! default), every map access needs CAP_BPF, so the daemon keeps it there: whether it is needed
//! is tried on the running kernel (a stable kernel may carry the change), not read off its version.
//! Listing another user's /proc/PID/fd needs CAP_DAC_READ_SEARCH (the fd count); reading its fd
//! links and /proc/PID/root needs CAP_SYS_PTRACE (PTRACE_MODE_READ: the target's listening port
//! for the OpenAPI fetch, its cgroups through its root). Both were shown needed by running the
//! daemon without each (tests/tests/package.rs, kubernetes.rs). Everything else (CAP_SYS_ADMIN,
//! CAP_PERFMON, ...) goes.
//!
//! Capabilities are per thread, and a thread keeps what it had when it was started: the drop
//! must happen while the process has one thread (before the runtime, the notifiers and the
//! sampler start), and it also empties the bounding set of what is not kept (when it holds
//! CAP_SETPCAP, as root does) and sets no_new_privs, so nothing the daemon runs later (an exec, a
//! setuid binary) can get them back.
use caps::{CapSet, Capability, CapsHashSet};

use crate::collect::ebpf::maps::KernelMaps;

pub const KEPT: &[Capability] = &[Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

/// Whether a map access through a descriptor we hold fails without CAP_BPF and CAP_SYS_ADMIN:
/// they leave the effective set for one lookup and come back from the permitted set.
pub fn map_access_needs_cap_bpf(maps: &KernelMaps) -> bool {
    let Ok(effective) = caps::read(None, CapSet::Effective) else {
        return false;
    };
    let mut without = effective.clone();
    without.remove(&Capability::CAP_BPF);
    without.remove(&Capability::CAP_SYS_ADMIN);
    if caps::set(None, CapSet::Effective, &without).is_err() {
        return false;
    }
    let refused = maps.counters(0).is_err();
    let _ = caps::set(None, CapSet::Effective, &effective);
    refused
}

#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error(
        "the process already runs {0} threads; capabilities are per thread, so the others would keep theirs"
    )]
    NotSingleThreaded(usize),
    #[error("reading the thread list in /proc/self/task: {0}")]
    Threads(#[source] std::io::Error),
    #[error("changing capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
}

/// Drops every capability but [`KEPT`] (and CAP_BPF when `keep_bpf`) for good: from the
/// effective, permitted, inheritable and ambient sets, and from the bounding set when CAP_SETPCAP
/// allows, then sets no_new_privs. Refuses when the process runs more than one thread, whose
/// capabilities this could not reach.
pub fn drop_unneeded(keep_bpf: bool) -> Result<CapsHashSet, DropError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(DropError::Threads)?
        .count();
    if threads != 1 {
        return Err(DropError::NotSingleThreaded(threads));
    }
    let mut keep: CapsHashSet = KEPT.iter().copied().collect();
    if keep_bpf {
        keep.insert(Capability::CAP_BPF);
    }
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next. A daemon
    // started without it (the systemd unit grants only what loading and /proc need, as ambient
    // capabilities of a non-root user) keeps the bounding set its service manager gave it; the
    // permitted set and no_new_privs below are what keep an exec from regaining anything.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for cap in caps::read(None, CapSet::Bounding)? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    // Children must not regain anything through the ambient or inheritable sets.
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(DropError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(keep)
}
