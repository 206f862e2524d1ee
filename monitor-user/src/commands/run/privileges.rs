//! Dropping the capabilities the daemon no longer needs once its programs are attached.
//!
//! Map reads and writes go through file descriptors we already hold and need no capability on
//! kernels since 6.5 (1d28635abcf1 moved the unprivileged-BPF check from every bpf() command to
//! map and program creation); before that, with `kernel.unprivileged_bpf_disabled` set (the
//! default), every map access needs CAP_BPF, so the daemon keeps it there: whether it is needed
//! is tried on the running kernel (a stable kernel may carry the change), not read off its version.
//! Reading other users' /proc/PID/{fd,task} needs CAP_SYS_PTRACE (PTRACE_MODE_READ) and
//! CAP_DAC_READ_SEARCH. Everything else (CAP_SYS_ADMIN, CAP_PERFMON, ...) goes.
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

/// Drops every capability but [`KEPT`] (and CAP_BPF when `keep_bpf`) from this thread, which
/// threads started later inherit.
pub fn drop_unneeded(keep_bpf: bool) -> Result<CapsHashSet, caps::errors::CapsError> {
    let mut keep: CapsHashSet = KEPT.iter().copied().collect();
    if keep_bpf {
        keep.insert(Capability::CAP_BPF);
    }
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    // Children (none today) must not regain anything through the ambient set.
    caps::clear(None, CapSet::Ambient)?;
    Ok(keep)
}
