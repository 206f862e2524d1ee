//! Turns the kernel maps and /proc into [`Sample`]s for one target.
//!
//! Counters mean "since the target's processes started", the way the kernel's own accounting
//! (schedstat, getrusage) does: when user space puts a running process into the target set it
//! records what the kernel had already accounted to it (the join baseline), and the kernel
//! programs count everything after. Processes forked by a target join in the kernel, before they
//! first run, and need no baseline.
use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Context as _;
use tracing::{debug, info};

use crate::{
    collect::ebpf::{
        maps::monotonic_ns,
        probes::{Probes, is_attached},
    },
    collect::procfs::{ProcError, ProcFs},
    collect::sample::{KernelCounts, Sample},
};

/// Which processes make up the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// One process and its descendants.
    Pid(u32),
    /// Every process with this comm (and their descendants), including ones started later.
    Comm(String),
}

/// Which parts of a sample are due, by cadence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub vms: bool,
    pub fds_threads: bool,
}

/// What the kernel had accounted to processes before they joined the target set. Live threads'
/// on-CPU time is not here: it is read from /proc at each sample while they live, and the kernel
/// programs count a thread's whole sum_exec_runtime once it has ended.
#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    /// On-CPU time of threads that had exited before the join (/proc/PID/stat, in clock ticks).
    dead_oncpu_ns: u64,
    /// Faults of threads that had exited before the join (live threads are read at each sample).
    dead_minflt: u64,
    dead_majflt: u64,
    switches_voluntary: u64,
    switches_involuntary: u64,
}

/// /proc-only mode: cumulative values of tasks (processes or threads, told apart by `K`, which
/// includes the process's start time so a reused pid is a new task) folded into monotonic totals.
#[derive(Debug)]
struct ProcTotals<K, const N: usize> {
    last: HashMap<K, [u64; N]>,
    total: [u64; N],
}

impl<K, const N: usize> Default for ProcTotals<K, N> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
            total: [0; N],
        }
    }
}

impl<K: std::hash::Hash + Eq, const N: usize> ProcTotals<K, N> {
    /// Adds how much each value grew since the last observation of this task (all of it for a
    /// task seen for the first time: the counters start at its birth).
    fn observe(&mut self, key: K, values: [u64; N]) {
        let previous = self.last.get(&key).copied().unwrap_or([0; N]);
        for i in 0..N {
            self.total[i] += values[i].saturating_sub(previous[i]);
        }
        self.last.insert(key, values);
    }

    /// Forgets the tasks not observed in the last pass.
    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.last.retain(|k, _| keep(k));
    }
}

/// The processes once joined to the target set, by (pid, start time): one that is no longer a
/// member (it exited, and is a zombie until its parent reaps it) is never joined again, which
/// would count its whole life a second time.
#[derive(Debug, Default)]
struct Joined(HashMap<u32, u64>);

impl Joined {
    fn record(&mut self, pid: u32, start_time: u64) {
        self.0.insert(pid, start_time);
    }

    fn contains(&self, pid: u32, start_time: u64) -> bool {
        self.0.get(&pid) == Some(&start_time)
    }

    /// Forgets pids that no longer name the process that was joined. Members are kept without
    /// a look at /proc (the kernel drops a process when it exits), so only the few that left
    /// the set cost a read.
    fn retain_live(&mut self, members: &BTreeSet<u32>, procfs: &ProcFs) {
        self.0.retain(|&pid, start| {
            members.contains(&pid)
                || matches!(procfs.process(pid), Ok(s) if s.start_time_ticks == *start)
        });
    }
}

