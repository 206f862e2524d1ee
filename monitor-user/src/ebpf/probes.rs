//! Loading the kernel object and attaching each program, with errors that say what to do.
//!
//! Every program is attached on its own so that one the kernel refuses does not take the others
//! down; the caller gets a status per program (exported as `monitor_ebpf_attached{program}`).
use std::path::Path;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::RawTracePoint};
use monitor_common::globals;
use tracing::{debug, info, warn};

use super::{btf::TaskOffsets, btf::VMLINUX_BTF, maps::KernelMaps, selection::Selection};

/// The kernel object built by build.rs from monitor-ebpf.
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// (program, raw tracepoint) pairs; the program names are the functions in monitor-ebpf.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("sys_enter", "sys_enter"),
    ("sys_exit", "sys_exit"),
    ("sched_switch", "sched_switch"),
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exit", "sched_process_exit"),
    ("page_fault_user", "page_fault_user"),
    ("page_fault_kernel", "page_fault_kernel"),
];

/// Programs without which the target set cannot follow forks and exits: if they fail, nothing
/// the others count can be attributed correctly.
const ESSENTIAL: &[&str] = &["sched_process_fork", "sched_process_exit"];

#[derive(Clone, Debug)]
pub struct ProgramStatus {
    pub name: &'static str,
    /// Asked for (`--programs`); a program left out is neither loaded nor attached.
    pub enabled: bool,
    /// None when attached (or left out); the reason otherwise.
    pub error: Option<String>,
}

impl ProgramStatus {
    pub fn attached(&self) -> bool {
        self.enabled && self.error.is_none()
    }
}

/// Loaded and attached programs. Dropping this detaches everything.
pub struct Probes {
    pub maps: KernelMaps,
    pub programs: Vec<ProgramStatus>,
    /// Kept alive: links are owned by the programs inside.
    _ebpf: Ebpf,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Probes {
    /// Loads the object and attaches every program. Fails only when nothing useful can run
    /// (no BTF, the kernel refuses to load, or the fork/exit followers cannot attach).
    pub fn load(selection: &Selection) -> anyhow::Result<Self> {
        raise_memlock_limit();
        let offsets = TaskOffsets::from_btf_file(Path::new(VMLINUX_BTF))?;
        // Parsing the kernel's BTF took tens of MB of small allocations, all freed now: return
        // them, or they stay in the daemon's RSS.
        release_free_heap();
        let index_entries = super::target_index::entries_for_host()?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(monitor_common::maps::TARGET_INDEX, index_entries)
            .override_global(globals::TASK_PID_OFFSET, &offsets.pid, true)
            .override_global(globals::TASK_TGID_OFFSET, &offsets.tgid, true)
            .override_global(globals::TASK_MIN_FLT_OFFSET, &offsets.min_flt, true)
            .override_global(globals::TASK_MAJ_FLT_OFFSET, &offsets.maj_flt, true)
            .override_global(
                globals::TASK_SUM_EXEC_OFFSET,
                &offsets.sum_exec_runtime,
                true,
            )
            .override_global(
                globals::SYS_ENTER_ATTACHED,
                &u32::from(selection.syscalls()),
                true,
            )
            .load(KERNEL_OBJECT)
            .map_err(|e| anyhow::anyhow!(explain_load_error(&e)).context(e))?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                warn!("kernel-side logging unavailable: {e}");
                None
            }
        };
        let mut programs = Vec::with_capacity(PROGRAMS.len());
        for &(name, tracepoint) in PROGRAMS {
            if !selection.wants(name) {
                info!(program = name, "left out (--programs)");
                programs.push(ProgramStatus {
                    name,
                    enabled: false,
                    error: None,
                });
                continue;
            }
            let error = attach(&mut ebpf, name, tracepoint)
                .err()
                .map(|e| format!("{e:#}"));
            match &error {
                None => info!(program = name, "attached"),
                Some(e) => warn!(program = name, "not attached: {e}"),
            }
            programs.push(ProgramStatus {
                name,
                enabled: true,
                error,
            });
        }
        if let Some(p) = programs
            .iter()
            .find(|p| ESSENTIAL.contains(&p.name) && !p.attached())
        {
            anyhow::bail!(
                "cannot follow the target's forks and exits: {} did not attach ({})",
                p.name,
                p.error.as_deref().unwrap_or_default()
            );
        }
        let maps = KernelMaps::take(&mut ebpf).context("taking the kernel maps")?;
        // The loader parsed the kernel's BTF again for relocations.
        release_free_heap();
        Ok(Self {
            maps,
            programs,
            _ebpf: ebpf,
            logger,
        })
    }

    /// Every program asked for is attached.
    pub fn all_attached(&self) -> bool {
        self.programs.iter().all(|p| !p.enabled || p.attached())
    }
}

fn attach(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> anyhow::Result<()> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the kernel object"))?
        .try_into()?;
    program.load().map_err(|e| {
        anyhow::anyhow!("the kernel refused to load {name}: {e:#}; run `monitor check` for details")
    })?;
    program.attach(tracepoint).map_err(|e| {
        anyhow::anyhow!("attaching raw tracepoint {tracepoint}: {e:#} (does this kernel have it? see `monitor check`)")
    })?;
    Ok(())
}

/// Turns the common load failures into what to do about them.
fn explain_load_error(e: &aya::EbpfError) -> String {
    let text = format!("{e:#}");
    // The errno sits a few sources deep (EbpfError -> MapError/ProgramError -> io::Error).
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut errno = None;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            errno = io.raw_os_error();
        }
        source = err.source();
    }
    let effective = caps::read(None, caps::CapSet::Effective).unwrap_or_default();
    let privileged = effective.contains(&caps::Capability::CAP_SYS_ADMIN)
        || effective.contains(&caps::Capability::CAP_BPF);
    if matches!(errno, Some(libc::EPERM) | Some(libc::EACCES)) || !privileged {
        format!(
            "the kernel refused to create BPF maps or programs ({text}): run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE), and check that no security module blocks bpf()"
        )
    } else {
        format!(
            "loading the kernel object failed ({text}); run `monitor check` to see what this host supports, or use --no-ebpf for /proc-only monitoring"
        )
    }
}

fn release_free_heap() {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        debug!("could not raise RLIMIT_MEMLOCK; map creation may fail on kernels before 5.11");
    }
}
