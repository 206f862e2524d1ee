//! `cargo xtask vm-test`: run a suite on Debian's stock cloud kernels (5.10, 6.1, 6.12) in QEMU.
//!
//! Why: what the kernel programs can do (verifier, helpers, BTF, attach points) depends on the
//! kernel, and this host has one. Why this way: no disk image to build or keep in step. Each
//! kernel boots an initramfs that mounts this host's root read-only over virtio-fs and chroots
//! into it, so the guest runs the very binaries `cargo xtask build` made, at the same paths.
//! The suite's output streams to the terminal and comes back with its exit code through a
//! second, writable share. TCG, not KVM: KVM is unusable on the machines this runs on.
//!
//! To run another suite, from Rust:
//! ```ignore
//! vm::run_suite("all", &my_script)?; // boots each kernel, prints the summary, fails if any did
//! // or, kernel by kernel:
//! let harness = vm::Harness::new()?;
//! let outcomes: Vec<vm::Outcome> =
//!     vm::select("6.1")?.iter().map(|k| harness.boot(k, &my_script)).collect();
//! vm::summarize(&outcomes)?;
//! ```
mod initramfs;
mod kernels;
mod qemu;
mod stale_code;
mod suite;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

pub use kernels::{KERNELS, Kernel};

use crate::{release_bin, status, workspace_root};

/// Per kernel, from qemu's start to its exit; `MONITOR_VM_TIMEOUT` (seconds) overrides it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where the suite may leave files inside the guest; they come back to
/// target/vm-test/<version>/results.
pub const GUEST_RESULTS: &str = "/run/vm-results";

/// The `vm-test` entry: the suite of suite.rs on the selected kernels (`5.10`, `6.1`, `6.12` or
/// `all`), then each kernel's accuracy figures. `MONITOR_VM_SUITE=<file>` runs that shell script
/// instead, to try one without rebuilding xtask.
pub fn run(selector: &str, tools: &crate::setup::Tools) -> anyhow::Result<()> {
    if let Some(file) = std::env::var_os("MONITOR_VM_SUITE") {
        let script = std::fs::read_to_string(&file)
            .with_context(|| format!("reading MONITOR_VM_SUITE={}", file.to_string_lossy()))?;
        return run_suite(selector, &script);
    }
    let kernels = select(selector)?;
    let script = suite::script(&suite::build_test_binaries(tools)?);
    let harness = Harness::new()?;
    let mut outcomes = Vec::with_capacity(kernels.len());
    for kernel in &kernels {
        let outcome = harness.boot(kernel, &script);
        let figures = suite::accuracy(&outcome.dir.join("results"))
            .unwrap_or_else(|e| format!("no figures: {e:#}"));
        eprintln!("xtask: [{}] {figures}", kernel.version);
        outcomes.push(outcome);
    }
    summarize(&outcomes)
}

/// Boots each selected kernel, runs `script` in it, prints a PASS/FAIL line per kernel, and
/// fails if any kernel failed.
pub fn run_suite(selector: &str, script: &str) -> anyhow::Result<()> {
    let kernels = select(selector)?;
    let harness = Harness::new()?;
    let outcomes: Vec<Outcome> = kernels.iter().map(|k| harness.boot(k, script)).collect();
    summarize(&outcomes)
}

