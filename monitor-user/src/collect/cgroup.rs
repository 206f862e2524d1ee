//! Where a process's cgroups are. For each controller a limit comes from (memory, cpu,
//! cpuset): which hierarchy holds it (cgroup v1, or v2 for every controller no v1 hierarchy
//! has, which covers hybrid hosts) and the directories from the top of that hierarchy down to
//! the process's own cgroup, found from /proc/PID/cgroup and a mount table.
//!
//! /proc/PID/cgroup gives paths relative to the reader's cgroup namespace, and mountinfo's
//! root field is relative to the same, so a mount serves a path when its root is a prefix of
//! it. monitor's own mounts are tried first (on a host they show the whole hierarchy); then
//! the target's, reached through /proc/PID/root: that is how a target outside monitor's
//! cgroup namespace (a path starting with "/..") is still found when it mounts its own
//! cgroup tree. Found that way, only the part below the mount is visible, and `partial` says so.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::collect::procfs::{ProcError, ProcFs};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("parsing {}:{line}: {what}: {text:?}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        what: &'static str,
        text: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    Cpuset,
}

impl Controller {
    pub const ALL: [Self; 3] = [Self::Memory, Self::Cpu, Self::Cpuset];

    /// The name the kernel uses in /proc/PID/cgroup and in mount options.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::Cpuset => "cpuset",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One controller's cgroup of a process, found under a mount.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerDirs {
    pub version: Version,
    /// The path /proc/PID/cgroup gives.
    pub path: String,
    /// The directories from the top of what the mount shows down to the cgroup itself.
    pub dirs: Vec<PathBuf>,
    /// The mount's root is not the top of the hierarchy (a container's own view of its
    /// cgroups): ancestors above it, and their limits, may exist and cannot be read.
    pub partial: bool,
}

impl ControllerDirs {
    pub fn leaf(&self) -> &Path {
        // `locate` always puts the mount's own directory first.
        &self.dirs[self.dirs.len() - 1]
    }
}

/// A controller whose hierarchy the process is in, but that no mount we can reach shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreachable {
    pub controller: Controller,
    pub version: Version,
    pub path: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} cgroup {} ({}) is not under any cgroup mount in monitor's or the process's mount table",
            self.controller,
            self.path,
            match self.version {
                Version::V1 => "cgroup v1",
                Version::V2 => "cgroup v2",
            }
        )
    }
}

/// Where one process's cgroups are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub found: BTreeMap<Controller, ControllerDirs>,
    pub unreachable: Vec<Unreachable>,
}

impl Placement {
    pub fn get(&self, controller: Controller) -> Option<&ControllerDirs> {
        self.found.get(&controller)
    }
}

/// One line of /proc/PID/cgroup: a hierarchy, its controllers (empty for v2) and the path.
#[derive(Clone, Debug, PartialEq)]
struct Membership {
    version: Version,
    controllers: Vec<String>,
    path: String,
}

/// The fields of a mountinfo line that matter here.
#[derive(Clone, Debug, PartialEq)]
struct CgroupMount {
    version: Version,
    /// The subtree of the hierarchy the mount shows, relative to our cgroup namespace.
    root: String,
    mount_point: PathBuf,
    /// v1: the controllers (and `name=`) from the super options.
    options: Vec<String>,
}

/// Where PID's memory, cpu and cpuset cgroups are, from its /proc/PID/cgroup (`cgroup_file`,
/// path and text, as `ProcFs::cgroup_file` read it). `fs_root` is where monitor's own mount
/// points are ("/" in production, a fixture tree in tests).
pub fn locate(
    procfs: &ProcFs,
    fs_root: &Path,
    pid: u32,
    cgroup_file: (&Path, &str),
) -> Result<Placement, CgroupError> {
    let memberships = parse_cgroup_file(cgroup_file.0, cgroup_file.1)?;
    // A mount table that cannot be read is as good as one without cgroup mounts: the other
    // table may still serve, and what neither serves is reported as unreachable.
    let own = match procfs.own_mountinfo() {
        Ok((path, text)) => parse_mountinfo(&path, &text)?,
        Err(_) => Vec::new(),
    };
    let mut theirs: Option<Vec<CgroupMount>> = None;

    let mut placement = Placement::default();
    for controller in Controller::ALL {
        let Some(m) = membership_of(&memberships, controller) else {
            continue;
        };
        // A leaf that is not there (the process moved meanwhile, or the mount is not what its
        // line says) is not read as "no limit": the other table gets its chance.
        let exists = |d: &ControllerDirs| d.leaf().is_dir();
        let mut found = serving(&own, m, controller)
            .map(|mount| dirs_under(fs_root, mount, m))
            .filter(exists);
        if found.is_none() {
            if theirs.is_none() {
                theirs = Some(match procfs.mountinfo(pid) {
                    Ok((path, text)) => parse_mountinfo(&path, &text)?,
                    Err(e) if e.is_vanished() => return Err(e.into()),
                    Err(_) => Vec::new(),
                });
            }
            let their_root = procfs.root_of(pid);
            found = serving(theirs.as_deref().unwrap_or_default(), m, controller)
                .map(|mount| dirs_under(&their_root, mount, m))
                .filter(exists);
        }
        match found {
            Some(dirs) => {
                placement.found.insert(controller, dirs);
            }
            None => placement.unreachable.push(Unreachable {
                controller,
                version: m.version,
                path: m.path.clone(),
            }),
        }
    }
    Ok(placement)
}

