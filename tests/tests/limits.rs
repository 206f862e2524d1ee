//! Limits end to end, on the machine's real cgroup hierarchy (v1 on the development host, v2
//! in the VM matrix): a workload in a memory cgroup with a limit and a cpu cgroup with a
//! quota is measured against them, the limits follow a resize in place, HighMemory fires past
//! 80 % of the cgroup's limit, and a workload pinned with taskset has one CPU.
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;

const MIB: u64 = 1 << 20;

/// The hierarchy the test's cgroups are made in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    V1,
    V2,
}

impl Layout {
    fn source(self) -> &'static str {
        match self {
            Self::V1 => "cgroup_v1",
            Self::V2 => "cgroup_v2",
        }
    }
}

/// A memory cgroup `parent/leaf` and a cpu cgroup (the same directory on v2), removed on drop.
struct TestCgroups {
    layout: Layout,
    /// The memory hierarchy's parent and leaf directories.
    memory: [PathBuf; 2],
    /// The cpu hierarchy's parent and leaf directories (the same as `memory` on v2).
    cpu: [PathBuf; 2],
}

/// The mount point of the first mount in /proc/self/mountinfo of `fstype` whose super options
/// include `option` (any, when None).
fn mount_point(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let ok = fields[dash + 1] == fstype
            && option.is_none_or(|o| fields[dash + 3].split(',').any(|x| x == o));
        ok.then(|| PathBuf::from(fields[4]))
    })
}

