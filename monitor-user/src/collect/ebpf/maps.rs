//! Typed access to the kernel maps: the target set in, counters out.
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use monitor_common::{
    MAX_ERRNO, MAX_SYSCALLS, ProcessStats, SyscallStat, TargetCounters, ThreadStats, maps as names,
};

use super::target_index::TargetIndex;

pub struct KernelMaps {
    targets: HashMap<MapData, u32, u32>,
    /// What the programs filter on; kept equal to `targets`.
    index: TargetIndex,
    counters: PerCpuArray<MapData, TargetCounters>,
    syscalls: PerCpuArray<MapData, SyscallStat>,
    fd_open_errors: PerCpuArray<MapData, u64>,
    process_stats: PerCpuHashMap<MapData, u32, ProcessStats>,
    thread_stats: HashMap<MapData, u32, ThreadStats>,
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
            process_stats: take(ebpf, names::PROCESS_STATS)?,
            thread_stats: take(ebpf, names::THREAD_STATS)?,
        })
    }

    /// Puts a process into the target set under `slot`; its forks follow in the kernel.
    pub fn add_process(&mut self, tgid: u32, slot: u32) -> anyhow::Result<()> {
        // Whatever a previous process with this pid left behind is not ours.
        let _ = self.process_stats.remove(&tgid);
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
        let _ = self.process_stats.remove(&tgid);
    }

    /// Processes in the target set under `slot`.
    pub fn members(&self, slot: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .targets
            .iter()
            .filter_map(Result::ok)
            .filter(|&(_, s)| s == slot)
            .map(|(tgid, _)| tgid)
            .collect();
        out.sort_unstable();
        out
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

    /// Per-thread scheduler totals of target threads (exited ones until they are forgotten).
    pub fn threads(&self) -> Vec<(u32, ThreadStats)> {
        self.thread_stats.iter().filter_map(Result::ok).collect()
    }

    /// Deletes the entry of a thread that is gone.
    pub fn forget_thread(&mut self, tid: u32) {
        let _ = self.thread_stats.remove(&tid);
    }
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
