//! Offsets of the `task_struct` fields the kernel programs read, from the running kernel's BTF.
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
}

impl TaskOffsets {
    pub fn from_btf_file(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let task = find_struct(&btf, "task_struct")?;
        let entity = find_struct(&btf, "sched_entity")?;
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
        let offsets = TaskOffsets::from_btf_file(path).unwrap();
        assert!(offsets.pid > 0 && offsets.min_flt > 0 && offsets.maj_flt > offsets.min_flt);
    }
}
