//! The guest's initramfs: a static busybox, the modules a virtio-fs mount needs, and `/init`.
//!
//! Debian's cloud kernels have no 9p at all (`# CONFIG_NET_9P is not set`), so the host's root
//! comes in over virtio-fs instead, which they do have (as modules on 5.10 and 6.1, built in on
//! 6.12). Which modules to load is read from each kernel's config, their dependencies from the
//! `modules.dep` that `depmod -b` generated; compressed modules are decompressed here, on the
//! host, so busybox's insmod needs no decompressor. The archive is a plain newc cpio (no
//! compression: it is a few megabytes and loads faster than it would unpack), cached beside the
//! kernel under a name that hashes everything it holds.
use std::{
    collections::{BTreeMap, HashSet},
    hash::{Hash as _, Hasher as _},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::kernels::Extracted;

/// Debian's busybox-static; the dynamic `busybox` package installs the same path, so it is
/// checked to be static.
const BUSYBOX: &str = "/bin/busybox";

/// What the guest needs, as (config symbol, module name, required). virtio-rng is optional: it
/// only spares old kernels a wait for entropy (`-cpu max` gives them RDRAND too).
const NEEDED: &[(&str, &str, bool)] = &[
    ("VIRTIO_PCI", "virtio_pci", true),
    ("FUSE_FS", "fuse", true),
    ("VIRTIO_FS", "virtiofs", true),
    ("HW_RANDOM_VIRTIO", "virtio_rng", false),
];

/// Mount tags of the two virtio-fs shares; qemu.rs names the same.
pub const ROOT_TAG: &str = "hostroot";
pub const RESULTS_TAG: &str = "results";

/// Lines the init prints that the host watches for.
pub const SUITE_STARTING: &str = "vm-test: suite starting";
/// A file in the results share the init rewrites every few seconds: the host stops a guest
/// whose heartbeat has stopped (a kernel stuck with interrupts off prints nothing).
pub const HEARTBEAT_FILE: &str = "heartbeat";

/// The initramfs for this kernel, built if not cached. Returns its path and the modules it
/// loads, in load order.
pub fn build(kernel: &Extracted) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let config = std::fs::read_to_string(&kernel.config)
        .with_context(|| format!("reading {}", kernel.config.display()))?;
    let wanted = modules_to_load(&config, &kernel.release)?;
    let dep_path = kernel.modules.join("modules.dep");
    let deps = parse_modules_dep(
        &std::fs::read_to_string(&dep_path)
            .with_context(|| format!("reading {}", dep_path.display()))?,
    );
    let order = load_order(&wanted, &deps)
        .with_context(|| format!("resolving module dependencies of {}", kernel.release))?;
    let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
    let init = init_script(&names);

    let busybox = Path::new(BUSYBOX);
    let busybox_bytes = std::fs::read(busybox).with_context(|| format!("reading {BUSYBOX}"))?;
    if is_dynamic_elf(&busybox_bytes) {
        bail!(
            "{BUSYBOX} is dynamically linked; install busybox-static (cargo xtask setup --test-deps)"
        );
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    init.hash(&mut hasher);
    order.hash(&mut hasher);
    busybox_bytes.hash(&mut hasher);
    let out = kernel
        .dir
        .join(format!("initramfs-{:016x}.cpio", hasher.finish()));
    if out.exists() {
        return Ok((out, names));
    }

    eprintln!(
        "xtask: building the initramfs for {} (modules: {})",
        kernel.release,
        if names.is_empty() {
            "none, all built in".to_string()
        } else {
            names.join(" ")
        }
    );
    let staging = kernel.dir.join("initramfs.staging");
    let _ = std::fs::remove_dir_all(&staging);
    for d in ["bin", "dev", "proc", "sys", "host", "results", "modules"] {
        std::fs::create_dir_all(staging.join(d))
            .with_context(|| format!("creating {}", staging.join(d).display()))?;
    }
    write_file(&staging.join("bin/busybox"), &busybox_bytes, 0o755)?;
    write_file(&staging.join("init"), init.as_bytes(), 0o755)?;
    std::fs::copy(&kernel.config, staging.join("kernel-config"))
        .with_context(|| format!("copying {}", kernel.config.display()))?;
    for (i, relative) in order.iter().enumerate() {
        let source = kernel.modules.join(relative);
        let bytes = decompressed(&source)?;
        let target = staging.join(format!("modules/{:02}-{}.ko", i, module_name(relative)));
        write_file(&target, &bytes, 0o644)?;
    }
    let partial = out.with_extension("cpio.partial");
    cpio(&staging, &partial)?;
    std::fs::rename(&partial, &out)
        .with_context(|| format!("moving {} to {}", partial.display(), out.display()))?;
    // Archives of earlier harness versions are never used again.
    for stale in std::fs::read_dir(&kernel.dir)
        .with_context(|| format!("listing {}", kernel.dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| *p != out)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("initramfs-") && n.ends_with(".cpio"))
        })
    {
        let _ = std::fs::remove_file(stale);
    }
    std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    Ok((out, names))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// A newc archive of everything under `dir`, paths relative to it.