impl TestCgroups {
    /// Under the v1 memory and cpu hierarchies when the host has them, else under cgroup v2
    /// with the memory, cpu and cpuset controllers enabled for the root's children.
    fn create(name: &str) -> Self {
        require_root();
        let top = format!("monitor-test-{}-{name}", std::process::id());
        let (layout, memory_root, cpu_root) = match (
            mount_point("cgroup", Some("memory")),
            mount_point("cgroup", Some("cpu")),
        ) {
            (Some(m), Some(c)) => (Layout::V1, m, c),
            _ => {
                let root = mount_point("cgroup2", None).expect(
                    "this test needs the memory and cpu controllers: neither cgroup v1 hierarchies \
                     nor a cgroup2 mount are in /proc/self/mountinfo",
                );
                let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap();
                for c in ["memory", "cpu"] {
                    assert!(
                        available.split_whitespace().any(|a| a == c),
                        "the {c} controller is not available on {} ({available:?}): it is bound \
                         to a v1 hierarchy that is not mounted, or the kernel lacks it",
                        root.display()
                    );
                }
                fs::write(root.join("cgroup.subtree_control"), "+memory +cpu")
                    .expect("enabling memory and cpu for the root's children");
                (Layout::V2, root.clone(), root)
            }
        };
        let memory = [memory_root.join(&top), memory_root.join(&top).join("leaf")];
        let cpu = [cpu_root.join(&top), cpu_root.join(&top).join("leaf")];
        let cg = Self {
            layout,
            memory,
            cpu,
        };
        for dir in cg.memory.iter().chain(&cg.cpu) {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        if layout == Layout::V2 {
            // The leaf's own limits need the controllers enabled in its parent too.
            fs::write(cg.memory[0].join("cgroup.subtree_control"), "+memory +cpu").unwrap();
        }
        cg
    }

    fn write(&self, path: &Path, value: &str) {
        fs::write(path, value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
    }

    /// The memory limit on the parent (`None`: unlimited), so the leaf is limited by an ancestor.
    fn limit_memory(&self, bytes: Option<u64>) {
        let (file, value) = match (self.layout, bytes) {
            (Layout::V1, Some(b)) => ("memory.limit_in_bytes", b.to_string()),
            (Layout::V1, None) => ("memory.limit_in_bytes", "-1".into()),
            (Layout::V2, Some(b)) => ("memory.max", b.to_string()),
            (Layout::V2, None) => ("memory.max", "max".into()),
        };
        self.write(&self.memory[0].join(file), &value);
    }

    /// A CFS quota on the leaf, over a 100 ms period.
    fn limit_cpu(&self, quota_us: u64) {
        match self.layout {
            Layout::V1 => {
                self.write(&self.cpu[1].join("cpu.cfs_period_us"), "100000");
                self.write(&self.cpu[1].join("cpu.cfs_quota_us"), &quota_us.to_string());
            }
            Layout::V2 => self.write(&self.cpu[1].join("cpu.max"), &format!("{quota_us} 100000")),
        }
    }

    /// Moves `pid` into the leaves.
    fn add(&self, pid: u32) {
        self.write(&self.memory[1].join("cgroup.procs"), &pid.to_string());
        if self.cpu[1] != self.memory[1] {
            self.write(&self.cpu[1].join("cgroup.procs"), &pid.to_string());
        }
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        // Leaves first; a process killed just before may take a moment to leave.
        let mut dirs = vec![&self.memory[1], &self.memory[0]];
        if self.cpu[1] != self.memory[1] {
            dirs.extend([&self.cpu[1], &self.cpu[0]]);
        }
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(e) = fs::remove_dir(dir) {
                if e.kind() == std::io::ErrorKind::NotFound || Instant::now() > deadline {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        eprintln!("leaving {} behind: {e}", dir.display());
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The `source` labels `name` is exported with, and the values.
fn series(d: &Daemon, name: &str) -> Vec<(String, f64)> {
    let text = d.metrics_text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => Some((s.labels.get("source")?.to_owned(), v)),
            _ => None,
        })
        .collect()
}

fn wait_for_series(d: &Daemon, name: &str, want: &[(&str, f64)]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = series(d, name);
        let matches = got.len() == want.len()
            && want
                .iter()
                .all(|(s, v)| got.iter().any(|(gs, gv)| gs == s && (gv - v).abs() < 1e-6));
        if matches {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: want {want:?}, the daemon exports {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A "KEY: N kB" line of a /proc file, in bytes.
fn kb_line(path: &str, key: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {path}"));
    kb * 1024
}

fn mem_total_bytes() -> u64 {
    kb_line("/proc/meminfo", "MemTotal")
}

fn rss_bytes(pid: u32) -> u64 {
    kb_line(&format!("/proc/{pid}/status"), "VmRSS")
}

#[test]
fn memory_and_cpu_percent_are_against_the_cgroup_limits_and_follow_a_resize() {
    let cg = TestCgroups::create("limits");
    let limit = 256 * MIB;
    cg.limit_memory(Some(limit));
    cg.limit_cpu(50_000);
    let mut w = Workload::start(&workload_bin(), &["serve"]);
    cg.add(w.pid());
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--name", "limited"]);
    w.release();

    // The limits set, from the parent (memory) and the leaf (cpu).
    let source = cg.layout.source();
    wait_for_series(&d, "app_memory_limit_bytes", &[(source, limit as f64)]);
    wait_for_series(&d, "app_cpu_limit_cores", &[(source, 0.5)]);

    // Memory %: the workload's own resident memory against 256 MiB.
    let held = w.command("hold --mib 100");
    assert!(held["work"]["rss_bytes"].as_u64().unwrap() >= 100 * MIB);
    let percent = d.settled("app_memory_usage_percent", &[("target", "limited")]);
    let truth = 100.0 * rss_bytes(w.pid()) as f64 / limit as f64;
    assert_within("app_memory_usage_percent", percent, truth, 0.02);

    // CPU %: a spin the quota holds to half a core is 100 % of what the target may use
    // (against the host's CPUs it would read 25 % on two).
    let spin = w.command("spin --millis 3000");
    // The reports' on-CPU time is the process's since it started: the hold's page faults are
    // in it (over a second under an emulated CPU).
    let oncpu_s =
        (spin["oncpu_truth_ns"].as_f64().unwrap() - held["oncpu_truth_ns"].as_f64().unwrap()) / 1e9;
    assert!(
        (1.0..=2.0).contains(&oncpu_s),
        "the quota did not hold the spin to half a core: {oncpu_s:.2} s on-CPU in 3 s"
    );
    let peak = d
        .value("app_cpu_usage_percent_peak", &[("target", "limited")])
        .unwrap();
    // The quota is 50 ms per 100 ms period, and a 300 ms sample can hold the runtime of four
    // periods (the end of one, two whole, the start of the next): up to 200 ms, 133 % of the
    // limit, and more when the sample comes early. Against the host's two CPUs the same spin
    // would peak at a third of that.
    assert!(
        (80.0..=150.0).contains(&peak),
        "a spin under a 0.5-core quota peaked at {peak:.1} % of the limit"
    );

    // Resized in place: the new limit within a cadence; unlimited, the host's, and the old
    // source's series gone.
    cg.limit_memory(Some(512 * MIB));
    wait_for_series(
        &d,
        "app_memory_limit_bytes",
        &[(source, (512 * MIB) as f64)],
    );
    cg.limit_memory(None);
    wait_for_series(
        &d,
        "app_memory_limit_bytes",
        &[("host", mem_total_bytes() as f64)],
    );
    w.finish();
}

#[test]
fn high_memory_fires_past_80_percent_of_the_cgroup_limit() {
    let cg = TestCgroups::create("high");
    let limit = 200 * MIB;
    cg.limit_memory(Some(limit));
    let mut w = Workload::start(&workload_bin(), &["serve"]);
    cg.add(w.pid());
    let d = Daemon::start(&["--pid", &w.pid().to_string()], &["--name", "filling"]);
    w.release();
    wait_for_series(
        &d,
        "app_memory_limit_bytes",
        &[(cg.layout.source(), limit as f64)],
    );

    // 170 MiB of 200: past HighMemory's 80 %, short of CriticalMemory's 90 % (the binary and
    // its heap add a few MiB).
    w.command("hold --mib 170");
    let percent = 100.0 * rss_bytes(w.pid()) as f64 / limit as f64;
    assert!(
        (80.5..90.0).contains(&percent),
        "the workload holds {percent:.1} % of its limit, not between the two thresholds"
    );
    // HighMemory holds for 30 s before it fires.
    let deadline = Instant::now() + Duration::from_secs(50);
    loop {
        let firing = d.value(
            "monitor_alerts_firing",
            &[("alertname", "HighMemory"), ("severity", "warning")],
        );
        if firing == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HighMemory did not fire at {percent:.1} % of the cgroup limit; the daemon serves:\n{}",
            d.metrics_text()
                .lines()
                .filter(|l| l.starts_with("app_memory") || l.starts_with("monitor_alerts"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        d.value("monitor_alerts_firing", &[("alertname", "CriticalMemory")]),
        None
    );
    w.finish();
}

#[test]
fn a_workload_pinned_with_taskset_has_one_cpu() {
    require_root();
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_ne!(
        online.trim(),
        "0",
        "this test needs two CPUs or more: pinned to one, a one-CPU host is its own limit"
    );
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(workload_bin())
        .args(["--linger", "spin", "--millis", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running taskset (util-linux)");
    let d = Daemon::start(&["--pid", &child.id().to_string()], &[]);
    wait_for_series(&d, "app_cpu_limit_cores", &[("cpuset", 1.0)]);
    let _ = child.kill();
    let _ = child.wait();
}