/// The hierarchy that holds `controller` for this process: the v1 one that lists it, else the
/// unified one (a controller is bound to one hierarchy at a time).
fn membership_of(memberships: &[Membership], controller: Controller) -> Option<&Membership> {
    memberships
        .iter()
        .find(|m| m.version == Version::V1 && m.controllers.iter().any(|c| c == controller.name()))
        .or_else(|| memberships.iter().find(|m| m.version == Version::V2))
}

/// The mount of `m`'s hierarchy that shows the most of it and still contains `m.path`.
fn serving<'a>(
    mounts: &'a [CgroupMount],
    m: &Membership,
    controller: Controller,
) -> Option<&'a CgroupMount> {
    mounts
        .iter()
        .filter(|mount| mount.version == m.version)
        .filter(|mount| {
            m.version == Version::V2 || mount.options.iter().any(|o| o == controller.name())
        })
        .filter(|mount| strip_root(&mount.root, &m.path).is_some())
        .min_by_key(|mount| components(&mount.root).count())
}

fn dirs_under(base: &Path, mount: &CgroupMount, m: &Membership) -> ControllerDirs {
    let top = base.join(
        mount
            .mount_point
            .strip_prefix("/")
            .unwrap_or(&mount.mount_point),
    );
    let mut dirs = vec![top];
    for name in strip_root(&mount.root, &m.path).unwrap_or_default() {
        let next = dirs[dirs.len() - 1].join(name);
        dirs.push(next);
    }
    ControllerDirs {
        version: m.version,
        path: m.path.clone(),
        dirs,
        partial: components(&mount.root).next().is_some(),
    }
}

/// `path`'s components below `root`, when `root` is `path` or one of its ancestors. ".."
/// components (a path outside our cgroup namespace) are compared like names, which is what
/// both files mean by them.
fn strip_root<'a>(root: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut rest = components(path);
    for want in components(root) {
        if rest.next() != Some(want) {
            return None;
        }
    }
    let rest: Vec<&str> = rest.collect();
    // A ".." below the root would climb out of the mount.
    (!rest.contains(&"..")).then_some(rest)
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn parse_cgroup_file(path: &Path, text: &str) -> Result<Vec<Membership>, CgroupError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        // splitn keeps any ':' inside the path itself.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(cgroup)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CgroupError::Parse {
                path: path.to_owned(),
                line: i + 1,
                what: "not hierarchy-ID:controllers:path",
                text: line.to_owned(),
            });
        };
        let version = if id == "0" && controllers.is_empty() {
            Version::V2
        } else {
            Version::V1
        };
        out.push(Membership {
            version,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: cgroup.to_owned(),
        });
    }
    Ok(out)
}

