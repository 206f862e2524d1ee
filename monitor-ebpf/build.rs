//! Rebuild the kernel object when bpf-linker changes: it is the linker, and cargo does not track
//! linkers. (`cargo xtask setup` installs it and puts it on PATH.)
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
