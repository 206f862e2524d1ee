//! Typed access to the kernel maps: the target set in, counters out.
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
};
use monitor_common::{
    MAX_ERRNO, MAX_SYSCALLS, SyscallStat, TargetCounters, map_full, maps as names,
};
use std::collections::BTreeSet;

use super::target_index::TargetIndex;

pub struct KernelMaps {
    targets: HashMap<MapData, u32, u32>,
    /// What the programs filter on; kept equal to `targets`.
    index: TargetIndex,
    counters: PerCpuArray<MapData, TargetCounters>,
    syscalls: PerCpuArray<MapData, SyscallStat>,
    fd_open_errors: PerCpuArray<MapData, u64>,
    map_full: PerCpuArray<MapData, u64>,
    sched_attached: Array<MapData, u32>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the kernel object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl KernelMaps {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            targets: take(ebpf, names::TARGETS)?,
            index: TargetIndex::new(
                ebpf.take_map(names::TARGET_INDEX)
                    .context("map TARGET_INDEX missing from the kernel object")?,
            )?,
            counters: take(ebpf, names::TARGET_COUNTERS)?,
            syscalls: take(ebpf, names::SYSCALLS)?,
            fd_open_errors: take(ebpf, names::FD_OPEN_ERRORS)?,
            map_full: take(ebpf, names::MAP_FULL)?,
            sched_attached: take(ebpf, names::SCHED_ATTACHED)?,
        })
    }

    /// Tells the exit program that sched_switch is attached and accounts final switch-outs.
    pub fn set_sched_attached(&mut self) -> anyhow::Result<()> {
        self.sched_attached
            .set(0, 1, 0)
            .context("telling the kernel programs that sched_switch is attached")
    }

    /// (map, failed inserts) for every map whose inserts can fail for lack of room.
    pub fn map_full(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        (0..map_full::COUNT)
            .map(|i| {
                let per_cpu = self
                    .map_full
                    .get(&i, 0)
                    .context("reading the map-full counters")?;
                Ok((map_full::NAMES[i as usize], per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Puts a process into the target set under `slot`; its forks follow in the kernel.
    pub fn add_process(&mut self, tgid: u32, slot: u32) -> anyhow::Result<()> {
        self.targets
            .insert(tgid, slot, 0)
            .with_context(|| format!("adding pid {tgid} to the kernel's target set"))?;
        self.index.set(tgid, slot);
        Ok(())
    }

    /// Removes a process the kernel did not see exit (it exited before it was added).
    pub fn remove_process(&mut self, tgid: u32) {
        self.index.clear(tgid);
        let _ = self.targets.remove(&tgid);
    }

    /// Processes in the target set under `slot`, each once. A hash map walked while the kernel
    /// deletes from it restarts from its first key when the current one is deleted, so the
    /// walk can yield a key twice; the set keeps one.
    pub fn members(&self, slot: u32) -> BTreeSet<u32> {
        distinct_members(self.targets.iter().filter_map(Result::ok), slot)
    }

    pub fn counters(&self, slot: u32) -> anyhow::Result<TargetCounters> {
        let per_cpu = self
            .counters
            .get(&slot, 0)
            .context("reading target counters")?;
        let mut sum = TargetCounters::default();
        per_cpu.iter().for_each(|c| sum.add(c));
        Ok(sum)
    }

    /// (syscall nr, totals) for every number the target has called.
    pub fn syscalls(&self, slot: u32) -> anyhow::Result<Vec<(u32, SyscallStat)>> {
        let mut out = Vec::new();
        for nr in 0..MAX_SYSCALLS {
            let per_cpu = self
                .syscalls
                .get(&(slot * MAX_SYSCALLS + nr), 0)
                .context("reading syscall counters")?;
            let (count, total_ns) = per_cpu
                .iter()
                .fold((0, 0), |(c, t), s| (c + s.count, t + s.total_ns));
            if count > 0 {
                out.push((nr, SyscallStat { count, total_ns }));
            }
        }
        Ok(out)
    }

    /// (errno, failed opens); errno 0 collects values the kernel side does not index.
    pub fn fd_open_errors(&self, slot: u32) -> anyhow::Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for errno in 0..MAX_ERRNO {
            let per_cpu = self
                .fd_open_errors
                .get(&(slot * MAX_ERRNO + errno), 0)
                .context("reading failed-open counters")?;
            let n: u64 = per_cpu.iter().sum();
            if n > 0 {
                out.push((errno, n));
            }
        }
        Ok(out)
    }
}

/// The tgids of `slot` among (tgid, slot) pairs, each once.
fn distinct_members(pairs: impl Iterator<Item = (u32, u32)>, slot: u32) -> BTreeSet<u32> {
    pairs
        .filter(|&(_, s)| s == slot)
        .map(|(tgid, _)| tgid)
        .collect()
}

/// CLOCK_MONOTONIC in ns, the clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_that_restarted_yields_each_member_once() {
        // What a walk of TARGETS returns when the kernel deletes the key it stood on: the keys
        // before it again.
        let walk = [(10, 0), (11, 0), (12, 1), (10, 0), (11, 0), (13, 0)];
        let members = distinct_members(walk.into_iter(), 0);
        assert_eq!(members.into_iter().collect::<Vec<_>>(), vec![10, 11, 13]);
    }
}
