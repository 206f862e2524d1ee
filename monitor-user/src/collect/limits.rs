//! The memory and CPU a target can actually use: the tightest cgroup limit (v1 or v2) on the
//! ancestry of its processes' cgroups, the CPUs its cpusets and affinity masks allow, or the
//! host's capacity when nothing is tighter.
//!
//! A target whose processes sit in different cgroups (a supervisor outside, workers inside)
//! gets the tightest memory limit and CPU quota any of them is under, so a worker cgroup about
//! to be OOM-killed is not hidden behind an unlimited supervisor (memory % then also counts
//! the supervisor's RSS: it errs towards alerting), and the union of the CPUs they may run on
//! (workers pinned one to a core together use all of those cores).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::collect::cgroup::{self, CgroupError, Controller, ControllerDirs, Version};
use crate::collect::cpu_list::{self, CpuSet};
use crate::collect::procfs::{ProcError, ProcFs};

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {}: invalid {field} {value:?}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        value: String,
    },
}

/// Where a limit came from. The label values of `app_memory_limit_bytes` and
/// `app_cpu_limit_cores`; they change when the limit that binds changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    CgroupV2,
    CgroupV1,
    /// The CPUs of the target's cpusets and affinity masks.
    Cpuset,
    /// MemTotal, or the online CPUs.
    Host,
}

impl LimitSource {
    pub const ALL: [Self; 4] = [Self::CgroupV2, Self::CgroupV1, Self::Cpuset, Self::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CgroupV2 => "cgroup_v2",
            Self::CgroupV1 => "cgroup_v1",
            Self::Cpuset => "cpuset",
            Self::Host => "host",
        }
    }

    fn of(version: Version) -> Self {
        match version {
            Version::V1 => Self::CgroupV1,
            Version::V2 => Self::CgroupV2,
        }
    }
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Limits {
    pub memory_bytes: u64,
    pub memory_source: LimitSource,
    pub cpus: f64,
    pub cpu_source: LimitSource,
    /// cgroup v1's `memory.memsw.limit_in_bytes` (RAM plus swap) when one is set. The kernel
    /// keeps it at or above the RAM limit, so it never binds RSS and memory % does not use
    /// it; it is logged with the limits for the swap a target may still take.
    pub memory_and_swap_bytes: Option<u64>,
}

impl Limits {
    /// The host's capacity: nothing tighter is known.
    pub fn host(memory_bytes: u64, cpus: f64) -> Self {
        Self {
            memory_bytes,
            memory_source: LimitSource::Host,
            cpus,
            cpu_source: LimitSource::Host,
            memory_and_swap_bytes: None,
        }
    }
}

/// The limits and what they were read from, for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub limits: Limits,
    /// The distinct cgroups of the target's processes, as their /proc/PID/cgroup lines of the
    /// memory controller say (more than one: the tightest is used).
    pub cgroups: Vec<String>,
    /// What could not be read, each saying which limit falls back to the host's.
    pub notes: Vec<String>,
}

/// What one cgroup (one /proc/PID/cgroup contents) limits.
#[derive(Clone, Debug, Default)]
struct CgroupLimits {
    memory: Option<(u64, Version)>,
    memory_and_swap: Option<u64>,
    quota: Option<(f64, Version)>,
    cpuset: Option<CpuSet>,
    memory_path: Option<String>,
    notes: Vec<String>,
}