pub struct Collector {
    procfs: ProcFs,
    probes: Option<Probes>,
    selector: Selector,
    slot: u32,
    /// Start time of the --pid root, so a reused pid is never taken for it.
    root_start: Option<u64>,
    /// /proc-only mode: the members found by walking /proc.
    proc_members: BTreeSet<u32>,
    baseline: Baseline,
    joined: Joined,
    /// /proc-only mode: on-CPU time and faults per (pid, start time).
    proc_totals: ProcTotals<(u32, u64), 3>,
    /// /proc-only mode: context switches per (pid, start time, tid): the kernel keeps them per
    /// thread, and the process-level status file shows the leader's alone.
    switch_totals: ProcTotals<(u32, u64, u32), 2>,
    /// Whether an unreadable /proc/PID/fd was reported: once, not at every sample.
    fds_unreadable_reported: bool,
    /// eBPF mode without sched_switch: the kernel counts a thread's on-CPU time from its exit
    /// on, while /proc still lists it, so exiting threads are not read as live.
    exiting_counted_by_kernel: bool,
}

impl Collector {
    pub fn new(
        procfs: ProcFs,
        probes: Option<Probes>,
        selector: Selector,
        slot: u32,
    ) -> anyhow::Result<Self> {
        let root_start = match &selector {
            Selector::Pid(pid) => Some(
                procfs
                    .process(*pid)
                    .map_err(|e| match e {
                        ProcError::Vanished { .. } => anyhow::anyhow!("no process with pid {pid}"),
                        e => anyhow::Error::new(e),
                    })?
                    .start_time_ticks,
            ),
            Selector::Comm(_) => None,
        };
        let exiting_counted_by_kernel = probes
            .as_ref()
            .is_some_and(|p| !is_attached(&p.programs, "sched_switch"));
        let mut collector = Self {
            procfs,
            probes,
            exiting_counted_by_kernel,
            selector,
            slot,
            root_start,
            proc_members: BTreeSet::new(),
            baseline: Baseline::default(),
            joined: Joined::default(),
            proc_totals: ProcTotals::default(),
            switch_totals: ProcTotals::default(),
            fds_unreadable_reported: false,
        };
        collector.refresh_members()?;
        Ok(collector)
    }

    pub fn probes_mut(&mut self) -> Option<&mut Probes> {
        self.probes.as_mut()
    }

    pub fn procfs(&self) -> &ProcFs {
        &self.procfs
    }

    /// The live processes selected directly (--pid root if it still is the same process and has
    /// not exited, or every live process with the name).
    fn roots(&self) -> anyhow::Result<Vec<u32>> {
        Ok(match &self.selector {
            Selector::Pid(pid) => match self.procfs.process(*pid) {
                Ok(stat)
                    if Some(stat.start_time_ticks) == self.root_start && !stat.has_exited() =>
                {
                    vec![*pid]
                }
                Ok(_) => vec![],
                Err(e) if e.is_vanished() => vec![],
                Err(e) => return Err(e.into()),
            },
            Selector::Comm(name) => self.procfs.pids_by_comm(name)?,
        })
    }

    /// Current members of the target, sorted, each once.
    pub fn members(&self) -> Vec<u32> {
        match &self.probes {
            Some(p) => p.maps.members(self.slot).into_iter().collect(),
            None => self.proc_members.iter().copied().collect(),
        }
    }

