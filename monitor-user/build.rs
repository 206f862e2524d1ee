//! Builds the kernel programs (monitor-ebpf) with the nightly toolchain and bpf-linker, so a plain
//! `cargo build` produces a daemon with its kernel object embedded. `cargo xtask setup` installs
//! what this needs; set AYA_BUILD_SKIP=1 to build user space alone (clippy, docs).
//!
//! bpf-linker is found on PATH, or else in the tool cache `cargo xtask setup` builds it into
//! (`~/.cache/monitor-tools/bpf-linker-<version>-<nightly>/bin`, not on PATH: it is linked
//! against one nightly's libLLVM), so `cargo build`, `cargo test` and `cargo install` work after
//! setup without touching PATH.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const SETUP: &str = "run `cargo xtask setup` in the monitor workspace";

fn main() -> anyhow::Result<()> {
    // aya-build watches the kernel crate; the shared layouts live next door.
    println!("cargo:rerun-if-changed=../monitor-common/src");
    revision();
    println!("cargo:rerun-if-env-changed=PATH");
    let skip = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true");
    if !skip {
        check_nightly()?;
        if let Some(path) = path_with_bpf_linker()? {
            // SAFETY: the build script is single-threaded; aya-build's cargo inherits PATH.
            unsafe { std::env::set_var("PATH", path) };
        }
    }
    let package = aya_build::Package {
        name: "monitor-ebpf",
        root_dir: "../monitor-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly).with_context(|| {
        format!("building the kernel programs (monitor-ebpf) failed; if a tool is missing, {SETUP}")
    })
}

/// `MONITOR_REVISION` for `monitor_build_info`: the commit built, or "unknown" outside a git
/// checkout (a source package). Rebuilt when HEAD moves; a dirty tree is not marked.
fn revision() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MONITOR_REVISION={revision}");
    // Only paths that exist: a missing one would make cargo rerun this script every build.
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]);
    let watched = [
        git(&["rev-parse", "--git-path", "HEAD"]),
        branch.and_then(|r| git(&["rev-parse", "--git-path", &r])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ];
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The nightly toolchain with rust-src builds the kernel crate (`-Z build-std=core`).
fn check_nightly() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .with_context(|| format!("rustup is needed to build the kernel programs: {SETUP}"))?;
    if !out.status.success() {
        bail!("the nightly toolchain is not installed (rustup toolchain list): {SETUP}");
    }
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        bail!("the nightly toolchain has no rust-src component: {SETUP}");
    }
    Ok(())
}

/// None when bpf-linker is on PATH already; otherwise PATH with the tool cache's bin first.
fn path_with_bpf_linker() -> anyhow::Result<Option<OsString>> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join("bpf-linker").is_file()) {
        return Ok(None);
    }
    let cache = tool_cache();
    let Some(bin) = newest_linker_bin(&cache) else {
        bail!(
            "bpf-linker is not on PATH and not in {} (where `cargo xtask setup` builds it): {SETUP}",
            cache.display()
        );
    };
    println!("cargo:rerun-if-changed={}", bin.display());
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    Ok(Some(std::env::join_paths(dirs)?))
}

/// The same directory as xtask's setup (`$XDG_CACHE_HOME` or `~/.cache`, then monitor-tools).
fn tool_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("monitor-tools")
}

/// The most recently built `bpf-linker-*/bin` in the cache (a nightly update builds a new one).
fn newest_linker_bin(cache: &Path) -> Option<PathBuf> {
    std::fs::read_dir(cache)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("bpf-linker-"))
        .map(|e| e.path().join("bin"))
        .filter_map(|bin| {
            let modified = bin.join("bpf-linker").metadata().ok()?.modified().ok()?;
            Some((modified, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}