/// The kernels a `--kernel` value names.
pub fn select(selector: &str) -> anyhow::Result<Vec<Kernel>> {
    if selector == "all" {
        return Ok(KERNELS.to_vec());
    }
    let mut chosen = Vec::new();
    for name in selector.split(',').map(str::trim) {
        let kernel = KERNELS
            .iter()
            .find(|k| k.version == name || k.suite == name)
            .with_context(|| {
                format!(
                    "unknown kernel {name:?}: choose from {} or all",
                    KERNELS
                        .iter()
                        .map(|k| k.version)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if !chosen.contains(kernel) {
            chosen.push(*kernel);
        }
    }
    Ok(chosen)
}

/// What one kernel's run came to.
#[derive(Debug)]
pub struct Outcome {
    pub kernel: Kernel,
    /// The Debian package booted and its version, once resolved.
    pub package: Option<(String, String)>,
    /// The suite's exit code, read from the results share.
    pub exit_code: Option<i32>,
    /// From qemu's start to the suite starting.
    pub boot_time: Option<Duration>,
    /// Modules the initramfs loaded, in order.
    pub modules: Vec<String>,
    /// Why the kernel FAILed (None: PASS).
    pub failure: Option<String>,
    /// Why the last boot's failure says nothing about monitor, when it does not: stale code
    /// under TCG (see stale_code.rs) or a guest that stopped without a word.
    pub not_ours: Option<String>,
    /// Why the kernel was booted a second time, if it was.
    pub retried: Option<String>,
    /// target/vm-test/<version>: serial.log, the daemons' logs, results/ (suite.log, exit-code
    /// and whatever the suite left in MONITOR_VM_RESULTS).
    pub dir: PathBuf,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// What every boot shares: the virtiofsd binary and the timeout.
pub struct Harness {
    virtiofsd: PathBuf,
    timeout: Duration,
}

impl Harness {
    /// Checks that this machine can boot guests (root, tools, built binaries) and gets a
    /// virtiofsd, building it on first use.
    pub fn new() -> anyhow::Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "vm-test shares this host's root with the guest through virtiofsd, which must run \
                 as root (sudo cargo xtask vm-test)"
            );
        }
        let missing: Vec<&str> = [
            "qemu-system-x86_64",
            "cpio",
            "depmod",
            "dpkg-deb",
            "apt-get",
            "xz",
        ]
        .into_iter()
        .filter(|tool| find_in_path(tool).is_none())
        .collect();
        if !missing.is_empty() {
            bail!(
                "vm-test needs {} on PATH: cargo xtask setup --test-deps installs them",
                missing.join(", ")
            );
        }
        for bin in [release_bin("monitor"), release_bin("workload")] {
            if !bin.is_file() {
                bail!("{} is missing: run cargo xtask build", bin.display());
            }
        }
        let timeout =
            match std::env::var("MONITOR_VM_TIMEOUT") {
                Ok(s) => Duration::from_secs(s.trim().parse().with_context(|| {
                    format!("MONITOR_VM_TIMEOUT={s:?} is not a number of seconds")
                })?),
                Err(_) => DEFAULT_TIMEOUT,
            };
        Ok(Self {
            virtiofsd: qemu::virtiofsd()?,
            timeout,
        })
    }

    /// Boots `kernel`, runs `script` in the guest and reports; a failure anywhere (fetching,
    /// building the initramfs, booting, the suite) is a FAIL outcome, not an error, so that the
    /// other kernels still run.
    pub fn boot(&self, kernel: &Kernel, script: &str) -> Outcome {
        let mut outcome = Outcome {
            kernel: *kernel,
            package: None,
            exit_code: None,
            boot_time: None,
            modules: Vec::new(),
            failure: None,
            not_ours: None,
            retried: None,
            dir: workspace_root().join("target/vm-test").join(kernel.version),
        };
        if let Err(e) = self.try_boot(kernel, script, &mut outcome) {
            outcome.failure = Some(format!("{e:#}"));
        }
        if let Some(why) = outcome.failure.as_ref().and(outcome.not_ours.clone()) {
            // QEMU's TCG ran stale code of a jump label the kernel had just patched (see
            // stale_code.rs), or the guest stopped dead with no message (a vCPU looping with
            // interrupts off; the emulated machine has no NMI watchdog to say where). A fault
            // of monitor's would show again on the second boot. The first boot's log is kept.
            let kept = outcome.dir.join("serial.first-boot.log");
            eprintln!(
                "xtask: [{}] {why} on the first boot (see {}); booting it once more",
                kernel.version,
                kept.display()
            );
            let _ = std::fs::rename(outcome.dir.join("serial.log"), &kept);
            outcome.failure = None;
            outcome.exit_code = None;
            outcome.not_ours = None;
            outcome.retried = Some(format!("{why} on the first boot"));
            if let Err(e) = self.try_boot(kernel, script, &mut outcome) {
                outcome.failure = Some(format!("on the second boot: {e:#}"));
            }
        }
        match &outcome.failure {
            None => eprintln!("xtask: [{}] PASS", kernel.version),
            Some(why) => eprintln!("xtask: [{}] FAIL: {why}", kernel.version),
        }
        outcome
    }

    fn try_boot(&self, kernel: &Kernel, script: &str, outcome: &mut Outcome) -> anyhow::Result<()> {
        let extracted = kernels::fetch(kernel)?;
        outcome.package = Some((extracted.package.clone(), extracted.version.clone()));
        let (initrd, modules) = initramfs::build(&extracted)?;
        outcome.modules = modules;

        let results = outcome.dir.join("results");
        if results.exists() {
            std::fs::remove_dir_all(&results)
                .with_context(|| format!("removing the last run's {}", results.display()))?;
        }
        std::fs::create_dir_all(&results)
            .with_context(|| format!("creating {}", results.display()))?;
        let env = [
            ("MONITOR_BIN", release_bin("monitor").display().to_string()),
            (
                "WORKLOAD_BIN",
                release_bin("workload").display().to_string(),
            ),
            ("MONITOR_VM_KERNEL", kernel.version.to_string()),
            ("MONITOR_VM_RESULTS", GUEST_RESULTS.to_string()),
        ];
        // The guest covers /tmp, /run and the like with a tmpfs; a workspace there (a clean
        // clone in /tmp, as CI may make) is bound back over it (see initramfs.rs).
        let workspace = results.join("workspace");
        std::fs::write(&workspace, workspace_root().display().to_string())
            .with_context(|| format!("writing {}", workspace.display()))?;
        let suite_path = results.join("suite.sh");
        std::fs::write(&suite_path, with_exports(&env, script))
            .with_context(|| format!("writing {}", suite_path.display()))?;

        eprintln!(
            "xtask: [{}] booting {} {} (timeout {} s)",
            kernel.version,
            extracted.package,
            extracted.version,
            self.timeout.as_secs()
        );
        let boot = qemu::boot(&qemu::BootSpec {
            label: kernel.version,
            vmlinuz: &extracted.vmlinuz,
            initrd: &initrd,
            results: &results,
            log_dir: &outcome.dir,
            timeout: self.timeout,
            virtiofsd: &self.virtiofsd,
        })?;
        outcome.boot_time = boot.boot_time;
        if let Some(t) = boot.boot_time {
            eprintln!(
                "xtask: [{}] booted in {:.1} s (qemu start to suite start)",
                kernel.version,
                t.as_secs_f64()
            );
        }
        let tail = || {
            format!(
                "last {} lines of {}:\n{}",
                boot.tail.len(),
                boot.serial_log.display(),
                boot.tail
                    .iter()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        // The console's own watch, also for a guest that died before it could be stopped (a
        // panic ends qemu at once).
        outcome.not_ours = boot
            .stopped
            .or(boot.stale.map(qemu::Stopped::StaleCode))
            .map(|why| why.to_string());
        if let Some(why) = boot.stopped {
            bail!("stopped early: {why}; {}", tail());
        }
        if boot.timed_out {
            bail!("timed out after {} s; {}", self.timeout.as_secs(), tail());
        }
        let exit_file = results.join("exit-code");
        let Ok(text) = std::fs::read_to_string(&exit_file) else {
            let qemu = boot
                .status
                .map_or_else(|| "was killed".to_string(), |s| format!("exited with {s}"));
            bail!("the guest wrote no exit code (qemu {qemu}); {}", tail());
        };
        let code: i32 = text
            .trim()
            .parse()
            .with_context(|| format!("{} holds {text:?}, not an exit code", exit_file.display()))?;
        outcome.exit_code = Some(code);
        if code != 0 {
            bail!(
                "the suite exited with {code} (its output: {})",
                results.join("suite.log").display()
            );
        }
        Ok(())
    }
}

/// Prints one line per kernel and fails if any kernel failed.
pub fn summarize(outcomes: &[Outcome]) -> anyhow::Result<()> {
    eprintln!("xtask: vm-test summary");
    for o in outcomes {
        let package = o
            .package
            .as_ref()
            .map_or_else(|| "(not fetched)".to_string(), |(p, v)| format!("{p} {v}"));
        let boot = o
            .boot_time
            .map_or_else(|| "-".to_string(), |t| format!("{:.1} s", t.as_secs_f64()));
        let verdict = if o.passed() { "PASS" } else { "FAIL" };
        let detail = match (&o.failure, o.exit_code) {
            (None, _) => match &o.retried {
                Some(why) => format!("exit 0 on the second boot ({why})"),
                None => "exit 0".to_string(),
            },
            (Some(_), Some(code)) if o.retried.is_some() => {
                format!("exit {code} on the second boot")
            }
            (Some(_), Some(code)) => format!("exit {code}"),
            (Some(why), None) => {
                let first = why.lines().next().unwrap_or_default();
                first.split("; last ").next().unwrap_or(first).to_string()
            }
        };
        eprintln!(
            "  {:<5} {verdict}  {package}, boot {boot}: {detail}",
            o.kernel.version
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.kernel.version)
        .collect();
    if !failed.is_empty() {
        bail!(
            "vm-test failed on kernel {} (logs under {})",
            failed.join(", "),
            workspace_root().join("target/vm-test").display()
        );
    }
    Ok(())
}

/// The suite preceded by `export NAME='value'` lines.
fn with_exports(env: &[(&str, String)], script: &str) -> String {
    let mut out = String::from("# Written by `cargo xtask vm-test`.\n");
    for (name, value) in env {
        out.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    out.push_str(script);
    out
}

/// `value` as one word for sh.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(select("all").unwrap().len(), 3);
        let one = select("6.1").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].suite, "bookworm");
        assert_eq!(select("5.10,trixie,5.10").unwrap().len(), 2);
        let err = select("4.19").unwrap_err().to_string();
        assert!(err.contains("5.10, 6.1, 6.12"), "{err}");
    }

    #[test]
    fn exports_are_quoted() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        let script = with_exports(
            &[("MONITOR_BIN", "/w/target/release/monitor".into())],
            "true\n",
        );
        assert!(script.contains("export MONITOR_BIN='/w/target/release/monitor'\ntrue\n"));
    }
}
