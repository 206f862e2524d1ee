//! Page-fault exceptions of target processes.
//!
//! These count exceptions, the cheap signal for rates and spike context. The minor/major split is
//! decided after the fault is handled (mm_account_fault), where no tracepoint exists; the daemon
//! takes the exact split from the kernel's own per-task counters in /proc/PID/stat.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};

use crate::maps::{counters, target_slot};

/// Top of the x86_64 user address space; kernel-mode faults above it are not the process's.
const USER_ADDRESS_END: u64 = 0x0000_8000_0000_0000;

// page_fault_user/page_fault_kernel: TP_PROTO(unsigned long address, struct pt_regs *regs,
// unsigned long error_code)
const ARG_ADDRESS: usize = 0;

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(_ctx: RawTracePointContext) -> i32 {
    if let Some(c) = target_slot((bpf_get_current_pid_tgid() >> 32) as u32).and_then(counters) {
        c.faults_user += 1;
    }
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    let address: u64 = ctx.arg(ARG_ADDRESS);
    if address >= USER_ADDRESS_END {
        return 0;
    }
    if let Some(c) = target_slot((bpf_get_current_pid_tgid() >> 32) as u32).and_then(counters) {
        c.faults_kernel += 1;
    }
    0
}
