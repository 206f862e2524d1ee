//! `cargo xtask package`: the Debian package, built by cargo-deb from monitor-user's
//! `[package.metadata.deb]` and deploy/debian, around the release binary already built.
//!
//! The man pages and shell completions come from the built binary itself (`monitor man DIR`,
//! `monitor completions SHELL`), so they describe exactly the command line it accepts. They are
//! written under `<target>/release/package`, which the metadata names as `target/release/...`:
//! cargo-deb maps that prefix to wherever the build went (CARGO_TARGET_DIR included).
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{setup, status};

/// Writes the man pages and completions, then the .deb into `<target>/debian`. Returns its path.
pub fn build_deb() -> anyhow::Result<PathBuf> {
    let monitor = crate::release_bin("monitor");
    if !monitor.exists() {
        bail!("{} is not built (cargo xtask build)", monitor.display());
    }
    let generated = crate::target_dir().join("release/package");
    if generated.exists() {
        std::fs::remove_dir_all(&generated)
            .with_context(|| format!("removing {}", generated.display()))?;
    }
    check_changelog()?;
    let man = generated.join("man");
    status(Command::new(&monitor).arg("man").arg(&man))?;
    // Debian wants man pages compressed; -n leaves name and time out, so the bytes repeat.
    for page in std::fs::read_dir(&man).with_context(|| format!("listing {}", man.display()))? {
        status(Command::new("gzip").args(["-9", "-n"]).arg(page?.path()))?;
    }
    let completions = generated.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for (shell, file) in [
        ("bash", "monitor.bash"),
        ("zsh", "_monitor"),
        ("fish", "monitor.fish"),
    ] {
        let out = Command::new(&monitor)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {} completions {shell}", monitor.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "`monitor completions {shell}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::write(completions.join(file), &out.stdout)
            .with_context(|| format!("writing the {shell} completions"))?;
    }

    let cargo_deb = setup::cargo_deb()?;
    let out_dir = crate::target_dir().join("debian");
    let out = Command::new(&cargo_deb)
        .args(["-p", "monitor-user", "--no-build", "--output"])
        .arg(&out_dir)
        .current_dir(crate::workspace_root())
        // The same target directory the binary was found in, whatever the caller's environment.
        .env("CARGO_TARGET_DIR", crate::target_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", cargo_deb.display()))?;
    if !out.status.success() {
        bail!("cargo-deb failed with {}", out.status);
    }
    // cargo-deb prints the path of the package it wrote, and nothing else, on stdout.
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if deb.extension().is_none_or(|e| e != "deb") || !deb.exists() {
        bail!(
            "cargo-deb did not name the package it wrote (stdout: {:?})",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("xtask: {}", deb.display());
    Ok(deb)
}

/// The package's version is monitor-user's with revision 1 (the workspace version, which xtask
/// shares), and Debian requires the changelog's first entry to be that version: a version bump
/// without an entry is caught here.
fn check_changelog() -> anyhow::Result<()> {
    let path = crate::workspace_root().join("deploy/debian/changelog");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let expected = format!("monitor ({}-1) ", env!("CARGO_PKG_VERSION"));
    if !text.starts_with(&expected) {
        bail!(
            "{}: the first entry must be for {expected}(the crate's version): add one",
            path.display()
        );
    }
    Ok(())
}
