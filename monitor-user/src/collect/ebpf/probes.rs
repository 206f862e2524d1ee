//! Loading the kernel object and attaching each program, with errors that say what to do.
//!
//! Every program is attached on its own so that one the kernel refuses does not take the others
//! down; the caller gets a status per program (exported as `monitor_ebpf_attached{program}`).
use std::path::Path;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::RawTracePoint};
use monitor_common::globals;
use tracing::{debug, info, warn};

use super::{
    btf::{KernelBtf, TracepointArgs, VMLINUX_BTF},
    maps::KernelMaps,
    request_events::RequestEvents,
    selection::Selection,
};

/// The kernel object built by build.rs from monitor-ebpf.
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// The programs, as `--programs` selects them, `monitor check` lists them and
/// `monitor_ebpf_attached{program}` labels them. Each is one or two functions of monitor-ebpf,
/// picked for the running kernel by [`variant`].
pub const PROGRAMS: &[&str] = &[
    "sys_enter",
    "sys_exit",
    "sched_switch",
    "sched_process_fork",
    "sched_process_exit",
    "page_fault_user",
    "page_fault_kernel",
    "requests",
];

/// Entries of the per-thread map (live target threads whose on-CPU time is kept individually),
/// when the default (MAX_TARGET_THREADS) is not what the host needs: a service with tens of
/// thousands of threads alive, or a test that fills it on purpose.
pub const MAX_THREADS_ENV: &str = "MONITOR_MAX_TARGET_THREADS";

/// Set to 1 to take the variants for the oldest kernels even where newer ones fit (they are
/// correct on every kernel), so a new kernel's test run covers them too.
pub const COMPAT_VARIANTS_ENV: &str = "MONITOR_COMPAT_VARIANTS";

/// How a program is realised on this kernel: the monitor-ebpf functions to load with the raw
/// tracepoint each attaches to, and what `monitor check` says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub parts: &'static [(&'static str, &'static str)],
    pub mechanism: &'static str,
}

/// The variant of `program` that fits the tracepoint prototypes of the running kernel. Variants
/// never read an argument the kernel does not pass (that attach fails with EINVAL), and what an
/// older kernel does not pass is derived from the task (see monitor-ebpf's sched.rs, targets.rs).
pub fn variant(program: &'static str, args: &TracepointArgs, compat: bool) -> Variant {
    let newest = |n: Option<usize>, since: usize| !compat && n.is_some_and(|n| n >= since);
    match program {
        "sched_switch" if newest(args.sched_switch, 4) => Variant {
            parts: &[("sched_switch", "sched_switch")],
            mechanism: "raw tracepoint sched_switch, prev_state from its 4th argument (5.18+)",
        },
        "sched_switch" => Variant {
            parts: &[("sched_switch_task_state", "sched_switch")],
            mechanism: "raw tracepoint sched_switch (3 arguments), prev_state read from task_struct",
        },
        "sched_process_exit" if newest(args.sched_process_exit, 2) => Variant {
            parts: &[
                ("sched_process_exit", "sched_process_exit"),
                ("sched_process_free", "sched_process_free"),
            ],
            mechanism: "raw tracepoints sched_process_exit (group_dead from its 2nd argument, 6.16+) + sched_process_free",
        },
        "sched_process_exit" => Variant {
            parts: &[
                ("sched_process_exit_thread", "sched_process_exit"),
                ("sched_process_free", "sched_process_free"),
            ],
            mechanism: "raw tracepoints sched_process_exit (1 argument) + sched_process_free: a process ends when its group leader is freed",
        },
        "sys_enter" => Variant {
            parts: &[("sys_enter", "sys_enter")],
            mechanism: "raw tracepoint sys_enter",
        },
        "sys_exit" => Variant {
            parts: &[("sys_exit", "sys_exit")],
            mechanism: "raw tracepoint sys_exit",
        },
        "sched_process_fork" => Variant {
            parts: &[("sched_process_fork", "sched_process_fork")],
            mechanism: "raw tracepoint sched_process_fork",
        },
        "page_fault_user" => Variant {
            parts: &[("page_fault_user", "page_fault_user")],
            mechanism: "raw tracepoint page_fault_user",
        },
        "page_fault_kernel" => Variant {
            parts: &[("page_fault_kernel", "page_fault_kernel")],
            mechanism: "raw tracepoint page_fault_kernel",
        },
        "requests" => Variant {
            parts: &[
                ("requests_sys_exit", "sys_exit"),
                ("requests_waking", "sched_waking"),
                ("requests_wakeup_new", "sched_wakeup_new"),
            ],
            mechanism: "raw tracepoints sys_exit (socket reads and writes), sched_waking and sched_wakeup_new (hand-overs), ring buffer; each event's CPU from sched_switch's per-thread accounting",
        },
        other => unreachable!("{other} is not in PROGRAMS"),
    }
}

