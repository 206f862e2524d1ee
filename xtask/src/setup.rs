//! Idempotent setup of the eBPF build chain and the test dependencies.
//!
//! The chain (see ../shared/notes/ebpf-toolchain.md): the nightly toolchain with rust-src builds
//! the kernel crate with `-Z build-std=core`; bpf-linker 0.13 is built from crates.io against the
//! nightly's own libLLVM (no matching LLVM in Debian), through a directory of two symlinks to it.
//! The result is cached per nightly version, so a nightly update rebuilds it.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::status;

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds the Debian package (`cargo xtask package`). 3.8 builds with this machine's stable
/// rustc (its rust-version is 1.85).
const CARGO_DEB_VERSION: &str = "3.8.0";
const NIGHTLY: &str = "nightly";

/// Debian packages the tests and benchmarks start or compare against.
const TEST_PACKAGES: &[&str] = &[
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-process-exporter",
    "bpftrace",
    "bpftool",
    "strace",
    "sysstat",
    // The web config tests: certificates made with openssl, requests made with curl.
    "openssl",
    "curl",
    // The report's HTML page is rendered by a real headless browser in the tests.
    "chromium",
    // vm-test: QEMU, the guest's busybox, the initramfs tools, and what building virtiofsd
    // (Debian 12 has no package of it) links against.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "xz-utils",
    "libcap-ng-dev",
    "libseccomp-dev",
    // The package test: Debian's own checks of the .deb and of its systemd unit
    // (systemd-analyze), man to render its man pages, setpriv (util-linux) and capsh to run it
    // with the unit's capabilities.
    "lintian",
    "systemd",
    "man-db",
    "util-linux",
    "libcap2-bin",
];

pub struct Tools {
    pub bin: PathBuf,
}

impl Tools {
    /// PATH with our tools first.
    pub fn path_env(&self) -> OsString {
        let mut paths = vec![self.bin.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(paths).expect("tool paths contain no separator")
    }
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn toolchain() -> anyhow::Result<Tools> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the kernel programs with the nightly toolchain")?;
    if !installed.lines().any(|l| l.starts_with(NIGHTLY)) {
        eprintln!("xtask: installing the nightly toolchain");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
    }
    bpf_linker()
}

/// The nightly's libLLVM shared object, which bpf-linker must link against.
fn nightly_llvm() -> anyhow::Result<(PathBuf, String)> {
    let sysroot = PathBuf::from(output(Command::new("rustc").args([
        &format!("+{NIGHTLY}"),
        "--print",
        "sysroot",
    ]))?);
    let lib = sysroot.join("lib");
    let so = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: the nightly must ship LLVM as a shared library",
                lib.display()
            )
        })?;
    let version = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-V"]))?;
    Ok((so, version))
}

/// ~/.cache/monitor-tools (or under $XDG_CACHE_HOME): bpf-linker, virtiofsd, the VM kernels.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("monitor-tools")
}

fn bpf_linker() -> anyhow::Result<Tools> {
    let (llvm_so, nightly) = nightly_llvm()?;
    // Key on the nightly's version: a new nightly may ship another LLVM.
    let key: String = nightly
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let root = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-{key}"));
    let tools = Tools {
        bin: root.join("bin"),
    };
    let llvm_prefix = root.join("llvm");
    let linker = tools.bin.join("bpf-linker");
    // The symlinks must exist whenever bpf-linker runs (it finds libLLVM through its RUNPATH).
    link_llvm(&llvm_prefix.join("lib"), &llvm_so)?;
    if linker.exists() {
        return Ok(tools);
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        llvm_so.display()
    );
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
                "--root",
            ])
            .arg(&root)
            .env("LLVM_PREFIX", &llvm_prefix),
    )
    .context("building bpf-linker; see ../shared/notes/ebpf-toolchain.md")?;
    Ok(tools)
}

/// cargo-deb, built from crates.io into the tool cache once (a directory per version, so a
/// change of pin builds the new one). Returns the binary.
pub fn cargo_deb() -> anyhow::Result<PathBuf> {
    let root = cache_dir().join(format!("cargo-deb-{CARGO_DEB_VERSION}"));
    let bin = root.join("bin/cargo-deb");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: building cargo-deb {CARGO_DEB_VERSION} (a few minutes on two cores)");
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                &format!("cargo-deb@{CARGO_DEB_VERSION}"),
                "--locked",
                "--root",
            ])
            .arg(&root)
            // Its own build directory: not the workspace's target (CARGO_TARGET_DIR is honoured by
            // cargo install and would mix its artefacts with ours).
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building cargo-deb (needs crates.io)")?;
    Ok(bin)
}