/// The limits of a target made of `members`, read from `fs_root` ("/" on a real system: its
/// `sys/` and the mount points of the cgroup hierarchies are under it). Members that vanished
/// meanwhile are left out; if all did, that is the error.
pub fn effective_limits(
    procfs: &ProcFs,
    fs_root: &Path,
    members: &[u32],
) -> Result<Assessment, LimitsError> {
    let mem_total = procfs.mem_total_bytes()?;
    let online = online_cpus(fs_root)?;

    let mut by_cgroup: HashMap<String, CgroupLimits> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut allowed = CpuSet::new();
    let mut vanished = None;
    for &pid in members {
        let per_process = (|| {
            let (path, text) = procfs.cgroup_file(pid)?;
            if !by_cgroup.contains_key(&text) {
                let placement = cgroup::locate(procfs, fs_root, pid, (&path, &text))?;
                by_cgroup.insert(text.clone(), read_cgroup_limits(&placement)?);
                order.push(text.clone());
            }
            let (path, list) = procfs.cpus_allowed_list(pid)?;
            let affinity =
                cpu_list::parse(&list).ok_or_else(|| invalid(&path, "Cpus_allowed_list", &list))?;
            Ok::<_, LimitsError>((text, affinity))
        })();
        let (text, affinity) = match per_process {
            Ok(v) => v,
            Err(e) if is_vanished(&e) => {
                vanished.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let cg = &by_cgroup[&text];
        let mut mine: CpuSet = affinity.intersection(&online).copied().collect();
        if let Some(cpuset) = &cg.cpuset {
            mine.retain(|c| cpuset.contains(c));
        }
        allowed.extend(mine);
    }
    if order.is_empty() {
        return Err(vanished.unwrap_or_else(|| {
            LimitsError::Proc(ProcError::Vanished {
                pid: members.first().copied().unwrap_or(0),
            })
        }));
    }

    let groups: Vec<&CgroupLimits> = order.iter().map(|t| &by_cgroup[t]).collect();
    // min_by keeps the first of equals: the earliest member's cgroup wins a tie.
    let memory = groups
        .iter()
        .filter_map(|g| g.memory)
        .min_by(|a, b| a.0.cmp(&b.0));
    let quota = groups
        .iter()
        .filter_map(|g| g.quota)
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let memory_and_swap = groups.iter().filter_map(|g| g.memory_and_swap).min();

    let (memory_bytes, memory_source) = match memory {
        Some((m, v)) if m < mem_total => (m, LimitSource::of(v)),
        _ => (mem_total, LimitSource::Host),
    };
    let online_n = online.len() as f64;
    // An empty set (every CPU a process was allowed went offline) says nothing usable.
    let allowed_n = if allowed.is_empty() {
        online_n
    } else {
        allowed.len() as f64
    };
    // A quota equal to the cpuset's count is named as the quota: it binds whatever the
    // cpuset does.
    let (cpus, cpu_source) = match quota {
        Some((q, v)) if q <= allowed_n && q < online_n => (q, LimitSource::of(v)),
        _ if allowed_n < online_n => (allowed_n, LimitSource::Cpuset),
        _ => (online_n, LimitSource::Host),
    };

    let mut cgroups: Vec<String> = groups
        .iter()
        .filter_map(|g| g.memory_path.clone())
        .collect();
    cgroups.sort_unstable();
    cgroups.dedup();
    let mut notes: Vec<String> = groups.iter().flat_map(|g| g.notes.clone()).collect();
    notes.sort_unstable();
    notes.dedup();
    Ok(Assessment {
        limits: Limits {
            memory_bytes,
            memory_source,
            cpus,
            cpu_source,
            memory_and_swap_bytes: memory_and_swap,
        },
        cgroups,
        notes,
    })
}

fn is_vanished(e: &LimitsError) -> bool {
    match e {
        LimitsError::Proc(p) | LimitsError::Cgroup(CgroupError::Proc(p)) => p.is_vanished(),
        _ => false,
    }
}

fn read_cgroup_limits(placement: &cgroup::Placement) -> Result<CgroupLimits, LimitsError> {
    let mut out = CgroupLimits::default();
    for u in &placement.unreachable {
        out.notes.push(format!(
            "{u}: its limits are not known, the host's are used"
        ));
    }
    for (controller, dirs) in &placement.found {
        if dirs.partial {
            out.notes.push(format!(
                "only part of the {controller} hierarchy is visible ({} and below): limits set above it are not seen{}",
                dirs.dirs[0].display(),
                if *controller == Controller::Memory && dirs.version == Version::V1 {
                    " but memory.stat's hierarchical_memory_limit holds them"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(dirs) = placement.get(Controller::Memory) {
        out.memory_path = Some(dirs.path.clone());
        match dirs.version {
            Version::V2 => {
                out.memory = min_over(dirs, |d| read_limit(&d.join("memory.max"), "memory.max"))?
                    .map(|m| (m, Version::V2));
            }
            Version::V1 => {
                let (memory, memsw) = read_v1_memory(dirs)?;
                out.memory = memory.map(|m| (m, Version::V1));
                out.memory_and_swap = memsw;
            }
        }
    }
    if let Some(dirs) = placement.get(Controller::Cpu) {
        let read = match dirs.version {
            Version::V2 => min_over(dirs, |d| read_cpu_max(&d.join("cpu.max")))?,
            Version::V1 => min_over(dirs, read_cfs_quota)?,
        };
        out.quota = read.map(|q| (q, dirs.version));
    }
    if let Some(dirs) = placement.get(Controller::Cpuset) {
        // The kernel keeps the effective list of a cpuset within its ancestors' already.
        let names: &[&str] = match dirs.version {
            Version::V2 => &["cpuset.cpus.effective"],
            Version::V1 => &["cpuset.effective_cpus", "cpuset.cpus"],
        };
        for name in names {
            let path = dirs.leaf().join(name);
            if let Some(text) = read(&path)? {
                let set =
                    cpu_list::parse(&text).ok_or_else(|| invalid(&path, name, text.trim()))?;
                out.cpuset = Some(set);
                break;
            }
        }
    }
    Ok(out)
}

/// v1 memory: the smallest `memory.limit_in_bytes` from the cgroup up to the top (an ancestor
/// counts only when it accounts its children: `memory.use_hierarchy` 1, the only mode since
/// Linux 5.11), and the leaf's `hierarchical_memory_limit`, which is the kernel's own minimum
/// and also covers ancestors a container's mount hides. Likewise for memory+swap. The
/// "unlimited" value is a huge number; it loses to MemTotal.
fn read_v1_memory(dirs: &ControllerDirs) -> Result<(Option<u64>, Option<u64>), LimitsError> {
    let leaf = dirs.dirs.len() - 1;
    let mut memory: Option<u64> = None;
    let mut memsw: Option<u64> = None;
    for (i, dir) in dirs.dirs.iter().enumerate() {
        if i != leaf && !accounts_children(dir)? {
            continue;
        }
        let m = read_limit(&dir.join("memory.limit_in_bytes"), "memory.limit_in_bytes")?;
        memory = min_opt(memory, m);
        let s = read_limit(
            &dir.join("memory.memsw.limit_in_bytes"),
            "memory.memsw.limit_in_bytes",
        )?;
        memsw = min_opt(memsw, s);
    }
    let stat_path = dirs.leaf().join("memory.stat");
    if let Some(stat) = read(&stat_path)? {
        memory = min_opt(
            memory,
            stat_value(&stat_path, &stat, "hierarchical_memory_limit")?,
        );
        memsw = min_opt(
            memsw,
            stat_value(&stat_path, &stat, "hierarchical_memsw_limit")?,
        );
    }
    // What v1 prints for "no limit" (PAGE_COUNTER_MAX pages) is far above any RAM; memsw has
    // no MemTotal to lose to, so it is dropped here.
    Ok((memory, memsw.filter(|&s| s < V1_UNLIMITED_FLOOR)))
}

/// Anything from here up is v1's "unlimited" (0x7FFFFFFFFFFFF000 on 4 KiB pages; less with
/// bigger pages, still above 2^62).
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

fn accounts_children(dir: &Path) -> Result<bool, LimitsError> {
    let path = dir.join("memory.use_hierarchy");
    Ok(match read(&path)? {
        Some(text) => text.trim() != "0",
        None => true,
    })
}

fn stat_value(path: &Path, stat: &str, key: &'static str) -> Result<Option<u64>, LimitsError> {
    let Some(value) = stat
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
    else {
        return Ok(None);
    };
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| invalid(path, key, value))
}

/// The smaller of two optional limits (None: no limit there).
fn min_opt<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The smallest limit `read` finds in any of the cgroup's directories.
fn min_over<T: PartialOrd>(
    dirs: &ControllerDirs,
    read: impl Fn(&Path) -> Result<Option<T>, LimitsError>,
) -> Result<Option<T>, LimitsError> {
    let mut out = None;
    for dir in &dirs.dirs {
        out = min_opt(out, read(dir)?);
    }
    Ok(out)
}

/// Number of CPUs in `fs_root/sys/devices/system/cpu/online`.
pub fn online_cpus(fs_root: &Path) -> Result<CpuSet, LimitsError> {
    let path = fs_root.join("sys/devices/system/cpu/online");
    let text = read(&path)?.ok_or_else(|| LimitsError::Io {
        path: path.clone(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    cpu_list::parse(&text)
        .filter(|set| !set.is_empty())
        .ok_or_else(|| invalid(&path, "cpu list", text.trim()))
}

/// A byte limit (`memory.max`, `memory.limit_in_bytes`); None for "max" or a missing file.
fn read_limit(path: &Path, field: &'static str) -> Result<Option<u64>, LimitsError> {
    let Some(text) = read(path)? else {
        return Ok(None);
    };
    match text.trim() {
        "max" => Ok(None),
        value => value
            .parse()
            .map(Some)
            .map_err(|_| invalid(path, field, value)),
    }
}

/// `cpu.max` ("$QUOTA $PERIOD") as a CPU count; None for "max" or a missing file.
fn read_cpu_max(path: &Path) -> Result<Option<f64>, LimitsError> {
    let Some(text) = read(path)? else {
        return Ok(None);
    };
    let value = text.trim();
    let mut parts = value.split_whitespace();
    let quota = match parts.next() {
        Some("max") => return Ok(None),
        Some(q) => q
            .parse::<u64>()
            .map_err(|_| invalid(path, "cpu.max quota", value))?,
        None => return Err(invalid(path, "cpu.max quota", value)),
    };
    // The kernel always prints the period, but it defaults to 100ms if a
    // writer-side file ever omits it.
    let period = match parts.next() {
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| invalid(path, "cpu.max period", value))?,
        None => 100_000,
    };
    Ok(Some(quota as f64 / period as f64))
}

/// v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` as a CPU count; None for quota -1 (none) or
/// a cgroup without the files.
fn read_cfs_quota(dir: &Path) -> Result<Option<f64>, LimitsError> {
    let quota_path = dir.join("cpu.cfs_quota_us");
    let Some(text) = read(&quota_path)? else {
        return Ok(None);
    };
    let quota: i64 = text
        .trim()
        .parse()
        .map_err(|_| invalid(&quota_path, "cpu.cfs_quota_us", text.trim()))?;
    if quota < 0 {
        return Ok(None);
    }
    let period_path = dir.join("cpu.cfs_period_us");
    let text = read(&period_path)?.ok_or_else(|| LimitsError::Io {
        path: period_path.clone(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    let period: u64 = text
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| invalid(&period_path, "cpu.cfs_period_us", text.trim()))?;
    Ok(Some(quota as f64 / period as f64))
}

/// A cgroup file's contents, None when it does not exist: a controller not enabled at that
/// level, or the root cgroup (which has no limit files), both mean "no limit here".
fn read(path: &Path) -> Result<Option<String>, LimitsError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LimitsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn invalid(path: &Path, field: &'static str, value: &str) -> LimitsError {
    LimitsError::Invalid {
        path: path.to_owned(),
        field,
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::write;
    use tempfile::TempDir;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// What v1 prints for an unlimited memory cgroup on 4 KiB pages.
    const V1_UNLIMITED: &str = "9223372036854771712\n";

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2_MOUNTS: &str =
        "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    /// An 8 GiB host with `online` CPUs and the mounts `mounts`; processes are added with
    /// `process`, cgroup files with `file` (relative to the filesystem root).
    struct Fixture {
        proc_dir: TempDir,
        fs_dir: TempDir,
    }

    impl Fixture {
        fn new(mounts: &str, online: &str) -> Self {
            let fx = Self {
                proc_dir: TempDir::new().unwrap(),
                fs_dir: TempDir::new().unwrap(),
            };
            let mem_kb = 8 * GIB / 1024;
            write(
                fx.proc_dir.path(),
                "meminfo",
                &format!("MemTotal: {mem_kb} kB\n"),
            );
            write(fx.proc_dir.path(), "self/mountinfo", mounts);
            write(fx.fs_dir.path(), "sys/devices/system/cpu/online", online);
            fx
        }

        /// A v1 host whose root cgroups say what the kernel says there: unlimited.
        fn v1(online: &str) -> Self {
            let fx = Self::new(V1_MOUNTS, online);
            fx.file("sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED);
            fx.file("sys/fs/cgroup/memory/memory.use_hierarchy", "1\n");
            fx.file("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
            fx.file("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
            fx.file("sys/fs/cgroup/cpuset/cpuset.effective_cpus", online);
            fx.file("sys/fs/cgroup/unified/cgroup.procs", "");
            fx
        }

        fn v2(online: &str) -> Self {
            let fx = Self::new(V2_MOUNTS, online);
            fx.file("sys/fs/cgroup/cpuset.cpus.effective", online);
            fx
        }

        /// PID in the cgroups of `cgroup_file`, allowed on `affinity`.
        fn process(&self, pid: u32, cgroup_file: &str, affinity: &str) -> &Self {
            write(self.proc_dir.path(), &format!("{pid}/cgroup"), cgroup_file);
            let mounts = self.proc_dir.path().join(format!("{pid}/mountinfo"));
            if !mounts.exists() {
                write(self.proc_dir.path(), &format!("{pid}/mountinfo"), "");
            }
            write(
                self.proc_dir.path(),
                &format!("{pid}/status"),
                &format!("Name:\tw\nCpus_allowed_list:\t{affinity}\n"),
            );
            self
        }

        fn file(&self, rel: &str, contents: &str) -> &Self {
            write(self.fs_dir.path(), rel, contents);
            self
        }

        /// A v1 cgroup directory with the files the kernel puts in a new one.
        fn v1_memory(&self, cgroup: &str, limit: &str) -> &Self {
            let dir = format!("sys/fs/cgroup/memory{cgroup}");
            self.file(&format!("{dir}/memory.limit_in_bytes"), limit)
                .file(&format!("{dir}/memory.use_hierarchy"), "1\n")
        }

        fn v1_cpu(&self, cgroup: &str, quota: &str) -> &Self {
            let dir = format!("sys/fs/cgroup/cpu{cgroup}");
            self.file(&format!("{dir}/cpu.cfs_quota_us"), quota)
                .file(&format!("{dir}/cpu.cfs_period_us"), "100000\n")
        }

        fn assess(&self, members: &[u32]) -> Result<Assessment, LimitsError> {
            let procfs = ProcFs::with_units(self.proc_dir.path(), 4096, 100);
            effective_limits(&procfs, self.fs_dir.path(), members)
        }

        fn limits(&self) -> Limits {
            self.assess(&[100]).unwrap().limits
        }
    }

    const V1_FILE: &str = "9:name=systemd:/\n4:memory:/app\n3:cpuset:/\n1:cpu:/app\n0::/\n";

    #[test]
    fn v1_limits_at_the_leaf() {
        let fx = Fixture::v1("0-1\n");
        fx.process(100, V1_FILE, "0-1")
            .v1_memory("/app", &format!("{}\n", 512 * MIB))
            .v1_cpu("/app", "50000\n");
        let l = fx.limits();
        assert_eq!(
            (l.memory_bytes, l.memory_source),
            (512 * MIB, LimitSource::CgroupV1)
        );
        assert_eq!((l.cpus, l.cpu_source), (0.5, LimitSource::CgroupV1));
        assert_eq!(l.memory_and_swap_bytes, None);
    }

    #[test]
    fn v1_limits_at_an_ancestor() {
        let fx = Fixture::v1("0-3\n");
        fx.process(100, "4:memory:/a/b/c\n1:cpu:/a/b\n0::/\n", "0-3")
            .v1_memory("/a", V1_UNLIMITED)
            .v1_memory("/a/b", &format!("{}\n", 2 * GIB))
            .v1_memory("/a/b/c", &format!("{}\n", 4 * GIB))
            .v1_cpu("/a", "150000\n")
            .v1_cpu("/a/b", "-1\n");
        let l = fx.limits();
        assert_eq!(
            (l.memory_bytes, l.memory_source),
            (2 * GIB, LimitSource::CgroupV1)
        );
        assert_eq!((l.cpus, l.cpu_source), (1.5, LimitSource::CgroupV1));
    }

    #[test]
    fn v1_unlimited_everywhere_is_the_host() {
        let fx = Fixture::v1("0-1\n");
        fx.process(100, V1_FILE, "0-1")
            .v1_memory("/app", V1_UNLIMITED)
            .v1_cpu("/app", "-1\n")
            .file(
                "sys/fs/cgroup/memory/app/memory.memsw.limit_in_bytes",
                V1_UNLIMITED,
            );
        assert_eq!(fx.limits(), Limits::host(8 * GIB, 2.0));
    }

    #[test]
    fn v1_ancestor_that_does_not_account_its_children_does_not_limit_them() {
        let fx = Fixture::v1("0-1\n");
        fx.process(100, "4:memory:/flat/leaf\n0::/\n", "0-1")
            .v1_memory("/flat", &format!("{}\n", GIB))
            .file("sys/fs/cgroup/memory/flat/memory.use_hierarchy", "0\n")
            .v1_memory("/flat/leaf", V1_UNLIMITED);
        assert_eq!(fx.limits().memory_source, LimitSource::Host);
    }

    #[test]
    fn v1_memsw_is_kept_but_not_the_ram_limit() {
        let fx = Fixture::v1("0-1\n");
        fx.process(100, V1_FILE, "0-1")
            .v1_memory("/app", &format!("{}\n", 512 * MIB))
            .file(
                "sys/fs/cgroup/memory/app/memory.memsw.limit_in_bytes",
                &format!("{}\n", 768 * MIB),
            );
        let l = fx.limits();
        assert_eq!(l.memory_bytes, 512 * MIB);
        assert_eq!(l.memory_and_swap_bytes, Some(768 * MIB));
    }

    #[test]
    fn v1_hierarchical_limit_covers_ancestors_a_container_hides() {
        // A container's own view: its memory hierarchy mounted from its cgroup down, the
        // 1 GiB limit of the pod above it only in memory.stat.
        let fx = Fixture::new(
            "35 31 0:32 /kubepods/pod1/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "0-1\n",
        );
        fx.process(100, "4:memory:/kubepods/pod1/c1\n", "0-1")
            .file("sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
            .file(
                "sys/fs/cgroup/memory/memory.stat",
                &format!("cache 0\nrss 0\nhierarchical_memory_limit {GIB}\nhierarchical_memsw_limit {}\n", 9_223_372_036_854_771_712u64),
            );
        let a = fx.assess(&[100]).unwrap();
        assert_eq!(a.limits.memory_bytes, GIB);
        assert_eq!(a.limits.memory_source, LimitSource::CgroupV1);
        assert_eq!(a.limits.memory_and_swap_bytes, None);
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("only part of the memory hierarchy")),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn v2_limits_at_leaf_and_ancestor_and_max() {
        let fx = Fixture::v2("0-3\n");
        fx.process(100, "0::/a/b/c\n", "0-3")
            .file("sys/fs/cgroup/a/memory.max", "max\n")
            .file("sys/fs/cgroup/a/b/memory.max", &format!("{}\n", 2 * GIB))
            .file("sys/fs/cgroup/a/b/c/memory.max", &format!("{}\n", 4 * GIB))
            .file("sys/fs/cgroup/a/cpu.max", "max 100000\n")
            .file("sys/fs/cgroup/a/b/c/cpu.max", "50000 100000\n");
        let l = fx.limits();
        assert_eq!(
            (l.memory_bytes, l.memory_source),
            (2 * GIB, LimitSource::CgroupV2)
        );
        assert_eq!((l.cpus, l.cpu_source), (0.5, LimitSource::CgroupV2));

        fx.file("sys/fs/cgroup/a/b/memory.max", "max\n")
            .file("sys/fs/cgroup/a/b/c/memory.max", &format!("{}\n", 64 * GIB))
            .file("sys/fs/cgroup/a/b/c/cpu.max", "800000 100000\n");
        assert_eq!(fx.limits(), Limits::host(8 * GIB, 4.0));
    }

    #[test]
    fn hybrid_memory_on_v1_cpu_on_the_unified_tree() {
        let fx = Fixture::new(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "0-1\n",
        );
        fx.process(100, "4:memory:/svc\n0::/svc\n", "0-1")
            .v1_memory("/svc", &format!("{}\n", 300 * MIB))
            .file("sys/fs/cgroup/unified/svc/cpu.max", "120000 100000\n");
        let l = fx.limits();
        assert_eq!(
            (l.memory_bytes, l.memory_source),
            (300 * MIB, LimitSource::CgroupV1)
        );
        assert_eq!((l.cpus, l.cpu_source), (1.2, LimitSource::CgroupV2));
    }

    #[test]
    fn a_target_in_another_cgroup_namespace_is_read_through_its_root() {
        let fx = Fixture::v2("0-1\n");
        fx.process(100, "0::/../pod1/app\n", "0-1");
        write(
            fx.proc_dir.path(),
            "100/mountinfo",
            "700 650 0:26 /../pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
        );
        write(
            fx.proc_dir.path(),
            "100/root/sys/fs/cgroup/app/memory.max",
            &format!("{}\n", 256 * MIB),
        );
        let a = fx.assess(&[100]).unwrap();
        assert_eq!(a.limits.memory_bytes, 256 * MIB);
        assert_eq!(a.limits.memory_source, LimitSource::CgroupV2);
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("limits set above it are not seen"))
        );
    }

    #[test]
    fn a_cgroup_no_mount_shows_falls_back_to_the_host_and_says_so() {
        let fx = Fixture::v2("0-1\n");
        fx.process(100, "0::/../elsewhere\n", "0-1");
        let a = fx.assess(&[100]).unwrap();
        assert_eq!(a.limits, Limits::host(8 * GIB, 2.0));
        assert_eq!(a.notes.len(), 3, "memory, cpu and cpuset: {:?}", a.notes);
        assert!(a.notes[0].contains("/../elsewhere") && a.notes[0].contains("host"));
    }

    #[test]
    fn cpuset_and_affinity_bound_the_cpus() {
        let fx = Fixture::v1("0-3\n");
        fx.process(100, "3:cpuset:/pinned\n1:cpu:/\n0::/\n", "0-3")
            .file("sys/fs/cgroup/cpuset/pinned/cpuset.effective_cpus", "2-3\n");
        assert_eq!(
            (fx.limits().cpus, fx.limits().cpu_source),
            (2.0, LimitSource::Cpuset)
        );
        // taskset within it.
        fx.process(100, "3:cpuset:/pinned\n1:cpu:/\n0::/\n", "3");
        assert_eq!(fx.limits().cpus, 1.0);
        // A quota equal to the CPUs left is named as the quota; a looser one is not.
        fx.v1_cpu("/", "100000\n");
        assert_eq!(
            (fx.limits().cpus, fx.limits().cpu_source),
            (1.0, LimitSource::CgroupV1)
        );
        fx.v1_cpu("/", "150000\n");
        assert_eq!(fx.limits().cpu_source, LimitSource::Cpuset);
    }

    #[test]
    fn affinity_alone_on_v2_without_a_cpuset_controller() {
        let fx = Fixture::new(V2_MOUNTS, "0-1\n");
        fx.process(100, "0::/svc\n", "1")
            .file("sys/fs/cgroup/svc/cgroup.procs", "");
        assert_eq!(
            (fx.limits().cpus, fx.limits().cpu_source),
            (1.0, LimitSource::Cpuset)
        );
    }

    #[test]
    fn processes_in_different_cgroups_get_the_tightest_limit_and_their_cpus_together() {
        let fx = Fixture::v1("0-3\n");
        // A supervisor outside, pinned to CPU 0; two workers inside, pinned to 1 and 2.
        fx.process(100, "4:memory:/\n3:cpuset:/\n1:cpu:/\n0::/\n", "0")
            .process(
                101,
                "4:memory:/workers\n3:cpuset:/\n1:cpu:/workers\n0::/\n",
                "1",
            )
            .process(
                102,
                "4:memory:/workers\n3:cpuset:/\n1:cpu:/workers\n0::/\n",
                "2",
            )
            .v1_memory("/workers", &format!("{}\n", 512 * MIB))
            .v1_cpu("/workers", "-1\n");
        let a = fx.assess(&[100, 101, 102]).unwrap();
        assert_eq!(a.limits.memory_bytes, 512 * MIB);
        assert_eq!(a.limits.memory_source, LimitSource::CgroupV1);
        assert_eq!(
            (a.limits.cpus, a.limits.cpu_source),
            (3.0, LimitSource::Cpuset)
        );
        assert_eq!(a.cgroups, ["/", "/workers"]);
    }

    #[test]
    fn vanished_members_are_left_out_and_all_vanished_is_an_error() {
        let fx = Fixture::v1("0-1\n");
        fx.process(100, V1_FILE, "0-1")
            .v1_memory("/app", &format!("{}\n", 512 * MIB));
        let a = fx.assess(&[555, 100]).unwrap();
        assert_eq!(a.limits.memory_bytes, 512 * MIB);
        let err = fx.assess(&[555]).unwrap_err();
        assert!(is_vanished(&err), "{err:?}");
    }

    #[test]
    fn malformed_limit_files_name_the_file() {
        let fx = Fixture::v2("0-1\n");
        fx.process(100, "0::/a\n", "0-1")
            .file("sys/fs/cgroup/a/memory.max", "lots\n");
        let msg = fx.assess(&[100]).unwrap_err().to_string();
        assert!(
            msg.contains("a/memory.max") && msg.contains("lots"),
            "{msg}"
        );

        fx.file("sys/fs/cgroup/a/memory.max", "max\n")
            .file("sys/fs/cgroup/a/cpu.max", "50000 0\n");
        let msg = fx.assess(&[100]).unwrap_err().to_string();
        assert!(msg.contains("a/cpu.max") && msg.contains("period"), "{msg}");

        fx.file("sys/fs/cgroup/a/cpu.max", "max 100000\n")
            .file("sys/fs/cgroup/a/cpuset.cpus.effective", "0-x\n");
        let msg = fx.assess(&[100]).unwrap_err().to_string();
        assert!(msg.contains("cpuset.cpus.effective"), "{msg}");

        let fx = Fixture::v1("0-1\n");
        fx.process(100, V1_FILE, "0-1").v1_cpu("/app", "half\n");
        let msg = fx.assess(&[100]).unwrap_err().to_string();
        assert!(
            msg.contains("app/cpu.cfs_quota_us") && msg.contains("half"),
            "{msg}"
        );
    }

    #[test]
    fn online_cpu_lists() {
        let root = TempDir::new().unwrap();
        let rel = "sys/devices/system/cpu/online";
        for (list, expected) in [("0-1\n", 2), ("0,2-3\n", 3), ("0-63,128\n", 65)] {
            write(root.path(), rel, list);
            assert_eq!(
                online_cpus(root.path()).unwrap().len(),
                expected,
                "{list:?}"
            );
        }
        for bad in ["", "3-1\n", "a-b\n"] {
            write(root.path(), rel, bad);
            let msg = online_cpus(root.path()).unwrap_err().to_string();
            assert!(msg.contains("cpu/online"), "{bad:?}: {msg}");
        }
        let msg = online_cpus(TempDir::new().unwrap().path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cpu/online"), "{msg}");
    }

    #[test]
    fn source_label_values() {
        let labels: Vec<String> = LimitSource::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(labels, ["cgroup_v2", "cgroup_v1", "cpuset", "host"]);
        assert_eq!(
            serde_json::to_value(LimitSource::CgroupV1).unwrap(),
            "cgroup_v1"
        );
    }
}