/// The requests family when the syscalls family's sys_exit program is attached too: that program
/// does the family's exit work, so a target's syscall runs one program at its exit, not two.
pub const REQUESTS_IN_SYS_EXIT: Variant = Variant {
    parts: &[
        ("requests_waking", "sched_waking"),
        ("requests_wakeup_new", "sched_wakeup_new"),
    ],
    mechanism: "the sys_exit program (socket reads and writes), raw tracepoints sched_waking and sched_wakeup_new (hand-overs), ring buffer; each event's CPU from sched_switch's per-thread accounting",
};

/// Programs without which the target set cannot follow forks and exits: if they fail, nothing
/// the others count can be attributed correctly.
const ESSENTIAL: &[&str] = &["sched_process_fork", "sched_process_exit"];

#[derive(Clone, Debug)]
pub struct ProgramStatus {
    pub name: &'static str,
    /// How it is attached on this kernel (`monitor check` prints it).
    pub mechanism: &'static str,
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

/// Whether the program `name` is among `programs` and attached.
pub fn is_attached(programs: &[ProgramStatus], name: &str) -> bool {
    programs.iter().any(|p| p.name == name && p.attached())
}

/// Loaded and attached programs. Dropping this detaches everything.
pub struct Probes {
    pub maps: KernelMaps,
    pub programs: Vec<ProgramStatus>,
    /// Kept alive: links are owned by the programs inside.
    _ebpf: Ebpf,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The requests family's events, when it is attached (taken by the daemon's reader).
    pub requests: Option<RequestEvents>,
}

