//! Collect: everything read from the kernel and /proc, turned into one raw [`sample::Sample`]
//! per cadence tick.
//!
//! Owns the kernel side's loader and maps (`ebpf/`), the /proc readers, the effective limits
//! (cgroups, cpusets), syscall and errno names, and the collector that joins them for one target.
//! Takes in the running system only; hands `Sample`s to the model. Imports nothing downstream.
pub mod cgroup;
pub mod collector;
pub mod cpu_list;
pub mod ebpf;
#[cfg(test)]
mod fixture;
pub mod limits;
pub mod listening;
pub mod procfs;
pub mod sample;
pub mod syscall_names;
