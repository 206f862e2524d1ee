//! Prometheus series for one target, fed from the model; served as text on /metrics.
//!
//! Counters are cumulative in the kernel and in the model; here they only ever move forward
//! (`inc_by` the growth), so a transient lower reading (a race between maps and /proc) never
//! shows as a counter reset.
use prometheus::{
    CounterVec, Encoder as _, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Atomic, GenericCounter},
};

use crate::{
    collect::ebpf::probes::ProgramStatus,
    collect::limits::LimitSource,
    collect::sample::Sample,
    collect::syscall_names::{errno_name, syscall_name},
    model::{MIB, Model, seconds},
};

#[derive(Clone, Copy)]
struct Counted {
    fds: bool,
    switches: bool,
    fault_exceptions: bool,
}

pub struct Exporter {
    registry: Registry,
    target: String,
    /// Which kernel counters exist (`--programs`): a family left out exports no series rather
    /// than zeros that read as "nothing happened".
    counted: Counted,
    up: IntGaugeVec,
    processes: IntGaugeVec,
    cpu_percent: GaugeVec,
    cpu_percent_peak: GaugeVec,
    cpu_percent_avg_1m: GaugeVec,
    /// The seed's names (`app_memory_usage_mb*`), kept for its dashboards unless turned off: they
    /// are the only series promtool's lint flags (abbreviated unit).
    memory_mb: Option<[GaugeVec; 3]>,
    rss_peak_bytes: GaugeVec,
    rss_avg_1m_bytes: GaugeVec,
    memory_percent: GaugeVec,
    rss_bytes: IntGaugeVec,
    vms_bytes: IntGaugeVec,
    open_fds: IntGaugeVec,
    threads: IntGaugeVec,
    cpu_limit: GaugeVec,
    memory_limit: IntGaugeVec,
    oncpu_seconds: CounterVec,
    page_faults: IntCounterVec,
    fault_exceptions: IntCounterVec,
    context_switches: IntCounterVec,
    fd_opens: IntCounterVec,
    fd_closes: IntCounterVec,
    fd_close_range_calls: IntCounterVec,
    fd_open_errors: IntCounterVec,
    syscalls: IntCounterVec,
    syscall_seconds: CounterVec,
    syscall_latency_lost: IntCounterVec,
    kernel_map_full: IntCounterVec,
    last_sample: prometheus::Gauge,
    sample_failures: prometheus::IntCounter,
    ebpf_attached: IntGaugeVec,
    cpu_spikes: IntCounterVec,
    alerts_firing: IntGaugeVec,
    /// The target's on-CPU total, for the request series' unattributed CPU.
    oncpu_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Exporter {
    pub fn new(
        target: &str,
        programs: &[ProgramStatus],
        ebpf_wanted: bool,
        seed_names: bool,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let t = &["target"];
        macro_rules! reg {
            ($kind:ident, $name:expr, $help:expr, $labels:expr) => {{
                let m = $kind::new(opts($name, $help), $labels)?;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let on =
            |name: &str| ebpf_wanted && programs.iter().any(|s| s.name == name && s.attached());
        let counted = Counted {
            fds: on("sys_exit"),
            switches: on("sched_switch") || !ebpf_wanted,
            fault_exceptions: on("page_fault_user"),
        };
        let e = Self {
            counted,
            up: reg!(
                IntGaugeVec,
                "app_up",
                "1 while at least one process of the target is alive",
                t
            ),
            processes: reg!(
                IntGaugeVec,
                "app_processes",
                "Processes in the target (root and descendants)",
                t
            ),
            cpu_percent: reg!(
                GaugeVec,
                "app_cpu_usage_percent",
                "On-CPU time over the last CPU interval as a percentage of the CPUs available to the target (see app_cpu_limit_cores)",
                t
            ),
            cpu_percent_peak: reg!(
                GaugeVec,
                "app_cpu_usage_percent_peak",
                "Peak of app_cpu_usage_percent over the configured peak window",
                t
            ),
            cpu_percent_avg_1m: reg!(
                GaugeVec,
                "app_cpu_usage_percent_avg_1m",
                "Moving average of app_cpu_usage_percent over 1 minute",
                t
            ),
            memory_mb: if seed_names {
                Some([
                    reg!(
                        GaugeVec,
                        "app_memory_usage_mb",
                        "Resident memory (RSS) of the target in MiB (the seed's name; app_resident_memory_bytes in bytes)",
                        t
                    ),
                    reg!(
                        GaugeVec,
                        "app_memory_usage_mb_peak",
                        "Peak of app_memory_usage_mb over the configured peak window",
                        t
                    ),
                    reg!(
                        GaugeVec,
                        "app_memory_usage_mb_avg_1m",
                        "Moving average of app_memory_usage_mb over 1 minute",
                        t
                    ),
                ])
            } else {
                None
            },
            rss_peak_bytes: reg!(
                GaugeVec,
                "app_resident_memory_peak_bytes",
                "Peak RSS over the configured peak window",
                t
            ),
            rss_avg_1m_bytes: reg!(
                GaugeVec,
                "app_resident_memory_avg_1m_bytes",
                "Moving average of RSS over 1 minute",
                t
            ),
            memory_percent: reg!(
                GaugeVec,
                "app_memory_usage_percent",
                "RSS as a percentage of the effective memory limit (see app_memory_limit_bytes)",
                t
            ),
            rss_bytes: reg!(
                IntGaugeVec,
                "app_resident_memory_bytes",
                "Resident memory (RSS) of the target in bytes",
                t
            ),
            vms_bytes: reg!(
                IntGaugeVec,
                "app_virtual_memory_bytes",
                "Virtual memory size of the target in bytes",
                t
            ),
            open_fds: reg!(
                IntGaugeVec,
                "app_open_fds",
                "Open file descriptors of the target",
                t
            ),
            threads: reg!(IntGaugeVec, "app_threads", "Threads of the target", t),
            cpu_limit: reg!(
                GaugeVec,
                "app_cpu_limit_cores",
                "CPUs available to the target; source is the limit that binds: cgroup_v2 or cgroup_v1 (a CFS quota), cpuset (cpusets and affinity masks) or host (online CPUs)",
                &["target", "source"]
            ),
            memory_limit: reg!(
                IntGaugeVec,
                "app_memory_limit_bytes",
                "Effective memory limit; source is the limit that binds: cgroup_v2 (memory.max), cgroup_v1 (memory.limit_in_bytes) or host (MemTotal)",
                &["target", "source"]
            ),
            oncpu_seconds: reg!(
                CounterVec,
                "app_oncpu_seconds_total",
                "Time the target's threads spent on a CPU since they started (scheduler accounting)",
                t
            ),
            page_faults: reg!(
                IntCounterVec,
                "app_page_faults_total",
                "Page faults as the kernel accounts them per task (minor/major), since the processes started",
                &["target", "kind"]
            ),
            fault_exceptions: reg!(
                IntCounterVec,
                "app_page_fault_exceptions_total",
                "Page-fault exceptions seen by the kernel programs, by the mode they were raised in",
                &["target", "mode"]
            ),
            context_switches: reg!(
                IntCounterVec,
                "app_context_switches_total",
                "Context switches of the target's threads (voluntary: blocked; involuntary: preempted)",
                &["target", "kind"]
            ),
            fd_opens: reg!(
                IntCounterVec,
                "app_fd_opens_total",
                "File descriptors created (open*, socket, accept, dup*, pipe*, eventfd, epoll_create, ...)",
                t
            ),
            fd_closes: reg!(
                IntCounterVec,
                "app_fd_closes_total",
                "Successful close() calls",
                t
            ),
            fd_close_range_calls: reg!(
                IntCounterVec,
                "app_fd_close_range_calls_total",
                "Successful close_range() calls (each closes any number of descriptors)",
                t
            ),
            fd_open_errors: reg!(
                IntCounterVec,
                "app_fd_open_errors_total",
                "Failed open, openat, openat2, creat and open_by_handle_at calls by errno",
                &["target", "errno"]
            ),
            syscalls: reg!(
                IntCounterVec,
                "app_syscalls_total",
                "Syscalls made by the target",
                &["target", "syscall"]
            ),
            syscall_seconds: reg!(
                CounterVec,
                "app_syscall_seconds_total",
                "Time spent in syscalls (entry to exit, including time blocked)",
                &["target", "syscall"]
            ),
            syscall_latency_lost: reg!(
                IntCounterVec,
                "monitor_syscall_latency_lost_total",
                "Syscalls counted without latency (attached mid-call, or a start slot shared by two threads)",
                t
            ),
            last_sample: {
                let g = prometheus::Gauge::with_opts(opts(
                    "monitor_last_sample_timestamp_seconds",
                    "When the target was last sampled (Unix time); alert on time() minus this growing beyond a few cadences",
                ))?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            sample_failures: {
                let c = prometheus::IntCounter::with_opts(opts(
                    "monitor_sample_failures_total",
                    "Samples that failed (the reason is in the daemon's log); the values shown are then the last good ones",
                ))?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            kernel_map_full: reg!(
                IntCounterVec,
                "monitor_kernel_map_full_total",
                "Inserts into a kernel map that failed for lack of room (TARGETS: a fork not followed; THREAD_STATS: a thread's on-CPU time counted only at its exit; SYSCALL_STARTS: latency lost)",
                &["map"]
            ),
            ebpf_attached: reg!(
                IntGaugeVec,
                "monitor_ebpf_attached",
                "1 if the kernel program is attached, 0 if it failed or eBPF is off",
                &["program"]
            ),
            cpu_spikes: reg!(
                IntCounterVec,
                "app_cpu_spikes_total",
                "CPU spikes detected (above the static threshold or far above the recent baseline); context at /api/events",
                t
            ),
            alerts_firing: reg!(
                IntGaugeVec,
                "monitor_alerts_firing",
                "1 for each alert that is firing now",
                &["alertname", "severity"]
            ),
            registry,
            target: target.to_owned(),
            oncpu_ns: Default::default(),
        };
        #[cfg(target_os = "linux")]
        e.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let build_info = IntGaugeVec::new(
            opts(
                "monitor_build_info",
                "1, labelled with the version and git revision monitor was built from",
            ),
            &["version", "revision"],
        )?;
        e.registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("MONITOR_REVISION")])
            .set(1);
        for &name in crate::collect::ebpf::probes::PROGRAMS {
            e.ebpf_attached
                .with_label_values(&[name])
                .set(on(name) as i64);
        }
        e.syscall_latency_lost
            .with_label_values(&[target])
            .inc_by(0);
        // From 0, so that `increase()` counts the first spike too.
        e.cpu_spikes.with_label_values(&[target]).inc_by(0);
        if ebpf_wanted {
            for name in monitor_common::map_full::NAMES {
                e.kernel_map_full.with_label_values(&[name]).inc_by(0);
            }
        }
        Ok(e)
    }

    pub fn update(&self, model: &Model) {
        let t = self.target.as_str();
        let l = &model.limits;
        self.cpu_limit
            .with_label_values(&[t, l.cpu_source.as_str()])
            .set(l.cpus);
        self.memory_limit
            .with_label_values(&[t, l.memory_source.as_str()])
            .set(l.memory_bytes as i64);
        // One series per target: when the limit that binds changes, the old source's goes
        // (after the new one is set, so a scrape in between sees one of the two, never none).
        for source in LimitSource::ALL {
            if source != l.cpu_source {
                let _ = self.cpu_limit.remove_label_values(&[t, source.as_str()]);
            }
            if source != l.memory_source {
                let _ = self.memory_limit.remove_label_values(&[t, source.as_str()]);
            }
        }
        let Some(s) = &model.latest else { return };
        self.up.with_label_values(&[t]).set(s.up as i64);
        self.processes
            .with_label_values(&[t])
            .set(s.processes as i64);
        if let Some(cpu) = model.cpu_percent {
            self.cpu_percent.with_label_values(&[t]).set(cpu);
        }
        set_opt(&self.cpu_percent_peak, t, model.cpu_peak.peak());
        set_opt(&self.cpu_percent_avg_1m, t, model.cpu_avg_1m.mean());
        let (peak, avg) = (model.memory_peak.peak(), model.memory_avg_1m.mean());
        if s.up {
            self.rss_bytes
                .with_label_values(&[t])
                .set(s.rss_bytes as i64);
            set_opt(&self.memory_percent, t, model.memory_percent());
        }
        set_opt(&self.rss_peak_bytes, t, peak.map(|mb| mb * MIB));
        set_opt(&self.rss_avg_1m_bytes, t, avg.map(|mb| mb * MIB));
        if let Some([now, peak_mb, avg_mb]) = &self.memory_mb {
            if s.up {
                now.with_label_values(&[t]).set(s.rss_bytes as f64 / MIB);
            }
            set_opt(peak_mb, t, peak);
            set_opt(avg_mb, t, avg);
        }
        for (gauge, value) in [
            (&self.vms_bytes, s.vms_bytes),
            (&self.open_fds, s.open_fds),
            (&self.threads, s.threads),
        ] {
            if let Some(v) = value.filter(|_| s.up) {
                gauge.with_label_values(&[t]).set(v as i64);
            }
        }
        self.update_counters(s);
    }

    fn update_counters(&self, s: &Sample) {
        let t = self.target.as_str();
        advance(
            &self.oncpu_seconds.with_label_values(&[t]),
            seconds(s.oncpu_ns),
        );
        self.oncpu_ns
            .fetch_max(s.oncpu_ns, std::sync::atomic::Ordering::Relaxed);
        advance(
            &self.page_faults.with_label_values(&[t, "minor"]),
            s.minor_faults,
        );
        advance(
            &self.page_faults.with_label_values(&[t, "major"]),
            s.major_faults,
        );
        if self.counted.switches {
            advance(
                &self.context_switches.with_label_values(&[t, "voluntary"]),
                s.switches_voluntary,
            );
            advance(
                &self.context_switches.with_label_values(&[t, "involuntary"]),
                s.switches_involuntary,
            );
        }
        let Some(k) = &s.kernel else { return };
        if self.counted.fault_exceptions {
            advance(
                &self.fault_exceptions.with_label_values(&[t, "user"]),
                k.fault_exceptions_user,
            );
            advance(
                &self.fault_exceptions.with_label_values(&[t, "kernel"]),
                k.fault_exceptions_kernel,
            );
        }
        if self.counted.fds {
            advance(&self.fd_opens.with_label_values(&[t]), k.fd_opens);
            advance(&self.fd_closes.with_label_values(&[t]), k.fd_closes);
            advance(
                &self.fd_close_range_calls.with_label_values(&[t]),
                k.fd_close_range_calls,
            );
            for &(errno, n) in &k.fd_open_errors_by_errno {
                advance(
                    &self
                        .fd_open_errors
                        .with_label_values(&[t, &errno_name(errno)]),
                    n,
                );
            }
        }
        for (nr, stat) in &k.syscalls {
            let name = syscall_name(*nr);
            advance(&self.syscalls.with_label_values(&[t, &name]), stat.count);
            advance(
                &self.syscall_seconds.with_label_values(&[t, &name]),
                seconds(stat.total_ns),
            );
        }
        advance(
            &self.syscall_latency_lost.with_label_values(&[t]),
            k.syscall_latency_lost,
        );
        for &(map, n) in &k.map_full {
            advance(&self.kernel_map_full.with_label_values(&[map]), n);
        }
    }

    /// Serves the request series of `tracker` (the requests family is attached).
    pub fn attach_requests(
        &self,
        tracker: crate::requests::SharedTracker,
    ) -> prometheus::Result<()> {
        let metrics = super::request_metrics::RequestMetrics::new(
            &self.target,
            tracker,
            self.oncpu_ns.clone(),
        )?;
        self.registry.register(Box::new(metrics))
    }

    /// Records a successful sample taken at `at`.
    pub fn sampled_at(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sample.set(secs);
    }

    pub fn sample_failed(&self) {
        self.sample_failures.inc();
    }

    pub fn count_spike(&self) {
        self.cpu_spikes.with_label_values(&[&self.target]).inc();
    }

    /// Sets the firing alerts (and only them) to 1.
    pub fn set_firing(&self, firing: &[(String, crate::alerts::Severity)]) {
        self.alerts_firing.reset();
        for (name, severity) in firing {
            self.alerts_firing
                .with_label_values(&[name, severity.as_str()])
                .set(1);
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which registration rejects.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn set_opt(g: &GaugeVec, target: &str, v: Option<f64>) {
    if let Some(v) = v {
        g.with_label_values(&[target]).set(v);
    }
}

/// Moves a counter up to `total`; never down.
fn advance<P: Atomic>(counter: &GenericCounter<P>, total: P::T)
where
    P::T: PartialOrd + std::ops::Sub<Output = P::T>,
{
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