impl Probes {
    /// Loads the object and attaches every program. Fails only when nothing useful can run
    /// (no BTF, the kernel refuses to load, or the fork/exit followers cannot attach).
    pub fn load(selection: &Selection) -> anyhow::Result<Self> {
        raise_memlock_limit();
        let kernel = KernelBtf::from_btf_file(Path::new(VMLINUX_BTF))?;
        let offsets = kernel.offsets;
        let compat = std::env::var_os(COMPAT_VARIANTS_ENV).is_some_and(|v| v == "1");
        let exit_knows_group_dead = u32::from(
            variant("sched_process_exit", &kernel.tracepoints, compat)
                .parts
                .contains(&("sched_process_exit", "sched_process_exit")),
        );
        // Parsing the kernel's BTF took tens of MB of small allocations, all freed now: return
        // them, or they stay in the daemon's RSS.
        release_free_heap();
        let index_entries = super::target_index::entries_for_host()?;
        let thread_entries = match std::env::var(MAX_THREADS_ENV) {
            Ok(v) => v.parse::<u32>().ok().filter(|&n| n > 0).with_context(|| {
                format!("{MAX_THREADS_ENV}={v:?} is not a positive number of threads")
            })?,
            Err(_) => monitor_common::MAX_TARGET_THREADS,
        };
        let requests = selection.wants("requests");
        let requests_in_sys_exit = requests && selection.wants("sys_exit");
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(monitor_common::maps::TARGET_INDEX, index_entries)
            .map_max_entries(monitor_common::maps::THREAD_STATS, thread_entries)
            // Left out, the requests family's maps are not worth their kernel memory (the ring's
            // 4 MiB, the preallocated connection table): each is made as small as it can be.
            .map_max_entries(
                monitor_common::maps::REQUEST_EVENTS,
                if requests {
                    monitor_common::requests::RING_BYTES
                } else {
                    4096
                },
            )
            .map_max_entries(
                monitor_common::maps::HTTP_CONNECTIONS,
                if requests {
                    monitor_common::requests::MAX_HTTP_CONNECTIONS
                } else {
                    64
                },
            )
            .map_max_entries(
                monitor_common::maps::HTTP_PROCESSES,
                if requests {
                    monitor_common::requests::MAX_HTTP_PROCESSES
                } else {
                    64
                },
            )
            .override_global(globals::TASK_PID_OFFSET, &offsets.pid, true)
            .override_global(globals::TASK_TGID_OFFSET, &offsets.tgid, true)
            .override_global(globals::TASK_MIN_FLT_OFFSET, &offsets.min_flt, true)
            .override_global(globals::TASK_MAJ_FLT_OFFSET, &offsets.maj_flt, true)
            .override_global(
                globals::TASK_SUM_EXEC_OFFSET,
                &offsets.sum_exec_runtime,
                true,
            )
            .override_global(globals::TASK_STATE_OFFSET, &offsets.state, true)
            .override_global(
                globals::TASK_GROUP_LEADER_OFFSET,
                &offsets.group_leader,
                true,
            )
            .override_global(globals::EXIT_KNOWS_GROUP_DEAD, &exit_knows_group_dead, true)
            .override_global(globals::REQUESTS_ENABLED, &u32::from(requests), true)
            .override_global(
                globals::REQUESTS_IN_SYS_EXIT,
                &u32::from(requests_in_sys_exit),
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
        for &name in PROGRAMS {
            let variant = if name == "requests" && requests_in_sys_exit {
                REQUESTS_IN_SYS_EXIT
            } else {
                variant(name, &kernel.tracepoints, compat)
            };
            if !selection.wants(name) {
                info!(program = name, "left out (--programs)");
                programs.push(ProgramStatus {
                    name,
                    mechanism: variant.mechanism,
                    enabled: false,
                    error: None,
                });
                continue;
            }
            let error = variant
                .parts
                .iter()
                .try_for_each(|&(function, tracepoint)| attach(&mut ebpf, function, tracepoint))
                .err()
                .map(|e| format!("{e:#}"));
            match &error {
                None => info!(program = name, mechanism = variant.mechanism, "attached"),
                Some(e) => warn!(program = name, "not attached: {e}"),
            }
            programs.push(ProgramStatus {
                name,
                mechanism: variant.mechanism,
                enabled: true,
                error,
            });
        }
        // Request events measure CPU from sched_switch's per-thread accounting: without it they
        // would count requests with no CPU, which is worse than saying the family is missing.
        let sched_attached = is_attached(&programs, "sched_switch");
        if let Some(p) = programs
            .iter_mut()
            .find(|p| p.name == "requests" && p.attached() && !sched_attached)
        {
            p.error = Some("needs sched_switch, which did not attach".into());
        }
        // Sharing sys_exit, the family sees no socket I/O without it.
        let sys_exit_attached = is_attached(&programs, "sys_exit");
        if let Some(p) = programs.iter_mut().find(|p| {
            p.name == "requests" && p.attached() && requests_in_sys_exit && !sys_exit_attached
        }) {
            p.error = Some("needs the sys_exit program it shares, which did not attach".into());
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
        let mut maps = KernelMaps::take(&mut ebpf).context("taking the kernel maps")?;
        let requests = if is_attached(&programs, "requests") {
            Some(RequestEvents::take(&mut ebpf).context("taking the request events")?)
        } else {
            None
        };
        if sched_attached {
            maps.set_sched_attached()?;
        }
        // The loader parsed the kernel's BTF again for relocations.
        release_free_heap();
        Ok(Self {
            maps,
            programs,
            _ebpf: ebpf,
            logger,
            requests,
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

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: TracepointArgs = TracepointArgs {
        sched_switch: Some(3),
        sched_process_exit: Some(1),
    };
    const NEW: TracepointArgs = TracepointArgs {
        sched_switch: Some(4),
        sched_process_exit: Some(2),
    };
    const UNKNOWN: TracepointArgs = TracepointArgs {
        sched_switch: None,
        sched_process_exit: None,
    };

    fn functions(args: &TracepointArgs, compat: bool) -> Vec<&'static str> {
        PROGRAMS
            .iter()
            .flat_map(|p| variant(p, args, compat).parts.iter().map(|&(f, _)| f))
            .collect()
    }

    #[test]
    fn newest_variants_where_the_arguments_exist() {
        let f = functions(&NEW, false);
        assert!(f.contains(&"sched_switch") && f.contains(&"sched_process_exit"));
        assert!(!f.contains(&"sched_process_exit_thread"));
    }

    #[test]
    fn old_kernels_and_unknown_prototypes_get_the_variants_that_read_fewest_arguments() {
        for args in [
            OLD,
            UNKNOWN,
            TracepointArgs {
                sched_switch: Some(4),
                ..OLD
            },
        ] {
            let f = functions(&args, false);
            assert!(f.contains(&"sched_process_exit_thread") && f.contains(&"sched_process_free"));
            assert!(!f.contains(&"sched_process_exit"));
        }
        let f = functions(&OLD, false);
        assert!(f.contains(&"sched_switch_task_state") && !f.contains(&"sched_switch"));
    }

    #[test]
    fn compat_forces_the_old_variants_on_a_new_kernel() {
        assert_eq!(functions(&NEW, true), functions(&OLD, false));
    }
}
