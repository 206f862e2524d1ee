//! What the loader needs to know of the running kernel, from its BTF: the offsets of the
//! `task_struct` fields the kernel programs read, and the arguments each tracepoint passes (the
//! `btf_trace_<name>` typedef of every tracepoint is the prototype its raw tracepoint programs
//! receive: a `void *` followed by TP_PROTO's arguments).
use std::path::Path;

use btf_rs::{Btf, Type};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF from {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error("kernel BTF: no field {0} where monitor expects it (task_struct, sched_entity)")]
    NoField(&'static str),
    #[error("kernel BTF: task_struct.tgid (at {tgid}) does not follow task_struct.pid (at {pid})")]
    Layout { pid: u32, tgid: u32 },
    #[error("kernel BTF has no prototype of tracepoint {0} (typedef btf_trace_{0})")]
    NoTracepoint(&'static str),
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Byte offsets in `struct task_struct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub min_flt: u32,
    pub maj_flt: u32,
    /// `se.sum_exec_runtime`.
    pub sum_exec_runtime: u32,
    /// `__state` (5.14 and later) or `state`.
    pub state: u32,
    pub group_leader: u32,
}

/// Everything the loader reads from the kernel's BTF, parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBtf {
    pub offsets: TaskOffsets,
    pub tracepoints: TracepointArgs,
}

/// How many arguments the tracepoints whose prototype changed across kernels pass here (None when
/// the BTF has no prototype for it: the loader then takes the variant that reads the fewest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointArgs {
    /// 4 since 5.18 (prev_state added), 3 before.
    pub sched_switch: Option<usize>,
    /// 2 since 6.16 (group_dead added), 1 before.
    pub sched_process_exit: Option<usize>,
}

impl KernelBtf {
    pub fn from_btf_file(path: &Path) -> Result<Self, BtfError> {
        let btf = read(path)?;
        Ok(Self {
            offsets: TaskOffsets::from_btf(&btf)?,
            tracepoints: TracepointArgs {
                sched_switch: tracepoint_args(&btf, "sched_switch").ok(),
                sched_process_exit: tracepoint_args(&btf, "sched_process_exit").ok(),
            },
        })
    }
}

fn read(path: &Path) -> Result<Btf, BtfError> {
    Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The number of TP_PROTO arguments of tracepoint `name`, from `typedef void (*btf_trace_<name>)
/// (void *__data, TP_PROTO...)`.
pub fn tracepoint_args(btf: &Btf, name: &'static str) -> Result<usize, BtfError> {
    let missing = || BtfError::NoTracepoint(name);
    let typedef = btf
        .resolve_types_by_name(&format!("btf_trace_{name}"))
        .map_err(|_| missing())?
        .into_iter()
        .find_map(|t| match t {
            Type::Typedef(t) => Some(t),
            _ => None,
        })
        .ok_or_else(missing)?;
    let Ok(Type::Ptr(ptr)) = btf.resolve_chained_type(&typedef) else {
        return Err(missing());
    };
    let Ok(Type::FuncProto(proto)) = btf.resolve_chained_type(&ptr) else {
        return Err(missing());
    };
    // The first parameter is the tracepoint's private data, not an argument.
    proto.parameters.len().checked_sub(1).ok_or_else(missing)
}

impl TaskOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        let task = find_struct(btf, "task_struct")?;
        let entity = find_struct(btf, "sched_entity")?;
        let offset = |s: &btf_rs::Struct, field: &'static str| {
            s.members
                .iter()
                .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == field))
                .map(|m| m.bit_offset() / 8)
                .ok_or(BtfError::NoField(field))
        };
        let offsets = Self {
            pid: offset(&task, "pid")?,
            tgid: offset(&task, "tgid")?,
            min_flt: offset(&task, "min_flt")?,
            maj_flt: offset(&task, "maj_flt")?,
            sum_exec_runtime: offset(&task, "se")? + offset(&entity, "sum_exec_runtime")?,
            // Renamed in 5.14 (2f064a59a11f) so that old readers of the field fail to build.
            state: offset(&task, "__state").or_else(|_| offset(&task, "state"))?,
            group_leader: offset(&task, "group_leader")?,
        };
        // The kernel programs read both ids with one 8-byte load.
        if offsets.tgid != offsets.pid + 4 {
            return Err(BtfError::Layout {
                pid: offsets.pid,
                tgid: offsets.tgid,
            });
        }
        Ok(offsets)
    }
}

fn find_struct(btf: &Btf, name: &'static str) -> Result<btf_rs::Struct, BtfError> {
    btf.resolve_types_by_name(name)
        .map_err(|_| BtfError::NoStruct(name))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or(BtfError::NoStruct(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_adjacent_pid_and_tgid() {
        let path = Path::new(VMLINUX_BTF);
        assert!(
            path.exists(),
            "{VMLINUX_BTF} is missing: this test needs a kernel with BTF"
        );
        let offsets = KernelBtf::from_btf_file(path).unwrap().offsets;
        assert!(offsets.pid > 0 && offsets.min_flt > 0 && offsets.maj_flt > offsets.min_flt);
    }

    /// The prototypes as the running kernel's release says they should be: both arguments were
    /// added at known versions (5.18, 6.16), so the BTF reading is checked against uname.
    #[test]
    fn tracepoint_arguments_match_the_running_kernels_version() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        let at_least = |a: u32, b: u32| (major, minor) >= (a, b);
        let tp = KernelBtf::from_btf_file(Path::new(VMLINUX_BTF))
            .unwrap()
            .tracepoints;
        assert_eq!(tp.sched_switch, Some(if at_least(5, 18) { 4 } else { 3 }));
        assert_eq!(
            tp.sched_process_exit,
            Some(if at_least(6, 16) { 2 } else { 1 })
        );
    }
}
