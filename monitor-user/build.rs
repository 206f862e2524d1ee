//! Builds the kernel programs (monitor-ebpf) with the nightly toolchain and bpf-linker, so a plain
//! `cargo build` produces a daemon with its kernel object embedded. `cargo xtask setup` installs
//! what this needs; set AYA_BUILD_SKIP=1 to build user space alone (clippy, docs).
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // aya-build watches the kernel crate; the shared layouts live next door.
    println!("cargo:rerun-if-changed=../monitor-common/src");
    let package = aya_build::Package {
        name: "monitor-ebpf",
        root_dir: "../monitor-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
        .context("building the kernel programs failed; run `cargo xtask setup` (rust-src for the nightly toolchain, bpf-linker on PATH)")
}
