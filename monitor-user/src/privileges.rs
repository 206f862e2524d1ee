//! Dropping the capabilities the daemon no longer needs once its programs are attached.
//!
//! Map reads and writes go through file descriptors we already hold and need no capability;
//! reading other users' /proc/PID/{fd,task} needs CAP_SYS_PTRACE (PTRACE_MODE_READ) and
//! CAP_DAC_READ_SEARCH. Everything else (CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON, ...) goes.
use caps::{CapSet, Capability, CapsHashSet};

pub const KEPT: &[Capability] = &[Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

pub fn drop_unneeded() -> Result<CapsHashSet, caps::errors::CapsError> {
    let keep: CapsHashSet = KEPT.iter().copied().collect();
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    // Children (none today) must not regain anything through the ambient set.
    caps::clear(None, CapSet::Ambient)?;
    Ok(keep)
}