/// The cgroup mounts of a mountinfo file (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNT_POINT
/// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS".
fn parse_mountinfo(path: &Path, text: &str) -> Result<Vec<CgroupMount>, CgroupError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what| CgroupError::Parse {
            path: path.to_owned(),
            line: i + 1,
            what,
            text: line.to_owned(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields
            .iter()
            .position(|f| *f == "-")
            .filter(|&d| d >= 6 && fields.len() >= d + 3)
            .ok_or_else(|| bad("not a mountinfo line"))?;
        let version = match fields[dash + 1] {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        out.push(CgroupMount {
            version,
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            options: fields[dash + 3].split(',').map(str::to_owned).collect(),
        });
    }
    Ok(out)
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes ("\040").
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::write;
    use std::fs;
    use tempfile::TempDir;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    struct Fixture {
        proc_dir: TempDir,
        fs_dir: TempDir,
    }

    impl Fixture {
        fn new(own_mounts: &str, cgroup_file: &str) -> Self {
            let fx = Self {
                proc_dir: TempDir::new().unwrap(),
                fs_dir: TempDir::new().unwrap(),
            };
            write(fx.proc_dir.path(), "self/mountinfo", own_mounts);
            write(fx.proc_dir.path(), "100/cgroup", cgroup_file);
            // No cgroup mount in the target's own namespace, unless a test gives it one.
            write(fx.proc_dir.path(), "100/mountinfo", "");
            fx
        }

        /// Makes the cgroup directories `rels` (under the fixture's root or /proc).
        fn dirs(&self, rels: &[&str]) -> &Self {
            for rel in rels {
                let base = if rel.starts_with("100/") {
                    self.proc_dir.path()
                } else {
                    self.fs_dir.path()
                };
                fs::create_dir_all(base.join(rel)).unwrap();
            }
            self
        }

        fn locate(&self) -> Result<Placement, CgroupError> {
            locate_pid(self, 100)
        }

        fn rel<'a>(&self, p: &'a Path) -> &'a Path {
            p.strip_prefix(self.fs_dir.path())
                .or_else(|_| p.strip_prefix(self.proc_dir.path()))
                .unwrap()
        }
    }

    fn locate_pid(fx: &Fixture, pid: u32) -> Result<Placement, CgroupError> {
        let procfs = ProcFs::with_units(fx.proc_dir.path(), 4096, 100);
        let (path, text) = procfs.cgroup_file(pid)?;
        locate(&procfs, fx.fs_dir.path(), pid, (&path, &text))
    }

    #[test]
    fn v1_controllers_each_in_their_own_mount_and_comounted_cpu() {
        let fx = Fixture::new(
            V1_MOUNTS,
            "9:name=systemd:/svc\n4:memory:/app/web\n3:cpuset:/\n2:cpu,cpuacct:/app\n0::/\n",
        );
        fx.dirs(&[
            "sys/fs/cgroup/memory/app/web",
            "sys/fs/cgroup/cpu,cpuacct/app",
            "sys/fs/cgroup/cpuset",
        ]);
        let p = fx.locate().unwrap();
        let memory = p.get(Controller::Memory).unwrap();
        assert_eq!(memory.version, Version::V1);
        let dirs: Vec<_> = memory.dirs.iter().map(|d| fx.rel(d)).collect();
        assert_eq!(
            dirs,
            [
                Path::new("sys/fs/cgroup/memory"),
                Path::new("sys/fs/cgroup/memory/app"),
                Path::new("sys/fs/cgroup/memory/app/web"),
            ]
        );
        assert!(!memory.partial);
        let cpu = p.get(Controller::Cpu).unwrap();
        assert_eq!(
            fx.rel(cpu.leaf()),
            Path::new("sys/fs/cgroup/cpu,cpuacct/app")
        );
        assert_eq!(
            fx.rel(p.get(Controller::Cpuset).unwrap().leaf()),
            Path::new("sys/fs/cgroup/cpuset")
        );
        assert!(p.unreachable.is_empty());
    }

    #[test]
    fn v2_holds_every_controller_no_v1_hierarchy_has() {
        // Hybrid: memory on v1, cpu and cpuset on the unified tree.
        let fx = Fixture::new(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n",
            "4:memory:/m\n0::/u/v\n",
        );
        fx.dirs(&["sys/fs/cgroup/memory/m", "sys/fs/cgroup/unified/u/v"]);
        let p = fx.locate().unwrap();
        assert_eq!(p.get(Controller::Memory).unwrap().version, Version::V1);
        let cpu = p.get(Controller::Cpu).unwrap();
        assert_eq!(cpu.version, Version::V2);
        assert_eq!(fx.rel(cpu.leaf()), Path::new("sys/fs/cgroup/unified/u/v"));
        assert_eq!(cpu.dirs.len(), 3);
    }

    #[test]
    fn pure_v2() {
        let fx = Fixture::new(
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/system.slice/app:odd.service\n",
        );
        fx.dirs(&["sys/fs/cgroup/system.slice/app:odd.service"]);
        let p = fx.locate().unwrap();
        for c in Controller::ALL {
            let d = p.get(c).unwrap();
            assert_eq!(d.path, "/system.slice/app:odd.service");
            assert_eq!(
                fx.rel(d.leaf()),
                Path::new("sys/fs/cgroup/system.slice/app:odd.service")
            );
        }
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let fx = Fixture::new(
            "29 23 0:26 / /sys/fs/my\\040cgroups rw - cgroup2 cgroup2 rw\n",
            "0::/a\n",
        );
        fx.dirs(&["sys/fs/my cgroups/a"]);
        let p = fx.locate().unwrap();
        assert_eq!(
            fx.rel(p.get(Controller::Memory).unwrap().leaf()),
            Path::new("sys/fs/my cgroups/a")
        );
    }

    #[test]
    fn a_target_outside_our_namespace_is_found_through_its_own_mounts() {
        // monitor runs in a cgroup namespace of its own: the target's path climbs out of it,
        // which our mount (root "/") cannot show. The target mounts its own cgroup tree, whose
        // root we see as the same climbing path.
        let fx = Fixture::new(
            "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/../../kubepods/pod1/app\n",
        );
        write(
            fx.proc_dir.path(),
            "100/mountinfo",
            "700 650 0:26 /../../kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
        );
        fx.dirs(&["sys/fs/cgroup", "100/root/sys/fs/cgroup/app"]);
        let p = fx.locate().unwrap();
        let d = p.get(Controller::Memory).unwrap();
        assert!(d.partial);
        assert_eq!(
            d.dirs.iter().map(|d| fx.rel(d)).collect::<Vec<_>>(),
            [
                Path::new("100/root/sys/fs/cgroup"),
                Path::new("100/root/sys/fs/cgroup/app"),
            ]
        );
    }

    #[test]
    fn a_bind_of_the_hosts_tree_serves_paths_outside_our_namespace() {
        // The host's cgroup tree bound into monitor's container: its root, seen from our
        // namespace, climbs to the host's root, so it shows every ancestor.
        let fx = Fixture::new(
            "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
             30 23 0:26 /../.. /host/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/../../kubepods/pod1/app\n",
        );
        fx.dirs(&["host/cgroup/kubepods/pod1/app"]);
        let d = fx.locate().unwrap().found[&Controller::Cpu].clone();
        assert!(d.partial, "the mount's root is not the hierarchy's");
        assert_eq!(fx.rel(d.leaf()), Path::new("host/cgroup/kubepods/pod1/app"));
        assert_eq!(d.dirs.len(), 4);
    }

    #[test]
    fn a_container_bind_that_shows_less_loses_to_the_whole_tree() {
        let fx = Fixture::new(
            "50 40 0:32 /docker/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             51 40 0:32 / /host/memory rw - cgroup cgroup rw,memory\n",
            "4:memory:/docker/c1/inner\n",
        );
        fx.dirs(&["sys/fs/cgroup/memory/inner", "host/memory/docker/c1/inner"]);
        let d = fx.locate().unwrap().found[&Controller::Memory].clone();
        assert!(!d.partial);
        assert_eq!(fx.rel(d.leaf()), Path::new("host/memory/docker/c1/inner"));
    }

    #[test]
    fn nothing_shows_it_is_unreachable_not_an_error() {
        let fx = Fixture::new(V1_MOUNTS, "4:memory:/../elsewhere\n0::/\n");
        fx.dirs(&["sys/fs/cgroup/unified"]);
        let p = fx.locate().unwrap();
        assert!(p.get(Controller::Memory).is_none());
        assert_eq!(
            p.unreachable,
            [Unreachable {
                controller: Controller::Memory,
                version: Version::V1,
                path: "/../elsewhere".into()
            }]
        );
        let msg = p.unreachable[0].to_string();
        assert!(
            msg.contains("memory") && msg.contains("/../elsewhere"),
            "{msg}"
        );
        // cpu and cpuset have no v1 line here, so they are on the unified tree.
        assert_eq!(p.get(Controller::Cpu).unwrap().version, Version::V2);
    }

    #[test]
    fn a_leaf_that_is_not_there_is_unreachable() {
        let fx = Fixture::new(V1_MOUNTS, "4:memory:/gone\n0::/\n");
        fx.dirs(&["sys/fs/cgroup/memory", "sys/fs/cgroup/unified"]);
        let p = fx.locate().unwrap();
        assert_eq!(p.unreachable.len(), 1);
        assert_eq!(p.unreachable[0].path, "/gone");
    }

    #[test]
    fn a_dotdot_below_the_root_does_not_climb_out() {
        assert_eq!(strip_root("/", "/a/../b"), None);
        assert_eq!(strip_root("/a", "/a/b/c"), Some(vec!["b", "c"]));
        assert_eq!(strip_root("/a", "/ab"), None);
        assert_eq!(strip_root("/", "/"), Some(vec![]));
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let fx = Fixture::new(V1_MOUNTS, "4:memory:/a\njunk\n");
        let msg = fx.locate().unwrap_err().to_string();
        assert!(msg.contains("100/cgroup:2"), "{msg}");

        let fx = Fixture::new("29 23 0:26 / /sys/fs/cgroup rw\n", "0::/\n");
        let msg = fx.locate().unwrap_err().to_string();
        assert!(msg.contains("self/mountinfo:1"), "{msg}");
    }

    #[test]
    fn a_vanished_process_is_a_vanish() {
        let fx = Fixture::new(V1_MOUNTS, "0::/\n");
        let err = locate_pid(&fx, 555).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::Proc(ProcError::Vanished { pid: 555 })
        ));
    }
}