fn cpio(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    collect(dir, Path::new(""), &mut paths)?;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut child = Command::new("cpio")
        .args([
            "--create",
            "--format=newc",
            "--null",
            "--quiet",
            "--owner=0:0",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting cpio (install it: cargo xtask setup --test-deps)")?;
    let mut list = Vec::new();
    for p in &paths {
        list.extend_from_slice(p.as_os_str().as_encoded_bytes());
        list.push(0);
    }
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(&list)
        .context("feeding cpio its file list")?;
    let status = child.wait().context("waiting for cpio")?;
    if !status.success() {
        bail!(
            "cpio failed with {status} while archiving {}",
            dir.display()
        );
    }
    Ok(())
}

/// Directories before their contents, as the kernel's unpacker needs.
fn collect(base: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let dir = base.join(relative);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = relative.join(e.file_name());
        out.push(rel.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect(base, &rel, out)?;
        }
    }
    Ok(())
}

/// The module's bytes, decompressed by the matching host tool if Debian compressed it.
fn decompressed(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .args(["-d", "-c", "-q"])
        .arg(path)
        .output()
        .with_context(|| format!("starting {tool} to decompress {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} -d {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// `virtio-rng.ko.xz` → `virtio_rng`: the kernel treats `-` and `_` in module names alike.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

#[derive(Debug, PartialEq, Eq)]
enum Config {
    BuiltIn,
    Module,
    Missing,
}

fn config_value(config: &str, symbol: &str) -> Config {
    let set = format!("CONFIG_{symbol}=");
    match config
        .lines()
        .find_map(|l| l.strip_prefix(&set))
        .map(str::trim)
    {
        Some("y") => Config::BuiltIn,
        Some("m") => Config::Module,
        _ => Config::Missing,
    }
}

/// The modules (by name) this kernel needs loaded, from its config.
pub fn modules_to_load(config: &str, release: &str) -> anyhow::Result<Vec<String>> {
    let mut wanted = Vec::new();
    for &(symbol, module, required) in NEEDED {
        match config_value(config, symbol) {
            Config::BuiltIn => {}
            Config::Module => wanted.push(module.to_string()),
            Config::Missing if required => {
                bail!("kernel {release} has no CONFIG_{symbol}, which the harness needs")
            }
            Config::Missing => {}
        }
    }
    Ok(wanted)
}

/// `modules.dep`: module name → (its path, the paths it depends on).
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(path, deps)| {
            let path = path.trim().to_string();
            let deps = deps.split_whitespace().map(str::to_string).collect();
            (module_name(&path), (path, deps))
        })
        .collect()
}

/// Paths of the wanted modules and everything they depend on, each after its dependencies.
pub fn load_order(
    wanted: &[String],
    deps: &BTreeMap<String, (String, Vec<String>)>,
) -> anyhow::Result<Vec<String>> {
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        done: &mut HashSet<String>,
        visiting: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if visiting.iter().any(|v| v == name) {
            bail!("dependency cycle: {} -> {name}", visiting.join(" -> "));
        }
        let (path, requires) = deps
            .get(name)
            .with_context(|| format!("module {name} is not in modules.dep"))?;
        visiting.push(name.to_string());
        for dep in requires {
            visit(&module_name(dep), deps, done, visiting, out)?;
        }
        visiting.pop();
        done.insert(name.to_string());
        out.push(path.clone());
        Ok(())
    }
    let mut done = HashSet::new();
    let mut out = Vec::new();
    for name in wanted {
        visit(name, deps, &mut done, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// Whether an ELF file asks for a program interpreter (PT_INTERP), i.e. is dynamically linked.
fn is_dynamic_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) {
        return true; // not a 64-bit ELF: certainly not the static busybox we want
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum as usize).any(|i| {
        let at = phoff as usize + i * phentsize as usize;
        bytes.get(at..at + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// `/init`: mount the host's root read-only over virtio-fs, dress it as a running system (proc,
/// sysfs, devtmpfs, tmpfs where programs write, tracefs, bpffs, cgroup2, loopback up), run the
/// suite the host left in the results share in a chroot of it, and bring back its output and
/// exit code. Every failure prints why and powers off, which the host reports as a missing exit
/// code with the serial log's tail.
fn init_script(modules: &[String]) -> String {
    let loads: String = modules
        .iter()
        .enumerate()
        .map(|(i, m)| format!("insmod /modules/{i:02}-{m}.ko || fail \"loading module {m}\"\n"))
        .collect();
    format!(
        r#"#!/bin/busybox sh
# Written by `cargo xtask vm-test`.
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{
    echo "vm-test: FATAL: $*"
    sync
    poweroff -f
    sleep 60
}}
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# A newline first: the firmware's last line ("Booting from ROM..") has none.
echo
echo "vm-test: kernel $(uname -r), $(nproc) CPUs"
{loads}
mount -t virtiofs -o ro {ROOT_TAG} /host || fail "mounting the host root (virtio-fs tag {ROOT_TAG})"
mount -t virtiofs {RESULTS_TAG} /results || fail "mounting the results share (virtio-fs tag {RESULTS_TAG})"
while :; do date +%s >/results/{HEARTBEAT_FILE}; sleep 5; done &
heartbeat=$!
R=/host
# The workspace holds the binaries and tests; if it lies under a directory covered by a tmpfs
# below (a clone in /tmp), it is bound aside now and back over the tmpfs afterwards.
WS=$(cat /results/workspace 2>/dev/null)
if [ -n "$WS" ]; then
    mkdir -p /keep
    mount -o bind "$R$WS" /keep || fail "binding the workspace $WS aside"
fi
mount -t proc proc $R/proc || fail "mounting proc in the chroot"
mount -t sysfs sysfs $R/sys || fail "mounting sysfs in the chroot"
mount -t devtmpfs devtmpfs $R/dev || fail "mounting devtmpfs in the chroot"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts || fail "mounting devpts"
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm || fail "mounting /dev/shm"
for d in tmp var/tmp; do
    mount -t tmpfs -o mode=1777 tmpfs $R/$d || fail "mounting a tmpfs on /$d"
done
mount -t tmpfs -o mode=755 tmpfs $R/run || fail "mounting a tmpfs on /run"
mkdir -p $R/run/lock $R/run/vm-results
chmod 1777 $R/run/lock
mount -o bind /results $R/run/vm-results || fail "binding the results share into the chroot"
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "mounting tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug || fail "mounting debugfs"
mount -t bpf bpf $R/sys/fs/bpf || fail "mounting bpffs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail "mounting cgroup2"
# The guest kernel's config where tools look for it (the host's /boot is not this kernel's).
mount -t tmpfs -o mode=755 tmpfs $R/boot || fail "mounting a tmpfs on /boot"
cp /kernel-config $R/boot/config-$(uname -r)
if [ -n "$WS" ] && [ ! -e "$R$WS/Cargo.toml" ]; then
    mkdir -p "$R$WS" && mount -o bind /keep "$R$WS" || fail "binding the workspace $WS back"
fi
ip link set lo up || fail "bringing up the loopback interface"
hostname vm-test
echo "{SUITE_STARTING}"
{{
    chroot $R /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 TMPDIR=/tmp \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/sh /run/vm-results/suite.sh </dev/null
    echo $? >/results/exit-code
}} 2>&1 | tee /results/suite.log
sync
echo "vm-test: suite exited with $(cat /results/exit-code 2>/dev/null || echo nothing)"
kill $heartbeat
umount /host/run/vm-results /results
sync
poweroff -f
sleep 60
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/fs/fuse/fuse.ko
kernel/fs/fuse/fuse.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
";

    #[test]
    fn dependencies_load_first_and_once() {
        let deps = parse_modules_dep(DEP);
        let order = load_order(
            &["virtio_pci".into(), "fuse".into(), "virtiofs".into()],
            &deps,
        )
        .unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "fuse",
                "virtiofs"
            ]
        );
        for (i, name) in names.iter().enumerate() {
            let (_, requires) = &deps[name];
            for dep in requires {
                let at = names.iter().position(|n| *n == module_name(dep)).unwrap();
                assert!(at < i, "{dep} must load before {name}");
            }
        }
    }

    #[test]
    fn compressed_and_hyphenated_module_names() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz"),
            "virtio_rng"
        );
        assert_eq!(module_name("kernel/fs/fuse/fuse.ko.zst"), "fuse");
        let deps = parse_modules_dep(DEP);
        assert_eq!(
            load_order(&["virtio_rng".into()], &deps)
                .unwrap()
                .last()
                .unwrap(),
            "kernel/drivers/char/hw_random/virtio-rng.ko.xz"
        );
    }

    #[test]
    fn unknown_modules_and_cycles_are_errors() {
        let deps = parse_modules_dep(DEP);
        assert!(load_order(&["9p".into()], &deps).is_err());
        let cyclic = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n");
        assert!(load_order(&["a".into()], &cyclic).is_err());
    }

    #[test]
    fn built_in_options_need_no_module_and_missing_ones_fail() {
        let bookworm = "CONFIG_VIRTIO_PCI=m\nCONFIG_FUSE_FS=m\nCONFIG_VIRTIO_FS=m\n\
                        CONFIG_HW_RANDOM_VIRTIO=m\n# CONFIG_NET_9P is not set\n";
        assert_eq!(
            modules_to_load(bookworm, "6.1").unwrap(),
            ["virtio_pci", "fuse", "virtiofs", "virtio_rng"]
        );
        let trixie = "CONFIG_VIRTIO_PCI=y\nCONFIG_FUSE_FS=y\nCONFIG_VIRTIO_FS=y\n\
                      CONFIG_HW_RANDOM_VIRTIO=m\n";
        assert_eq!(modules_to_load(trixie, "6.12").unwrap(), ["virtio_rng"]);
        let no_virtiofs = "CONFIG_VIRTIO_PCI=y\nCONFIG_FUSE_FS=y\n# CONFIG_VIRTIO_FS is not set\n";
        assert!(modules_to_load(no_virtiofs, "x").is_err());
        // A prefix of another symbol is not a match.
        assert_eq!(
            config_value("CONFIG_VIRTIO_FS_DAX=y\n", "VIRTIO_FS"),
            Config::Missing
        );
    }

    #[test]
    fn the_init_loads_modules_in_order_and_announces_the_suite() {
        let init = init_script(&["fuse".into(), "virtiofs".into()]);
        let fuse = init.find("/modules/00-fuse.ko").unwrap();
        let virtiofs = init.find("/modules/01-virtiofs.ko").unwrap();
        assert!(fuse < virtiofs);
        assert!(init.contains(SUITE_STARTING));
        assert!(init.starts_with("#!/bin/busybox sh\n"));
    }

    #[test]
    fn static_and_dynamic_elf() {
        // The host's busybox is whatever is installed; /bin/sh is always dynamic on Debian.
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(is_dynamic_elf(&sh));
        assert!(is_dynamic_elf(b"#!/bin/sh\n"));
        let mut elf = vec![0u8; 0x40 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert!(!is_dynamic_elf(&elf));
        elf[0x40..0x44].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(is_dynamic_elf(&elf));
    }
}
