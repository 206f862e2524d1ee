//! Kernel programs of `monitor`.
//!
//! Every program starts with the TGID filter, so processes that are not targets pay one hash
//! lookup. Per-target counters live in per-CPU arrays indexed by target slot (and syscall number),
//! so the hot path never hashes (tgid, nr) and never takes a lock. One program family per file.
#![no_std]
#![no_main]

mod faults;
mod maps;
mod requests;
mod sched;
mod syscalls;
mod targets;
mod task;

// GPL-compatible: bpf_probe_read_kernel is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
