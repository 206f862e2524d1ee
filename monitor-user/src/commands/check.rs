//! `monitor check`: what this host supports and what to do about what is missing.
use std::{path::Path, process::ExitCode};

use caps::{CapSet, Capability};

use crate::collect::ebpf::{
    btf::{KernelBtf, VMLINUX_BTF},
    probes::Probes,
};

struct Line {
    ok: bool,
    what: String,
    detail: String,
}

pub fn run() -> anyhow::Result<ExitCode> {
    let mut lines = Vec::new();
    let mut push = |ok: bool, what: &str, detail: String| {
        lines.push(Line {
            ok,
            what: what.into(),
            detail,
        })
    };

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    push(true, "kernel", release.trim().to_string());

    let btf = KernelBtf::from_btf_file(Path::new(VMLINUX_BTF));
    let args = |n: Option<usize>| n.map_or("no prototype".to_string(), |n| format!("{n} args"));
    push(
        btf.is_ok(),
        "BTF",
        match &btf {
            Ok(KernelBtf {
                offsets: o,
                tracepoints: t,
            }) => format!(
                "{VMLINUX_BTF}: task_struct pid@{} tgid@{} min_flt@{} maj_flt@{} state@{}; sched_switch {}, sched_process_exit {}",
                o.pid,
                o.tgid,
                o.min_flt,
                o.maj_flt,
                o.state,
                args(t.sched_switch),
                args(t.sched_process_exit)
            ),
            Err(e) => format!(
                "{e}; monitor needs a kernel built with CONFIG_DEBUG_INFO_BTF=y, or run with --no-ebpf"
            ),
        },
    );

    let tracefs = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    push(
        true,
        "tracefs",
        match tracefs {
            Some(p) => format!("mounted ({p})"),
            None => "not mounted; not needed (monitor attaches raw tracepoints by name). To browse formats: mount -t tracefs nodev /sys/kernel/tracing".into(),
        },
    );

    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    let has = |c| effective.contains(&c);
    let bpf_ok = has(Capability::CAP_SYS_ADMIN)
        || (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON));
    push(
        bpf_ok,
        "capabilities",
        if bpf_ok {
            "can load and attach tracing programs".into()
        } else {
            "missing CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN): run as root or grant them (setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace+ep)".into()
        },
    );
    let unpriv =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();
    push(
        true,
        "kernel.unprivileged_bpf_disabled",
        unpriv.trim().to_string(),
    );

    if std::env::var_os(crate::collect::ebpf::probes::COMPAT_VARIANTS_ENV).is_some_and(|v| v == "1")
    {
        push(
            true,
            "program variants",
            format!(
                "{}=1: the variants for the oldest kernels, whatever this one passes",
                crate::collect::ebpf::probes::COMPAT_VARIANTS_ENV
            ),
        );
    }
    let mut all_ok = btf.is_ok() && bpf_ok;
    match Probes::load(&crate::collect::ebpf::selection::Selection::everything()) {
        Ok(probes) => {
            for p in &probes.programs {
                all_ok &= p.attached();
                push(
                    p.attached(),
                    &format!("program {}", p.name),
                    p.error
                        .clone()
                        .unwrap_or_else(|| format!("attached: {}", p.mechanism)),
                );
            }
        }
        Err(e) => {
            all_ok = false;
            push(false, "kernel programs", format!("{e:#}"));
        }
    }
    for l in &lines {
        println!(
            "[{}] {:<34} {}",
            if l.ok { " ok " } else { "FAIL" },
            l.what,
            l.detail
        );
    }
    if all_ok {
        println!(
            "\nall kernel programs attach: `monitor run` will count syscalls, fds, faults and on-CPU time in the kernel"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nsome checks failed: `monitor run` will fall back to /proc-only sampling for what cannot attach"
        );
        Ok(ExitCode::from(1))
    }
}
