//! Readers for the `/proc` files the monitor samples.
//!
//! The root is injectable so tests can point [`ProcFs`] at a fixture tree;
//! page size and clock ticks are injectable for the same reason.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} vanished")]
    Vanished { pid: u32 },
    #[error("thread {tid} of process {pid} vanished")]
    ThreadVanished { pid: u32, tid: u32 },
    #[error("parsing {}: missing {field}", path.display())]
    Missing { path: PathBuf, field: &'static str },
    #[error("parsing {}: invalid {field} {value:?}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        value: String,
    },
}

impl ProcError {
    /// True when the process or thread exited underneath us, which callers
    /// usually treat as "stop tracking" rather than as a failure.
    pub fn is_vanished(&self) -> bool {
        matches!(self, Self::Vanished { .. } | Self::ThreadVanished { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub minflt: u64,
    pub cminflt: u64,
    pub majflt: u64,
    pub cmajflt: u64,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub cutime_ticks: u64,
    pub cstime_ticks: u64,
    pub num_threads: u64,
    pub start_time_ticks: u64,
    /// Field 23 of stat.
    pub vsize_bytes: u64,
    /// Resident pages from statm times the page size.
    pub rss_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStat {
    pub tid: u32,
    pub state: char,
    pub minflt: u64,
    pub majflt: u64,
    /// The CPU the thread last ran on (the one it runs on now when `state` is 'R').
    pub processor: u32,
    /// PF_EXITING: the thread has begun to exit (it stays listed until it is released).
    pub exiting: bool,
}

/// include/linux/sched.h: set by exit_signals() as do_exit begins, never cleared.
const PF_EXITING: u64 = 0x4;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessStatus {
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
    /// Zero for kernel threads, which have no VmHWM line.
    pub vm_hwm_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
    page_size: u64,
    clk_tck: u64,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        // sysconf only fails for unknown names; the fallbacks are the values
        // on every mainstream Linux target.
        let page_size = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
        let clk_tck = sysconf(libc::_SC_CLK_TCK).unwrap_or(100);
        Self::with_units(root, page_size, clk_tck)
    }

    pub fn system() -> Self {
        Self::new("/proc")
    }

    pub fn with_units(root: impl Into<PathBuf>, page_size: u64, clk_tck: u64) -> Self {
        Self {
            root: root.into(),
            page_size,
            // A zero tick rate would make ticks_to_ns divide by zero.
            clk_tck: clk_tck.max(1),
        }
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        let ns = u128::from(ticks) * 1_000_000_000 / u128::from(self.clk_tck);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// All numeric entries of the root (tgids), sorted.
    pub fn pids(&self) -> Result<Vec<u32>, ProcError> {
        let io_err = |source| ProcError::Io {
            path: self.root.clone(),
            source,
        };
        let mut pids = numeric_entries(&self.root).map_err(io_err)?;
        pids.sort_unstable();
        Ok(pids)
    }

    /// /proc/PID/stat plus the resident size from /proc/PID/statm.
    pub fn process(&self, pid: u32) -> Result<ProcessStat, ProcError> {
        let mut stat = self.stat(pid)?;
        let (path, text) = self.read_pid_file(pid, "statm")?;
        let resident: u64 = parse_field(&path, "resident", text.split_whitespace().nth(1))?;
        stat.rss_bytes = resident
            .checked_mul(self.page_size)
            .ok_or_else(|| invalid(&path, "resident", resident.to_string()))?;
        Ok(stat)
    }

    /// Number of entries in /proc/PID/fd.
    pub fn open_fds(&self, pid: u32) -> Result<u64, ProcError> {
        let path = self.pid_dir(pid).join("fd");
        let entries = fs::read_dir(&path).map_err(|e| pid_io_error(pid, &path, e))?;
        let mut count = 0;
        for entry in entries {
            entry.map_err(|e| pid_io_error(pid, &path, e))?;
            count += 1;
        }
        Ok(count)
    }

    /// Tids from /proc/PID/task, sorted.
    pub fn threads(&self, pid: u32) -> Result<Vec<u32>, ProcError> {
        let path = self.pid_dir(pid).join("task");
        let mut tids = numeric_entries(&path).map_err(|e| pid_io_error(pid, &path, e))?;
        tids.sort_unstable();
        Ok(tids)
    }

    /// First field of /proc/PID/task/TID/schedstat: ns spent on CPU by that thread.
    pub fn thread_schedstat_ns(&self, pid: u32, tid: u32) -> Result<u64, ProcError> {
        let path = self
            .pid_dir(pid)
            .join("task")
            .join(tid.to_string())
            .join("schedstat");
        let text = read_lossy(&path).map_err(|e| {
            if is_gone(&e) {
                ProcError::ThreadVanished { pid, tid }
            } else {
                ProcError::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        parse_field(&path, "run_time", text.split_whitespace().next())
    }

    /// One thread's own fault counts, state and last CPU from /proc/PID/task/TID/stat (the
    /// process-level stat file also folds in threads that have exited).
    pub fn thread(&self, pid: u32, tid: u32) -> Result<ThreadStat, ProcError> {
        let path = self
            .pid_dir(pid)
            .join("task")
            .join(tid.to_string())
            .join("stat");
        let text = read_lossy(&path).map_err(|e| {
            if is_gone(&e) {
                ProcError::ThreadVanished { pid, tid }
            } else {
                ProcError::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let stat = parse_stat(&path, &text)?;
        let after_comm = &text[text.rfind(')').unwrap_or(0) + 1..];
        // Field 39 (processor) in proc(5) numbering; fields after comm start at 3.
        let processor = parse_field(
            &path,
            "processor",
            after_comm.split_whitespace().nth(39 - 3),
        )?;
        let flags: u64 = parse_field(&path, "flags", after_comm.split_whitespace().nth(9 - 3))?;
        Ok(ThreadStat {
            tid,
            state: stat.state,
            minflt: stat.minflt,
            majflt: stat.majflt,
            processor,
            exiting: flags & PF_EXITING != 0,
        })
    }

    /// Peak RSS from /proc/PID/status, and the context switches of the leader thread alone (the
    /// kernel keeps them per thread: see `switches`).
    pub fn status(&self, pid: u32) -> Result<ProcessStatus, ProcError> {
        let (path, text) = self.read_pid_file(pid, "status")?;
        parse_status(&path, &text)
    }

    /// Context switches of every live thread of PID, each from its own
    /// /proc/PID/task/TID/status, as (tid, voluntary, involuntary). The process-level status
    /// file shows the leader's alone.
    pub fn thread_switches(&self, pid: u32) -> Result<Vec<(u32, u64, u64)>, ProcError> {
        let mut out = Vec::new();
        for tid in self.threads(pid)? {
            let path = self
                .pid_dir(pid)
                .join("task")
                .join(tid.to_string())
                .join("status");
            let text = match read_lossy(&path) {
                Ok(text) => text,
                Err(e) if is_gone(&e) => continue,
                Err(source) => return Err(ProcError::Io { path, source }),
            };
            let s = parse_status(&path, &text)?;
            out.push((tid, s.voluntary_ctxt_switches, s.nonvoluntary_ctxt_switches));
        }
        Ok(out)
    }

    /// MemTotal in bytes from /proc/meminfo.    /// MemTotal in bytes from /proc/meminfo.
    pub fn mem_total_bytes(&self) -> Result<u64, ProcError> {
        let path = self.root.join("meminfo");
        let text = read_lossy(&path).map_err(|source| ProcError::Io {
            path: path.clone(),
            source,
        })?;
        let value = status_value(&text, "MemTotal").ok_or_else(|| ProcError::Missing {
            path: path.clone(),
            field: "MemTotal",
        })?;
        parse_kb(&path, "MemTotal", value)
    }

    /// /proc/PID/cgroup as text, with the path of that file (parsed by `collect::cgroup`).
    pub fn cgroup_file(&self, pid: u32) -> Result<(PathBuf, String), ProcError> {
        self.read_pid_file(pid, "cgroup")
    }

    /// /proc/PID/mountinfo as text, with its path: the mount table of PID's mount namespace.
    pub fn mountinfo(&self, pid: u32) -> Result<(PathBuf, String), ProcError> {
        self.read_pid_file(pid, "mountinfo")
    }

    /// /proc/self/mountinfo as text, with its path: the mounts this process sees.
    pub fn own_mountinfo(&self) -> Result<(PathBuf, String), ProcError> {
        let path = self.root.join("self/mountinfo");
        let text = read_lossy(&path).map_err(|source| ProcError::Io {
            path: path.clone(),
            source,
        })?;
        Ok((path, text))
    }

    /// /proc/PID/root: PID's root directory, through which its mount namespace's paths are
    /// reached.
    pub fn root_of(&self, pid: u32) -> PathBuf {
        self.pid_dir(pid).join("root")
    }

    /// The CPUs PID's main thread may run on (`Cpus_allowed_list` of /proc/PID/status, the
    /// affinity mask within its cpuset), as the kernel's list text with the file's path.
    pub fn cpus_allowed_list(&self, pid: u32) -> Result<(PathBuf, String), ProcError> {
        let (path, text) = self.read_pid_file(pid, "status")?;
        let list = status_value(&text, "Cpus_allowed_list")
            .ok_or_else(|| ProcError::Missing {
                path: path.clone(),
                field: "Cpus_allowed_list",
            })?
            .to_owned();
        Ok((path, list))
    }

    /// Descendants of `root` (children, grandchildren, ...) by walking ppid
    /// links, excluding `root` itself. Processes that vanish mid-walk are
    /// skipped; `root` vanishing is reported, since then there is nothing to
    /// attribute descendants to.
    pub fn descendants(&self, root: u32) -> Result<Vec<u32>, ProcError> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut root_seen = false;
        for pid in self.pids()? {
            match self.stat(pid) {
                Ok(stat) => {
                    root_seen |= pid == root;
                    children.entry(stat.ppid).or_default().push(pid);
                }
                Err(e) if e.is_vanished() => {}
                Err(e) => return Err(e),
            }
        }
        if !root_seen {
            return Err(ProcError::Vanished { pid: root });
        }

        // The visited set guards against ppid cycles, which a live kernel
        // never produces but a corrupt fixture or pid reuse mid-scan could.
        let mut visited = HashSet::from([root]);
        let mut queue = VecDeque::from([root]);
        let mut out = Vec::new();
        while let Some(parent) = queue.pop_front() {
            for &child in children.get(&parent).into_iter().flatten() {
                if visited.insert(child) {
                    out.push(child);
                    queue.push_back(child);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Every live tgid whose /proc/PID/comm equals `name`. The kernel truncates
    /// comm to 15 bytes, so longer names never match. Zombies are left out: they have exited,
    /// and joining one again would count its whole life a second time.
    pub fn pids_by_comm(&self, name: &str) -> Result<Vec<u32>, ProcError> {
        let mut out = Vec::new();
        for pid in self.pids()? {
            match self.read_pid_file(pid, "comm") {
                Ok((_, comm)) if comm.trim_end_matches('\n') == name => match self.stat(pid) {
                    Ok(stat) if !stat.has_exited() => out.push(pid),
                    Ok(_) => {}
                    Err(e) if e.is_vanished() => {}
                    Err(e) => return Err(e),
                },
                Ok(_) => {}
                Err(e) if e.is_vanished() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    fn read_pid_file(&self, pid: u32, name: &str) -> Result<(PathBuf, String), ProcError> {
        let path = self.pid_dir(pid).join(name);
        let text = read_lossy(&path).map_err(|e| pid_io_error(pid, &path, e))?;
        Ok((path, text))
    }

    /// /proc/PID/stat alone, with rss_bytes left at zero.
    fn stat(&self, pid: u32) -> Result<ProcessStat, ProcError> {
        let (path, text) = self.read_pid_file(pid, "stat")?;
        parse_stat(&path, &text)
    }
}

impl ProcessStat {
    /// A zombie (or one being reaped): every thread has exited, only its exit status is left.
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn parse_stat(path: &Path, text: &str) -> Result<ProcessStat, ProcError> {
    // comm is arbitrary user-chosen bytes and may itself contain ") ", so
    // the only reliable delimiters are the first '(' and the last ')'.
    let open = text.find('(').ok_or_else(|| ProcError::Missing {
        path: path.to_owned(),
        field: "comm",
    })?;
    let close = text
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| ProcError::Missing {
            path: path.to_owned(),
            field: "comm",
        })?;
    let pid = parse_field(path, "pid", Some(text[..open].trim()))?;
    let comm = text[open + 1..close].to_owned();

    // fields[0] is field 3 (state) in proc(5) numbering.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let num = |n: usize, name: &'static str| -> Result<u64, ProcError> {
        parse_field(path, name, field(n))
    };

    let state_str = field(3).ok_or_else(|| ProcError::Missing {
        path: path.to_owned(),
        field: "state",
    })?;
    let mut chars = state_str.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(invalid(path, "state", state_str.to_owned())),
    };

    Ok(ProcessStat {
        pid,
        comm,
        state,
        ppid: parse_field(path, "ppid", field(4))?,
        minflt: num(10, "minflt")?,
        cminflt: num(11, "cminflt")?,
        majflt: num(12, "majflt")?,
        cmajflt: num(13, "cmajflt")?,
        utime_ticks: num(14, "utime")?,
        stime_ticks: num(15, "stime")?,
        cutime_ticks: num(16, "cutime")?,
        cstime_ticks: num(17, "cstime")?,
        num_threads: num(20, "num_threads")?,
        start_time_ticks: num(22, "starttime")?,
        vsize_bytes: num(23, "vsize")?,
        rss_bytes: 0,
    })
}

/// The switch counts and peak RSS of a status file (/proc/PID/status or a thread's).
fn parse_status(path: &Path, text: &str) -> Result<ProcessStatus, ProcError> {
    let voluntary_ctxt_switches = parse_field(
        path,
        "voluntary_ctxt_switches",
        status_value(text, "voluntary_ctxt_switches"),
    )?;
    let nonvoluntary_ctxt_switches = parse_field(
        path,
        "nonvoluntary_ctxt_switches",
        status_value(text, "nonvoluntary_ctxt_switches"),
    )?;
    let vm_hwm_bytes = match status_value(text, "VmHWM") {
        Some(value) => parse_kb(path, "VmHWM", value)?,
        None => 0,
    };
    Ok(ProcessStatus {
        voluntary_ctxt_switches,
        nonvoluntary_ctxt_switches,
        vm_hwm_bytes,
    })
}

/// The value after "Key:" in a status-style file (status, meminfo).
fn status_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// A "1234 kB" value in bytes.
fn parse_kb(path: &Path, field: &'static str, value: &str) -> Result<u64, ProcError> {
    let number = match value.split_whitespace().collect::<Vec<_>>()[..] {
        [n, "kB"] => n,
        _ => return Err(invalid(path, field, value.to_owned())),
    };
    let kb: u64 = parse_field(path, field, Some(number))?;
    kb.checked_mul(1024)
        .ok_or_else(|| invalid(path, field, value.to_owned()))
}

fn parse_field<T: std::str::FromStr>(
    path: &Path,
    field: &'static str,
    value: Option<&str>,
) -> Result<T, ProcError> {
    let value = value.ok_or_else(|| ProcError::Missing {
        path: path.to_owned(),
        field,
    })?;
    value
        .parse()
        .map_err(|_| invalid(path, field, value.to_owned()))
}

fn invalid(path: &Path, field: &'static str, value: String) -> ProcError {
    ProcError::Invalid {
        path: path.to_owned(),
        field,
        value,
    }
}

fn is_gone(e: &io::Error) -> bool {
    // ESRCH comes from reading a file whose task exited after the open.
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn pid_io_error(pid: u32, path: &Path, e: io::Error) -> ProcError {
    if is_gone(&e) {
        ProcError::Vanished { pid }
    } else {
        ProcError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// comm is not guaranteed UTF-8, so a strict read would fail on some tasks.
fn read_lossy(path: &Path) -> io::Result<String> {
    let bytes = fs::read(path)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn numeric_entries(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    Ok(out)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::write;
    use tempfile::TempDir;

    /// A stat line in the kernel's format with the given identity and ppid.
    fn stat_line(pid: u32, comm: &str, ppid: u32) -> String {
        format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 \
             110 220 3 4 500 60 7 8 20 0 3 0 12345 104857600 \
             321 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    fn fixture() -> (TempDir, ProcFs) {
        let dir = TempDir::new().unwrap();
        let fs = ProcFs::with_units(dir.path(), 4096, 100);
        (dir, fs)
    }

    #[test]
    fn stat_with_weird_comm() {
        let (dir, procfs) = fixture();
        write(dir.path(), "42/stat", &stat_line(42, "my (weird) app", 7));
        write(dir.path(), "42/statm", "25600 321 100 10 0 500 0\n");

        let stat = procfs.process(42).unwrap();
        assert_eq!(
            stat,
            ProcessStat {
                pid: 42,
                comm: "my (weird) app".into(),
                state: 'S',
                ppid: 7,
                minflt: 110,
                cminflt: 220,
                majflt: 3,
                cmajflt: 4,
                utime_ticks: 500,
                stime_ticks: 60,
                cutime_ticks: 7,
                cstime_ticks: 8,
                num_threads: 3,
                start_time_ticks: 12345,
                vsize_bytes: 104_857_600,
                rss_bytes: 321 * 4096,
            }
        );
    }

    #[test]
    fn stat_comm_with_close_paren_space() {
        let (dir, procfs) = fixture();
        write(dir.path(), "9/stat", &stat_line(9, ") S 1 (", 3));
        write(dir.path(), "9/statm", "1 2\n");
        let stat = procfs.process(9).unwrap();
        assert_eq!(stat.comm, ") S 1 (");
        assert_eq!(stat.ppid, 3);
        assert_eq!(stat.rss_bytes, 2 * 4096);
    }

    #[test]
    fn malformed_stat_names_file_and_field() {
        let (dir, procfs) = fixture();
        write(dir.path(), "5/stat", "5 (x) S notanumber 1 1\n");
        write(dir.path(), "5/statm", "1 2\n");
        let err = procfs.process(5).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("5/stat"), "{msg}");
        assert!(msg.contains("ppid"), "{msg}");

        write(dir.path(), "6/stat", "6 (x) S 1 1 1\n");
        let msg = procfs.process(6).unwrap_err().to_string();
        assert!(
            msg.contains("6/stat") && msg.contains("missing minflt"),
            "{msg}"
        );

        write(dir.path(), "7/stat", "garbage");
        let msg = procfs.process(7).unwrap_err().to_string();
        assert!(msg.contains("7/stat") && msg.contains("comm"), "{msg}");
    }

    #[test]
    fn malformed_statm_names_file() {
        let (dir, procfs) = fixture();
        write(dir.path(), "5/stat", &stat_line(5, "x", 1));
        write(dir.path(), "5/statm", "1\n");
        let msg = procfs.process(5).unwrap_err().to_string();
        assert!(msg.contains("5/statm") && msg.contains("resident"), "{msg}");
    }

    #[test]
    fn vanished_pid() {
        let (_dir, procfs) = fixture();
        for err in [
            procfs.process(77).unwrap_err(),
            procfs.status(77).unwrap_err(),
            procfs.open_fds(77).unwrap_err(),
            procfs.threads(77).unwrap_err(),
            procfs.cgroup_file(77).unwrap_err(),
            procfs.mountinfo(77).unwrap_err(),
            procfs.cpus_allowed_list(77).unwrap_err(),
        ] {
            assert!(matches!(err, ProcError::Vanished { pid: 77 }), "{err:?}");
            assert_eq!(err.to_string(), "process 77 vanished");
        }
        let err = procfs.thread_schedstat_ns(77, 78).unwrap_err();
        assert!(matches!(
            err,
            ProcError::ThreadVanished { pid: 77, tid: 78 }
        ));
        assert!(err.is_vanished());
    }

    #[test]
    fn non_vanish_io_error_is_io() {
        let (dir, procfs) = fixture();
        // A directory where a file is expected gives EISDIR, not a vanish.
        fs::create_dir_all(dir.path().join("3/status")).unwrap();
        let err = procfs.status(3).unwrap_err();
        assert!(matches!(err, ProcError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("3/status"));
    }

    #[test]
    fn status_fields() {
        let (dir, procfs) = fixture();
        write(
            dir.path(),
            "10/status",
            "Name:\tapp\nTgid:\t10\nPid:\t10\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\n\
             Threads:\t1\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n",
        );
        assert_eq!(
            procfs.status(10).unwrap(),
            ProcessStatus {
                voluntary_ctxt_switches: 150,
                nonvoluntary_ctxt_switches: 7,
                vm_hwm_bytes: 2048 * 1024,
            }
        );

        // Kernel threads have no memory lines.
        write(
            dir.path(),
            "2/status",
            "Name:\tkthreadd\nvoluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t0\n",
        );
        assert_eq!(procfs.status(2).unwrap().vm_hwm_bytes, 0);

        write(
            dir.path(),
            "11/status",
            "VmHWM:\t12 MB\nvoluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t0\n",
        );
        let msg = procfs.status(11).unwrap_err().to_string();
        assert!(msg.contains("11/status") && msg.contains("VmHWM"), "{msg}");

        write(dir.path(), "12/status", "Name:\tx\n");
        let msg = procfs.status(12).unwrap_err().to_string();
        assert!(msg.contains("missing voluntary_ctxt_switches"), "{msg}");
    }

    #[test]
    fn meminfo_total() {
        let (dir, procfs) = fixture();
        write(
            dir.path(),
            "meminfo",
            "MemTotal:       16384000 kB\nMemFree:         1000 kB\n",
        );
        assert_eq!(procfs.mem_total_bytes().unwrap(), 16_384_000 * 1024);

        write(dir.path(), "meminfo", "MemFree: 1 kB\n");
        let msg = procfs.mem_total_bytes().unwrap_err().to_string();
        assert!(msg.contains("meminfo") && msg.contains("MemTotal"), "{msg}");
    }

    #[test]
    fn meminfo_missing_is_io_not_vanished() {
        let (_dir, procfs) = fixture();
        assert!(matches!(
            procfs.mem_total_bytes().unwrap_err(),
            ProcError::Io { .. }
        ));
    }

    #[test]
    fn threads_and_schedstat() {
        let (dir, procfs) = fixture();
        write(dir.path(), "20/task/20/schedstat", "123456789 1000 42\n");
        write(dir.path(), "20/task/21/schedstat", "5 0 1\n");
        write(dir.path(), "20/task/bogus", "");
        assert_eq!(procfs.threads(20).unwrap(), vec![20, 21]);
        assert_eq!(procfs.thread_schedstat_ns(20, 20).unwrap(), 123_456_789);
        assert_eq!(procfs.thread_schedstat_ns(20, 21).unwrap(), 5);

        write(dir.path(), "20/task/22/schedstat", "\n");
        let msg = procfs.thread_schedstat_ns(20, 22).unwrap_err().to_string();
        assert!(
            msg.contains("22/schedstat") && msg.contains("run_time"),
            "{msg}"
        );
    }

    #[test]
    fn open_fds_counts_entries() {
        let (dir, procfs) = fixture();
        for fd in ["0", "1", "2", "5"] {
            write(dir.path(), &format!("50/fd/{fd}"), "");
        }
        assert_eq!(procfs.open_fds(50).unwrap(), 4);
    }

    #[test]
    fn pids_ignores_non_numeric() {
        let (dir, procfs) = fixture();
        for rel in ["3/stat", "1/stat", "self/stat", "meminfo", "200/stat"] {
            write(dir.path(), rel, "");
        }
        assert_eq!(procfs.pids().unwrap(), vec![1, 3, 200]);
    }

    #[test]
    fn cpus_allowed_list_is_the_affinity_line() {
        let (dir, procfs) = fixture();
        write(
            dir.path(),
            "1/status",
            "Name:\tw\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n",
        );
        assert_eq!(procfs.cpus_allowed_list(1).unwrap().1, "0-1");
        write(dir.path(), "2/status", "Name:\tw\n");
        let msg = procfs.cpus_allowed_list(2).unwrap_err().to_string();
        assert!(
            msg.contains("2/status") && msg.contains("Cpus_allowed_list"),
            "{msg}"
        );
    }

    #[test]
    fn descendants_three_levels() {
        let (dir, procfs) = fixture();
        // 1 -> 10 -> {11, 12}, 11 -> 13; 20 is unrelated; 14 vanished mid-walk.
        for (pid, ppid) in [(1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1)] {
            write(
                dir.path(),
                &format!("{pid}/stat"),
                &stat_line(pid, "p", ppid),
            );
        }
        fs::create_dir_all(dir.path().join("14")).unwrap();

        assert_eq!(procfs.descendants(10).unwrap(), vec![11, 12, 13]);
        assert_eq!(procfs.descendants(11).unwrap(), vec![13]);
        assert!(procfs.descendants(13).unwrap().is_empty());
        assert_eq!(procfs.descendants(1).unwrap(), vec![10, 11, 12, 13, 20]);
        assert!(matches!(
            procfs.descendants(99).unwrap_err(),
            ProcError::Vanished { pid: 99 }
        ));
    }

    #[test]
    fn descendants_survives_ppid_cycle() {
        let (dir, procfs) = fixture();
        write(dir.path(), "5/stat", &stat_line(5, "a", 6));
        write(dir.path(), "6/stat", &stat_line(6, "b", 5));
        assert_eq!(procfs.descendants(5).unwrap(), vec![6]);
    }

    #[test]
    fn pids_by_comm_matches_exactly() {
        let (dir, procfs) = fixture();
        for (pid, comm) in [(1, "nginx"), (2, "nginx-worker"), (3, "nginx")] {
            write(dir.path(), &format!("{pid}/comm"), &format!("{comm}\n"));
            write(dir.path(), &format!("{pid}/stat"), &stat_line(pid, comm, 1));
        }
        fs::create_dir_all(dir.path().join("4")).unwrap();
        assert_eq!(procfs.pids_by_comm("nginx").unwrap(), vec![1, 3]);
        assert!(procfs.pids_by_comm("absent").unwrap().is_empty());
    }

    #[test]
    fn pids_by_comm_leaves_zombies_out() {
        let (dir, procfs) = fixture();
        write(dir.path(), "7/comm", "app\n");
        write(
            dir.path(),
            "7/stat",
            &stat_line(7, "app", 1).replacen(" S ", " Z ", 1),
        );
        write(dir.path(), "8/comm", "app\n");
        write(dir.path(), "8/stat", &stat_line(8, "app", 1));
        assert_eq!(procfs.pids_by_comm("app").unwrap(), vec![8]);
    }

    #[test]
    fn switches_are_read_per_thread() {
        let (dir, procfs) = fixture();
        let status = |vol: u64, invol: u64| {
            format!(
                "Name:\tw\nvoluntary_ctxt_switches:\t{vol}\nnonvoluntary_ctxt_switches:\t{invol}\n"
            )
        };
        write(dir.path(), "5/status", &status(1, 2));
        write(dir.path(), "5/task/5/status", &status(1, 2));
        write(dir.path(), "5/task/6/status", &status(30, 40));
        // A thread that exited between the listing and the read is skipped.
        fs::create_dir_all(dir.path().join("5/task/9")).unwrap();
        assert_eq!(
            procfs.thread_switches(5).unwrap(),
            vec![(5, 1, 2), (6, 30, 40)]
        );
    }

    #[test]
    fn ticks_conversion() {
        let procfs = ProcFs::with_units("/nonexistent", 4096, 100);
        assert_eq!(procfs.ticks_to_ns(150), 1_500_000_000);
        assert_eq!(procfs.ticks_to_ns(u64::MAX), u64::MAX);
        // A zero tick rate is treated as 1 rather than dividing by zero.
        let zero = ProcFs::with_units("/nonexistent", 4096, 0);
        assert_eq!(zero.ticks_to_ns(2), 2_000_000_000);
    }

    #[test]
    fn smoke_real_proc_self() {
        let procfs = ProcFs::system();
        let pid = std::process::id();
        let stat = procfs.process(pid).unwrap();
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(stat.pid, pid);
        assert_eq!(stat.comm, comm.trim_end_matches('\n'));
        assert!(stat.rss_bytes > 0);
        assert!(procfs.pids().unwrap().contains(&pid));
        assert!(procfs.threads(pid).unwrap().contains(&pid));
        assert!(procfs.status(pid).unwrap().vm_hwm_bytes > 0);
        assert!(procfs.open_fds(pid).unwrap() >= 1);
        assert!(procfs.mem_total_bytes().unwrap() > 0);
        // This thread is running while it reads its own stat file, and has faulted: pages of a
        // fresh anonymous mapping (not recycled heap) fault on first write.
        let len = 16 * 4096;
        // SAFETY: a new private anonymous mapping, written within its length, then unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            for off in (0..len).step_by(4096) {
                p.cast::<u8>().add(off).write_volatile(1);
            }
            libc::munmap(p, len);
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let me = procfs.thread(pid, tid).unwrap();
        assert_eq!(me.state, 'R');
        assert!(me.minflt > 0);
        assert!(me.processor < 4096);
    }
}
