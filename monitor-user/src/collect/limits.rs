//! The memory and CPU a process can actually use: the tightest cgroup v2
//! limit on its ancestry, or the host's capacity when no cgroup is tighter.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::collect::procfs::{ProcError, ProcFs};

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(transparent)]
    Proc(#[from] ProcError),
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitSource {
    Cgroup,
    Host,
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cgroup => "cgroup",
            Self::Host => "host",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Limits {
    pub memory_bytes: u64,
    pub memory_source: LimitSource,
    pub cpus: f64,
    pub cpu_source: LimitSource,
}

/// Memory: the smallest `memory.max` from the process's cgroup up to the
/// root, capped by MemTotal. CPU: the smallest `cpu.max` quota/period on the
/// same ancestry, capped by the online CPU count. The source is `Cgroup` only
/// when a cgroup limit is strictly below the host's capacity.
pub fn effective_limits(procfs: &ProcFs, sys_root: &Path, pid: u32) -> Result<Limits, LimitsError> {
    let mem_total = procfs.mem_total_bytes()?;
    let online = f64::from(online_cpus(sys_root)?);

    let mut cg_memory: Option<u64> = None;
    let mut cg_cpus: Option<f64> = None;
    if let Some(cgroup) = procfs.cgroup_v2_path(pid)? {
        for dir in ancestry(&sys_root.join("fs/cgroup"), &cgroup) {
            if let Some(bytes) = read_memory_max(&dir.join("memory.max"))? {
                cg_memory = Some(cg_memory.map_or(bytes, |m| m.min(bytes)));
            }
            if let Some(cpus) = read_cpu_max(&dir.join("cpu.max"))? {
                cg_cpus = Some(cg_cpus.map_or(cpus, |c| c.min(cpus)));
            }
        }
    }

    let (memory_bytes, memory_source) = match cg_memory {
        Some(m) if m < mem_total => (m, LimitSource::Cgroup),
        _ => (mem_total, LimitSource::Host),
    };
    let (cpus, cpu_source) = match cg_cpus {
        Some(c) if c < online => (c, LimitSource::Cgroup),
        _ => (online, LimitSource::Host),
    };
    Ok(Limits {
        memory_bytes,
        memory_source,
        cpus,
        cpu_source,
    })
}

/// Number of CPUs in `sys_root/devices/system/cpu/online`, a range list such
/// as "0-1" or "0,2-3".
pub fn online_cpus(sys_root: &Path) -> Result<u32, LimitsError> {
    let path = sys_root.join("devices/system/cpu/online");
    let text = read(&path)?.ok_or_else(|| LimitsError::Io {
        path: path.clone(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    let bad = || invalid(&path, "cpu list", text.trim());

    let mut count: u32 = 0;
    for part in text.trim().split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        let lo: u32 = lo.parse().map_err(|_| bad())?;
        let hi: u32 = hi.parse().map_err(|_| bad())?;
        if hi < lo {
            return Err(bad());
        }
        count = count.checked_add(hi - lo + 1).ok_or_else(bad)?;
    }
    Ok(count)
}

/// The cgroup directories from the mount root down to `cgroup`, root first.
fn ancestry(mount: &Path, cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = vec![mount.to_path_buf()];
    for component in Path::new(cgroup).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                let next = dirs[dirs.len() - 1].join(name);
                dirs.push(next);
            }
            // A path with ".." is relative to another cgroup namespace's
            // root, so it does not name a directory under our mount; only
            // the mount root's limits (if any) can be trusted then.
            Component::ParentDir | Component::Prefix(_) => {
                dirs.truncate(1);
                break;
            }
        }
    }
    dirs
}

/// `memory.max` in bytes; None for "max" or a missing file.
fn read_memory_max(path: &Path) -> Result<Option<u64>, LimitsError> {
    let Some(text) = read(path)? else {
        return Ok(None);
    };
    match text.trim() {
        "max" => Ok(None),
        value => value
            .parse()
            .map(Some)
            .map_err(|_| invalid(path, "memory.max", value)),
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

/// A cgroup file's contents, None when it does not exist: cgroup v1, a
/// controller not enabled at that level, and the root cgroup (which has no
/// limit files) all mean "no limit here".
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
    use tempfile::TempDir;

    const GIB: u64 = 1 << 30;

    fn write(root: &Path, rel: &str, contents: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// A /proc with pid 100 in the cgroup named by `cgroup_file` on an 8 GiB host, and
    /// a /sys with `online` CPUs.
    struct Fixture {
        proc_dir: TempDir,
        sys_dir: TempDir,
    }

    impl Fixture {
        fn new(cgroup_file: &str, online: &str) -> Self {
            let fx = Self {
                proc_dir: TempDir::new().unwrap(),
                sys_dir: TempDir::new().unwrap(),
            };
            let mem_kb = 8 * GIB / 1024;
            fx.proc("meminfo", &format!("MemTotal: {mem_kb} kB\n"));
            fx.proc("100/cgroup", cgroup_file);
            fx.sys("devices/system/cpu/online", online);
            fs::create_dir_all(fx.sys_dir.path().join("fs/cgroup")).unwrap();
            fx
        }

        fn proc(&self, rel: &str, contents: &str) {
            write(self.proc_dir.path(), rel, contents);
        }

        fn sys(&self, rel: &str, contents: &str) {
            write(self.sys_dir.path(), rel, contents);
        }

        fn limits(&self) -> Result<Limits, LimitsError> {
            let procfs = ProcFs::with_units(self.proc_dir.path(), 4096, 100);
            effective_limits(&procfs, self.sys_dir.path(), 100)
        }
    }

    #[test]
    fn nested_memory_limit_at_middle_level() {
        let fx = Fixture::new("0::/a/b/c\n", "0-3\n");
        fx.sys("fs/cgroup/a/memory.max", "max\n");
        fx.sys("fs/cgroup/a/b/memory.max", &format!("{}\n", 2 * GIB));
        fx.sys("fs/cgroup/a/b/c/memory.max", &format!("{}\n", 4 * GIB));
        let limits = fx.limits().unwrap();
        assert_eq!(limits.memory_bytes, 2 * GIB);
        assert_eq!(limits.memory_source, LimitSource::Cgroup);
        assert_eq!(limits.cpus, 4.0);
        assert_eq!(limits.cpu_source, LimitSource::Host);
    }

    #[test]
    fn max_everywhere_is_host() {
        let fx = Fixture::new("0::/a/b\n", "0-1\n");
        for dir in ["a", "a/b"] {
            fx.sys(&format!("fs/cgroup/{dir}/memory.max"), "max\n");
            fx.sys(&format!("fs/cgroup/{dir}/cpu.max"), "max 100000\n");
        }
        let limits = fx.limits().unwrap();
        assert_eq!(
            limits,
            Limits {
                memory_bytes: 8 * GIB,
                memory_source: LimitSource::Host,
                cpus: 2.0,
                cpu_source: LimitSource::Host,
            }
        );
    }

    #[test]
    fn cgroup_memory_above_mem_total_is_host() {
        let fx = Fixture::new("0::/big\n", "0\n");
        fx.sys("fs/cgroup/big/memory.max", &format!("{}\n", 64 * GIB));
        let limits = fx.limits().unwrap();
        assert_eq!(limits.memory_bytes, 8 * GIB);
        assert_eq!(limits.memory_source, LimitSource::Host);
    }

    #[test]
    fn cpu_quota_half_cpu() {
        let fx = Fixture::new("0::/svc\n", "0-1\n");
        fx.sys("fs/cgroup/svc/cpu.max", "50000 100000\n");
        let limits = fx.limits().unwrap();
        assert_eq!(limits.cpus, 0.5);
        assert_eq!(limits.cpu_source, LimitSource::Cgroup);
    }

    #[test]
    fn cpu_takes_smallest_along_ancestry_and_caps_at_online() {
        let fx = Fixture::new("0::/a/b\n", "0-1\n");
        fx.sys("fs/cgroup/a/cpu.max", "150000 100000\n");
        fx.sys("fs/cgroup/a/b/cpu.max", "max 100000\n");
        let limits = fx.limits().unwrap();
        assert_eq!(limits.cpus, 1.5);
        assert_eq!(limits.cpu_source, LimitSource::Cgroup);

        fx.sys("fs/cgroup/a/cpu.max", "800000 100000\n");
        let limits = fx.limits().unwrap();
        assert_eq!(limits.cpus, 2.0);
        assert_eq!(limits.cpu_source, LimitSource::Host);
    }

    #[test]
    fn cgroup_v1_only_is_host() {
        let fx = Fixture::new("4:memory:/x\n1:cpu:/x\n", "0-1\n");
        let limits = fx.limits().unwrap();
        assert_eq!(limits.memory_source, LimitSource::Host);
        assert_eq!(limits.cpu_source, LimitSource::Host);
        assert_eq!(limits.memory_bytes, 8 * GIB);
    }

    #[test]
    fn missing_cgroup_dir_is_no_limit() {
        let fx = Fixture::new("0::/not/mounted/here\n", "0-1\n");
        assert_eq!(fx.limits().unwrap().memory_source, LimitSource::Host);
    }

    #[test]
    fn foreign_namespace_path_does_not_escape_mount() {
        let fx = Fixture::new("0::/../outside\n", "0-1\n");
        // Would be picked up if ".." were joined onto the mount path.
        fx.sys("fs/outside/memory.max", "1024\n");
        assert_eq!(fx.limits().unwrap().memory_source, LimitSource::Host);
    }

    #[test]
    fn malformed_limit_files_name_the_file() {
        let fx = Fixture::new("0::/a\n", "0-1\n");
        fx.sys("fs/cgroup/a/memory.max", "lots\n");
        let msg = fx.limits().unwrap_err().to_string();
        assert!(
            msg.contains("a/memory.max") && msg.contains("lots"),
            "{msg}"
        );

        fx.sys("fs/cgroup/a/memory.max", "max\n");
        fx.sys("fs/cgroup/a/cpu.max", "50000 0\n");
        let msg = fx.limits().unwrap_err().to_string();
        assert!(msg.contains("a/cpu.max") && msg.contains("period"), "{msg}");
    }

    #[test]
    fn vanished_process_is_proc_error() {
        let fx = Fixture::new("0::/\n", "0\n");
        let procfs = ProcFs::with_units(fx.proc_dir.path(), 4096, 100);
        let err = effective_limits(&procfs, fx.sys_dir.path(), 555).unwrap_err();
        assert!(matches!(
            err,
            LimitsError::Proc(ProcError::Vanished { pid: 555 })
        ));
    }

    #[test]
    fn online_cpu_lists() {
        let sys = TempDir::new().unwrap();
        let rel = "devices/system/cpu/online";
        for (list, expected) in [("0-1\n", 2), ("0,2-3\n", 3), ("0\n", 1), ("0-63,128\n", 65)] {
            write(sys.path(), rel, list);
            assert_eq!(online_cpus(sys.path()).unwrap(), expected, "{list:?}");
        }
        for bad in ["", "3-1\n", "a-b\n", "0,,1\n"] {
            write(sys.path(), rel, bad);
            let msg = online_cpus(sys.path()).unwrap_err().to_string();
            assert!(msg.contains("cpu/online"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn online_cpus_missing_file_is_error() {
        let sys = TempDir::new().unwrap();
        let msg = online_cpus(sys.path()).unwrap_err().to_string();
        assert!(msg.contains("cpu/online"), "{msg}");
    }

    #[test]
    fn source_display() {
        assert_eq!(LimitSource::Cgroup.to_string(), "cgroup");
        assert_eq!(LimitSource::Host.to_string(), "host");
    }
}
