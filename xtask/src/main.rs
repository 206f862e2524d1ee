//! Chores for monitor: `cargo xtask setup | build | run | test | bench`.
//!
//! Everything a fresh machine of this kind needs is installed here, idempotently, so that the
//! README's two commands work from a clean clone.
mod bench;
mod package;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Setup, build, run, test and bench chores for monitor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building needs (rust-src for nightly, bpf-linker against the nightly's LLVM).
    Setup {
        /// Also install what the tests and benchmarks need (Debian packages, the Python venv,
        /// the Kubernetes manifest validator's Node.js modules, cargo-deb).
        #[arg(long)]
        test_deps: bool,
    },
    /// Build the daemon (kernel programs included) in release mode.
    Build,
    /// Set up, build the release binary and make the Debian package (target/debian/*.deb):
    /// the binary, a hardened systemd unit, its config, man pages and shell completions.
    Package,
    /// Set up, build and run `monitor run`. Without arguments, starts a demo workload and watches
    /// it, serving http://127.0.0.1:8001/metrics.
    Run {
        /// Arguments for `monitor run` (e.g. `--pid 1234` or `--comm uvicorn`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up (with test dependencies), build, and run every test, privileged ones included, on
    /// this host and then in QEMU on Debian's 5.10, 6.1 and 6.12 kernels (`vm-test`).
    Test,
    /// House checks: rustfmt, clippy -D warnings on the user crates and on the kernel crate.
    Lint,
    /// Boot Debian's stock cloud kernels in QEMU (TCG) and run the VM suite in each against this
    /// host's release binaries, for what the kernel programs do on kernels other than the host's.
    VmTest {
        /// Which kernel: 5.10 (bullseye), 6.1 (bookworm), 6.12 (trixie), or all.
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Measure overhead and footprint; writes BENCHMARKS.md.
    Bench {
        /// A shorter run (under two minutes).
        #[arg(long)]
        quick: bool,
        /// Run only this section and print it; BENCHMARKS.md is left as it is.
        #[arg(long, value_enum)]
        only: Option<bench::Only>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup { test_deps } => {
            setup::toolchain()?;
            if test_deps {
                setup::test_dependencies()?;
                setup::python_env()?;
                let modules = setup::node_env()?;
                eprintln!(
                    "xtask: the Kubernetes manifest validator's modules: MONITOR_TEST_NODE_MODULES={}",
                    modules.display()
                );
                setup::cargo_deb()?;
            }
            Ok(())
        }
        Cmd::Build => {
            let tools = setup::toolchain()?;
            build(&tools)
        }
        Cmd::Package => {
            let tools = setup::toolchain()?;
            status(cargo(&tools).args(["build", "--release", "-p", "monitor-user"]))?;
            package::build_deb().map(|_| ())
        }
        Cmd::Run { args } => {
            let tools = setup::toolchain()?;
            build(&tools)?;
            run(&args)
        }
        Cmd::Test => {
            let tools = setup::toolchain()?;
            setup::test_dependencies()?;
            build(&tools)?;
            let deb = package::build_deb()?;
            test(&tools, &deb)?;
            clean_clone_build()?;
            // The same kernel programs on the kernels users run (Debian 11, 12, 13), in QEMU.
            vm::run("all", &tools)
        }
        Cmd::Lint => {
            let tools = setup::toolchain()?;
            lint(&tools)
        }
        Cmd::VmTest { kernel } => {
            let tools = setup::toolchain()?;
            build(&tools)?;
            vm::run(&kernel, &tools)
        }
        Cmd::Bench { quick, only } => {
            let tools = setup::toolchain()?;
            setup::test_dependencies()?;
            build(&tools)?;
            bench::run(quick, only)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where cargo builds: CARGO_TARGET_DIR (a relative one from the workspace root, where xtask runs
/// cargo) or target/.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

pub fn release_bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// A cargo command with the tools directory (bpf-linker) first on PATH.
fn cargo(tools: &setup::Tools) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("PATH", tools.path_env());
    cmd
}

pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn build(tools: &setup::Tools) -> anyhow::Result<()> {
    status(cargo(tools).args([
        "build",
        "--release",
        "-p",
        "monitor-user",
        "-p",
        "monitor-tests",
    ]))
}

fn lint(tools: &setup::Tools) -> anyhow::Result<()> {
    status(cargo(tools).args(["fmt", "--all", "--", "--check"]))?;
    status(cargo(tools).args([
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel crate only builds for bpfel with the nightly toolchain.
    status(
        Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "monitor-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(workspace_root())
            .env("PATH", tools.path_env())
            .env_remove("CARGO")
            .env_remove("RUSTC"),
    )
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let monitor = release_bin("monitor");
    if !args.is_empty() {
        return status(Command::new(monitor).arg("run").args(args));
    }
    // Demo: a steady mixed workload (opens, faults, syscalls) that lives until we stop.
    let mut workload = Command::new(release_bin("workload"))
        .args(["mixed", "--millis", "86400000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the demo workload")?;
    eprintln!(
        "xtask: demo workload pid {}; metrics at http://127.0.0.1:8001/metrics (Ctrl-C to stop)",
        workload.id()
    );
    let result = status(Command::new(monitor).args([
        "run",
        "--pid",
        &workload.id().to_string(),
        "--name",
        "demo",
    ]));
    let _ = workload.kill();
    let _ = workload.wait();
    result
}

fn test(tools: &setup::Tools, deb: &Path) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the test suite loads BPF programs and must run as root (sudo cargo xtask test)");
    }
    let monitor = release_bin("monitor");
    let workload = release_bin("workload");
    // The venv's python3 that starts the FastAPI servers of tests/servers.
    let python = setup::python_env()?;
    // kubernetes-models and TypeScript, which check deploy/kubernetes.
    let node_modules = setup::node_env()?;
    status(
        cargo(tools)
            // Default members: everything but the kernel crate, which only builds for bpfel.
            .args(["test", "--release", "--", "--test-threads=1"])
            .env("MONITOR_BIN", &monitor)
            .env("WORKLOAD_BIN", &workload)
            .env("MONITOR_TEST_PYTHON", &python)
            .env("MONITOR_TEST_NODE_MODULES", &node_modules)
            // tests/tests/package.rs installs it, runs it as its unit would, and purges it.
            .env("MONITOR_DEB", deb),
    )?;
    // The variants for kernels older than this host's, on this host too: they are what a kernel
    // whose BTF lacks the tracepoint prototypes gets, and the matrix should not be their only run.
    eprintln!("xtask: the stat tests again with the oldest-kernel program variants");
    status(
        cargo(tools)
            .args([
                "test",
                "--release",
                "--test",
                "stat",
                "--",
                "--test-threads=1",
            ])
            .env("MONITOR_BIN", &monitor)
            .env("WORKLOAD_BIN", &workload)
            .env("MONITOR_COMPAT_VARIANTS", "1"),
    )
}

/// What a new user does: a clean clone of what is committed, `cargo xtask setup`, then a plain
/// `cargo build --release` with nothing added to PATH (monitor-user's build.rs finds bpf-linker in
/// the tool cache setup filled).
fn clean_clone_build() -> anyhow::Result<()> {
    let dir = workspace_root().join("target/clean-clone");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    eprintln!("xtask: a clean clone, `cargo xtask setup`, then plain `cargo build --release`");
    status(
        Command::new("git")
            .args(["clone", "--quiet", "--local", "--no-hardlinks"])
            .arg(workspace_root())
            .arg(&dir),
    )?;
    // The environment a user's shell has: no CARGO from this xtask run, PATH without the tools.
    let plain = |args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.args(args)
            .current_dir(&dir)
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_MANIFEST_DIR");
        cmd
    };
    status(&mut plain(&["xtask", "setup"])).context("`cargo xtask setup` in a clean clone")?;
    status(&mut plain(&["build", "--release"]))
        .context("plain `cargo build --release` after `cargo xtask setup` in a clean clone")?;
    let monitor = dir.join("target/release/monitor");
    if !monitor.exists() {
        bail!("{} was not built", monitor.display());
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}