fn link_llvm(lib: &Path, so: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(lib).with_context(|| format!("creating {}", lib.display()))?;
    let file_name = so.file_name().expect("a file");
    for name in [Path::new("libLLVM.so"), Path::new(file_name)] {
        let link = lib.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(so) {
            continue;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(so, &link)
            .with_context(|| format!("linking {} to {}", link.display(), so.display()))?;
    }
    Ok(())
}

/// Installs those of `packages` that dpkg does not list as installed.
fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        status(Command::new("apt-get").arg("update").arg("-qq"))?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("installing test dependencies (needs root and the Debian mirror)")?;
    }
    Ok(())
}

pub fn test_dependencies() -> anyhow::Result<()> {
    debian_packages(TEST_PACKAGES)?;
    // The Debian packages start their services; the tests start their own on other ports, so
    // stop these to keep ports and CPU free (ignore failures: there may be no init system).
    for service in [
        "prometheus",
        "prometheus-alertmanager",
        "prometheus-process-exporter",
    ] {
        let _ = Command::new("service")
            .args([service, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    // bpftrace (a benchmark peer) needs tracefs; monitor itself does not.
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    Ok(())
}

/// The venv the Python test servers (tests/servers) run in: Debian's python3 with
/// tests/servers/requirements.txt installed, under the tool cache in a directory named after a
/// hash of that file, so a change of pins builds a new one. A marker written last tells a finished
/// venv from one an interrupted run left half-made, which is made again. Returns its python3.
pub fn python_env() -> anyhow::Result<PathBuf> {
    let requirements = crate::workspace_root().join("tests/servers/requirements.txt");
    let pins = std::fs::read(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let root = cache_dir().join(format!("python-{:016x}", fnv1a64(&pins)));
    let python = root.join("bin/python3");
    let marker = root.join(".complete");
    if marker.exists() && python.exists() {
        return Ok(python);
    }
    // Debian's python3 has the venv module but not ensurepip, which `python3 -m venv` needs:
    // that is the python3-venv package.
    if !Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        debian_packages(&["python3", "python3-venv"])?;
    }
    eprintln!(
        "xtask: making the Python test venv {} (pip, under a minute)",
        root.display()
    );
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing the half-made {}", root.display()))?;
    }
    status(Command::new("python3").args(["-m", "venv"]).arg(&root))?;
    status(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements),
    )
    .context("installing tests/servers/requirements.txt (needs PyPI)")?;
    output(Command::new(&python).args([
        "-c",
        "import fastapi, uvicorn, uvloop, httptools, h11, gunicorn",
    ]))
    .context("the Python test venv lacks a server package")?;
    std::fs::write(&marker, &pins).with_context(|| format!("writing {}", marker.display()))?;
    Ok(python)
}

/// The node_modules of the Kubernetes manifest validator (tests/kubernetes: kubernetes-models,
/// its prometheus-operator models, TypeScript, yaml), installed by `npm ci` from the committed
/// package.json and package-lock.json into the tool cache, in a directory named after a hash of
/// both, so a change of pins installs anew. Node.js and npm come from Debian when missing
/// (bookworm's Node.js 18 suffices; a machine with another Node.js that bundles npm keeps it). A
/// marker holding the pins, written last, tells a finished install from a half-made one, and
/// lets the test find this directory (tests/tests/kubernetes.rs). Returns the node_modules.
pub fn node_env() -> anyhow::Result<PathBuf> {
    let dir = crate::workspace_root().join("tests/kubernetes");
    let files = ["package.json", "package-lock.json"];
    let mut pins = Vec::new();
    for name in files {
        let path = dir.join(name);
        pins.extend(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let root = cache_dir().join(format!("node-{:016x}", fnv1a64(&pins)));
    let modules = root.join("node_modules");
    let marker = root.join(".complete");
    if std::fs::read(&marker).is_ok_and(|m| m == pins) && modules.exists() {
        return Ok(modules);
    }
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("node") || !runs("npm") {
        debian_packages(&["nodejs", "npm"])?;
    }
    eprintln!(
        "xtask: installing the Kubernetes manifest validator into {} (npm ci, seconds)",
        root.display()
    );
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing the half-made {}", root.display()))?;
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    for name in files {
        std::fs::copy(dir.join(name), root.join(name))
            .with_context(|| format!("copying {name} into {}", root.display()))?;
    }
    status(
        Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=warn",
            ])
            .current_dir(&root),
    )
    .context("installing tests/kubernetes/package-lock.json (needs the npm registry)")?;
    std::fs::write(&marker, &pins).with_context(|| format!("writing {}", marker.display()))?;
    Ok(modules)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (std's DefaultHasher may not).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