    /// Finds roots that are not members yet (a --comm target that started or restarted) and
    /// drops members that are gone.
    pub fn refresh_members(&mut self) -> anyhow::Result<()> {
        let roots = self.roots()?;
        if self.probes.is_none() {
            let mut members = BTreeSet::new();
            for root in roots {
                members.insert(root);
                match self.procfs.descendants(root) {
                    Ok(d) => members.extend(d),
                    Err(e) if e.is_vanished() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.proc_members = members;
            return Ok(());
        }
        let members: BTreeSet<u32> = self.members().into_iter().collect();
        for &m in &members {
            // The kernel removes exiting processes; one that exited before we added it is ours to drop.
            if matches!(self.procfs.process(m), Err(e) if e.is_vanished()) {
                debug!(pid = m, "dropping a member that exited before it was seen");
                self.probes
                    .as_mut()
                    .expect("checked above")
                    .maps
                    .remove_process(m);
            }
        }
        self.joined.retain_live(&members, &self.procfs);
        for root in roots {
            if members.contains(&root) {
                continue;
            }
            self.join(root)?;
            let descendants = self.procfs.descendants(root).unwrap_or_default();
            for d in descendants.into_iter().filter(|d| !members.contains(d)) {
                self.join(d)?;
            }
        }
        Ok(())
    }

    /// Adds a running process to the kernel's target set and records its join baseline. A
    /// process that has exited (a zombie) or was joined before is left alone.
    fn join(&mut self, pid: u32) -> anyhow::Result<()> {
        let start_time = match self.procfs.process(pid) {
            Ok(stat) if stat.has_exited() => return Ok(()),
            Ok(stat) => stat.start_time_ticks,
            Err(e) if e.is_vanished() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if self.joined.contains(pid, start_time) {
            return Ok(());
        }
        let slot = self.slot;
        let probes = self.probes.as_mut().expect("join is for eBPF mode");
        // In the set first, so forks from now on are followed; then read what came before.
        probes.maps.add_process(pid, slot)?;
        self.joined.record(pid, start_time);
        let read = || -> Result<Baseline, ProcError> {
            let stat = self.procfs.process(pid)?;
            // Switches of threads that exited before the join are in no /proc file: the baseline
            // holds the live threads'.
            let (vol, invol) = self
                .procfs
                .thread_switches(pid)?
                .iter()
                .fold((0, 0), |(v, i), &(_, tv, ti)| (v + tv, i + ti));
            let mut b = Baseline {
                switches_voluntary: vol,
                switches_involuntary: invol,
                ..Baseline::default()
            };
            let (mut live_min, mut live_maj, mut live_oncpu) = (0, 0, 0);
            for tid in self.procfs.threads(pid)? {
                let (Ok(t), Ok(ns)) = (
                    self.procfs.thread(pid, tid),
                    self.procfs.thread_schedstat_ns(pid, tid),
                ) else {
                    continue; // exited meanwhile: it lands in the dead part
                };
                if t.exiting && self.exiting_counted_by_kernel {
                    // Its exit ran before the join, so no kernel program counts it: the dead
                    // part holds it (to the tick).
                    continue;
                }
                live_oncpu += ns;
                live_min += t.minflt;
                live_maj += t.majflt;
            }
            let total_oncpu = self.procfs.ticks_to_ns(stat.utime_ticks + stat.stime_ticks);
            b.dead_oncpu_ns = total_oncpu.saturating_sub(live_oncpu);
            b.dead_minflt = stat.minflt.saturating_sub(live_min);
            b.dead_majflt = stat.majflt.saturating_sub(live_maj);
            Ok(b)
        };
        match read() {
            Ok(b) => {
                let base = &mut self.baseline;
                base.dead_oncpu_ns += b.dead_oncpu_ns;
                base.dead_minflt += b.dead_minflt;
                base.dead_majflt += b.dead_majflt;
                base.switches_voluntary += b.switches_voluntary;
                base.switches_involuntary += b.switches_involuntary;
                info!(pid, "process joined the target");
                Ok(())
            }
            Err(e) if e.is_vanished() => {
                probes.maps.remove_process(pid);
                Ok(())
            }
            Err(e) => {
                Err(e).with_context(|| format!("reading the state of pid {pid} as it joined"))
            }
        }
    }

    /// Reads everything that is due into a sample.
    ///
    /// Kernel values are read before /proc: a thread that exits in between is then missing from
    /// both (a transient low reading) rather than counted twice. Each thread's on-CPU time comes
    /// from one source: /proc schedstat while it is listed there (exact to the scheduler's last
    /// tick or switch), the kernel's exited count once it has ended.
    pub fn sample(&mut self, due: Due) -> anyhow::Result<Sample> {
        let members = self.members();
        let kernel = match &self.probes {
            Some(p) => Some(p.maps.counters(self.slot)?),
            None => None,
        };
        let mut live_oncpu = 0u64;
        let mut s = Sample {
            up: !members.is_empty(),
            processes: members.len() as u64,
            ..Sample::default()
        };
        let (mut vms, mut fds, mut threads) = (0, Some(0), 0);
        let (mut live_min, mut live_maj) = (0, 0);
        let (mut seen_processes, mut seen_threads) = (HashSet::new(), HashSet::new());
        for &pid in &members {
            let stat = match self.procfs.process(pid) {
                Ok(stat) => stat,
                Err(e) if e.is_vanished() => continue,
                Err(e) => return Err(e.into()),
            };
            s.rss_bytes += stat.rss_bytes;
            vms += stat.vsize_bytes;
            threads += stat.num_threads;
            if due.fds_threads {
                match self.procfs.open_fds(pid) {
                    Ok(n) => fds = fds.map(|f| f + n),
                    Err(e) if e.is_vanished() => {}
                    // Unreadable (no CAP_DAC_READ_SEARCH for another user's process): no count
                    // rather than a count of 0, which looks like a real, and wrong, value.
                    Err(e) => {
                        if !self.fds_unreadable_reported {
                            tracing::error!(
                                "cannot count the open fds of pid {pid}: {e}; the open-fds \
                                 series stays unset (monitor needs CAP_DAC_READ_SEARCH to read \
                                 another user's /proc/PID/fd)"
                            );
                            self.fds_unreadable_reported = true;
                        }
                        fds = None;
                    }
                }
            }
            if self.probes.is_some() {
                for tid in self.procfs.threads(pid).unwrap_or_default() {
                    let (Ok(t), Ok(ns)) = (
                        self.procfs.thread(pid, tid),
                        self.procfs.thread_schedstat_ns(pid, tid),
                    ) else {
                        continue;
                    };
                    if matches!(t.state, 'Z' | 'X' | 'x') {
                        // A zombie leader waiting for its threads or its parent: its time and
                        // faults are in the kernel's exited counts since its exit.
                        continue;
                    }
                    if t.exiting && self.exiting_counted_by_kernel {
                        // Counted by the kernel from its exit on; faults too.
                        continue;
                    }
                    live_min += t.minflt;
                    live_maj += t.majflt;
                    live_oncpu += ns;
                }
            } else {
                let start = stat.start_time_ticks;
                let cpu_ns = self.procfs.ticks_to_ns(stat.utime_ticks + stat.stime_ticks);
                self.proc_totals
                    .observe((pid, start), [cpu_ns, stat.minflt, stat.majflt]);
                for (tid, vol, invol) in self.procfs.thread_switches(pid).unwrap_or_default() {
                    self.switch_totals.observe((pid, start, tid), [vol, invol]);
                    seen_threads.insert((pid, start, tid));
                }
                seen_processes.insert((pid, start));
            }
        }
        s.vms_bytes = due.vms.then_some(vms);
        s.threads = due.fds_threads.then_some(threads);
        s.open_fds = if due.fds_threads { fds } else { None };
        s.at_ns = monotonic_ns();
        match (&self.probes, kernel) {
            (Some(p), Some(c)) => {
                let b = &self.baseline;
                s.oncpu_ns = b.dead_oncpu_ns + c.exited_oncpu_ns + live_oncpu;
                s.minor_faults = b.dead_minflt + c.exited_minflt + live_min;
                s.major_faults = b.dead_majflt + c.exited_majflt + live_maj;
                s.switches_voluntary = b.switches_voluntary + c.switches_voluntary;
                s.switches_involuntary = b.switches_involuntary + c.switches_involuntary;
                s.kernel = Some(KernelCounts {
                    fault_exceptions_user: c.faults_user,
                    fault_exceptions_kernel: c.faults_kernel,
                    fd_opens: c.fd_opens,
                    fd_closes: c.fd_closes,
                    fd_close_range_calls: c.fd_close_range_calls,
                    fd_open_errors: c.fd_open_errors,
                    fd_open_errors_by_errno: p.maps.fd_open_errors(self.slot)?,
                    syscalls: p.maps.syscalls(self.slot)?,
                    syscall_latency_lost: c.syscall_starts_lost,
                    process_forks: c.process_forks,
                    process_exits: c.process_exits,
                    map_full: p.maps.map_full()?,
                });
            }
            _ => {
                // Switches a thread made between its last sample and its exit are in no /proc
                // file once it is gone.
                self.proc_totals.retain(|k| seen_processes.contains(k));
                self.switch_totals.retain(|k| seen_threads.contains(k));
                let [cpu, min, maj] = self.proc_totals.total;
                let [vol, invol] = self.switch_totals.total;
                s.oncpu_ns = cpu;
                s.minor_faults = min;
                s.major_faults = maj;
                s.switches_voluntary = vol;
                s.switches_involuntary = invol;
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;

    /// A /proc/PID/stat line with the given state and start time.
    fn stat_line(pid: u32, state: char, start: u64) -> String {
        format!(
            "{pid} (app) {state} 1 {pid} {pid} 0 -1 4194560 \
             110 220 3 4 500 60 7 8 20 0 1 0 {start} 104857600 \
             321 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    fn write(root: &Path, pid: u32, state: char, start: u64) {
        fs::create_dir_all(root.join(pid.to_string())).unwrap();
        fs::write(
            root.join(format!("{pid}/stat")),
            stat_line(pid, state, start),
        )
        .unwrap();
        fs::write(root.join(format!("{pid}/comm")), "app\n").unwrap();
        fs::write(root.join(format!("{pid}/statm")), "100 10 5 1 0 20 0\n").unwrap();
    }

    #[test]
    fn an_unreadable_fd_directory_leaves_the_count_unset_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 7, 'S', 500);
        fs::create_dir_all(dir.path().join("7/fd")).unwrap();
        fs::write(dir.path().join("7/fd/0"), "").unwrap();
        let procfs = ProcFs::with_units(dir.path(), 4096, 100);
        let mut c = Collector::new(procfs, None, Selector::Pid(7), 0).unwrap();
        let due = Due {
            vms: true,
            fds_threads: true,
        };
        assert_eq!(c.sample(due).unwrap().open_fds, Some(1));
        // What EACCES on another user's fd directory does, as root can have it: not a directory
        // that can be read.
        fs::remove_dir_all(dir.path().join("7/fd")).unwrap();
        fs::write(dir.path().join("7/fd"), "").unwrap();
        assert_eq!(c.sample(due).unwrap().open_fds, None);
    }

    #[test]
    fn a_zombie_root_is_not_a_member() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 7, 'Z', 500);
        write(dir.path(), 8, 'S', 600);
        let procfs = ProcFs::with_units(dir.path(), 4096, 100);
        let c = Collector::new(procfs.clone(), None, Selector::Pid(7), 0).unwrap();
        assert!(c.members().is_empty(), "{:?}", c.members());
        let c = Collector::new(procfs, None, Selector::Comm("app".into()), 0).unwrap();
        assert_eq!(c.members(), vec![8]);
    }

    #[test]
    fn a_joined_process_is_remembered_until_its_pid_names_another() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 7, 'S', 500);
        let procfs = ProcFs::with_units(dir.path(), 4096, 100);
        let mut joined = Joined::default();
        joined.record(7, 500);
        let none = BTreeSet::new();
        joined.retain_live(&none, &procfs);
        assert!(joined.contains(7, 500));
        // The pid now names a new process: the old one is forgotten, the new one is not joined.
        write(dir.path(), 7, 'S', 900);
        joined.retain_live(&none, &procfs);
        assert!(!joined.contains(7, 500) && !joined.contains(7, 900));
    }
}
