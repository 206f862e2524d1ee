//! `monitor run`: the sampling loop (a plain thread, the synchronous core) and the tokio shell
//! around it (HTTP, kernel log records, signals).
pub mod alerting;
mod code_pages;
mod history;
mod limits_watch;
mod openapi_loader;
pub mod privileges;
pub mod requests_reader;

use std::{
    process::ExitCode,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tracing::{debug, error, info, warn};

use self::alerting::Alerting;
use self::limits_watch::LimitsWatch;
use crate::{
    collect::collector::{Collector, Due, Selector},
    collect::ebpf::{probes::Probes, selection::Selection},
    collect::procfs::ProcFs,
    commands::cli::RunArgs,
    config::Config,
    model::Model,
    notify::{Notifier, NotifierConfig},
    serve::events::EventLog,
    serve::exporter::Exporter,
    store::writer::{Writer, WriterMetrics},
    web::{listener::HttpLimits, live::LiveFeed, server, web_config_watch::WebConfigWatch},
};

/// Metrics, events (with syscall and route context) and the live page, readable by anyone who
/// can reach the port: say so loudly, and how to close it, when that is more than this host.
fn warn_if_exposed(listen: std::net::SocketAddr, web: Option<&WebConfigWatch>) {
    // Protected: encrypted, and only for those with a password or a verified certificate.
    let protected = web.is_some_and(|w| {
        let active = w.current();
        let config = &active.config;
        let verified_clients = config.tls.as_ref().is_some_and(|t| {
            t.client_auth == crate::web::web_config::ClientAuth::RequireAndVerifyClientCert
        });
        active.tls.is_some() && (!config.users.is_empty() || verified_clients)
    });
    if !listen.ip().is_loopback() && !protected {
        warn!(
            %listen,
            "THE ENDPOINT IS OPEN to every host that can reach {listen}: metrics, events and \
             the live page without TLS or a password. Secure it with --web.config.file FILE \
             (exporter-toolkit format: tls_server_config with cert_file and key_file, and \
             basic_auth_users with bcrypt hashes from `htpasswd -nBC 10 USER`), or listen on \
             127.0.0.1 behind a proxy that does"
        );
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let listen = args.listen.unwrap_or(config.listen);
    // Loaded before anything is attached: a bad file stops the start, naming file, line and key.
    let web = match args
        .web_config_file
        .as_ref()
        .or(config.web_config_file.as_ref())
    {
        Some(path) => Some(WebConfigWatch::load(path)?),
        None => None,
    };
    warn_if_exposed(listen, web.as_ref());
    let selector = match (&args.target.pid, &args.target.comm) {
        (Some(pid), _) => Selector::Pid(*pid),
        (None, Some(comm)) => Selector::Comm(comm.clone()),
        (None, None) => unreachable!("clap requires --pid or --comm"),
    };
    let procfs = ProcFs::system();
    let probes = load_probes(&args)?;
    let programs = probes
        .as_ref()
        .map(|p| p.programs.clone())
        .unwrap_or_default();
    let ebpf_on = probes.is_some();
    let args_no_ebpf = args.no_ebpf;
    let mut collector = Collector::new(procfs, probes, selector.clone(), 0)?;
    let name = match (&args.name, &selector) {
        (Some(n), _) => n.clone(),
        (None, Selector::Comm(c)) => c.clone(),
        (None, Selector::Pid(pid)) => collector.procfs().process(*pid)?.comm,
    };
    if collector.members().is_empty() {
        warn!(target_name = %name, "no process matches yet; serving app_up 0 until one starts");
    }
    let exporter = Arc::new(Exporter::new(
        &name,
        &programs,
        ebpf_on,
        !args.no_seed_names,
    )?);
    let logger = collector.probes_mut().and_then(|p| p.logger.take());
    let request_events = collector.probes_mut().and_then(|p| p.requests.take());
    let tracker = match &request_events {
        Some(_) => Some(requests_reader::tracker(&config.requests)?),
        None => None,
    };
    // Capabilities are per thread: dropped while the daemon has one, before the reader starts.
    drop_privileges(&mut collector);
    // Started after the drop: its thread must not keep what the others gave up.
    let history = start_history(&config, &exporter)?;
    // Dropping the sender's end is the reader's stop: it polls the other end with the ring.
    let (requests_stop_tx, requests_stop_rx) =
        std::os::unix::net::UnixStream::pair().context("making the requests reader's stop")?;
    let alerts_tracker = tracker.clone();
    let requests_reader = match (request_events, tracker) {
        (Some(events), Some(tracker)) => {
            exporter
                .attach_requests(tracker.clone())
                .context("registering the request series")?;
            Some(requests_reader::start(
                events,
                tracker,
                &config.requests,
                &collector.members(),
                requests_stop_rx,
            )?)
        }
        _ => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = server::bind(listen).await?;
        let instance = format!("{}:{}", hostname(), listen.port());
        let mut channels = config.notifiers.clone();
        if !channels
            .iter()
            .any(|c| matches!(c, NotifierConfig::Log { .. }))
        {
            // Every transition is logged, whatever else is configured.
            channels.push(NotifierConfig::Log { name: None });
        }
        let outbox = config.alerting.state_dir.join("outbox");
        let notifier = Arc::new(
            Notifier::start(
                channels,
                config.notify.clone(),
                outbox,
                instance.clone(),
                Some(exporter.registry()),
            )
            .await
            .context("starting the notifiers")?,
        );
        let events = EventLog::new(config.alerting.events_kept);
        let mut alerting =
            Alerting::new(&config, &name, &instance, events.clone(), notifier.clone());
        if let Some(tracker) = alerts_tracker {
            alerting.watch_requests(tracker);
        }
        info!(%listen, target_name = %name, ebpf = ebpf_on, "serving /metrics");
        // Startup is over (programs attached, the store opened and checked): its code out of RSS.
        match code_pages::trim() {
            Ok(bytes) => debug!(bytes, "startup code pages unmapped"),
            Err(e) => debug!(error = %e, "startup code pages not unmapped"),
        }
        let history_path = history.as_ref().map(|_| config.history_path());
        let live = LiveFeed::new(
            &name,
            config.cadence.cpu_memory,
            &programs,
            history_path.is_some(),
        );
        if !ebpf_on && !args_no_ebpf {
            live.ebpf_unavailable(
                "eBPF was refused at start; the daemon samples /proc only (see its log)",
            );
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<String>();
        let sampler = {
            let exporter = exporter.clone();
            let config = config.clone();
            let live = live.clone();
            std::thread::Builder::new()
                .name("sampler".into())
                .spawn(move || {
                    // Whatever ends the sampler (a panic included) must end the daemon: /metrics
                    // would otherwise serve the last values as if they were current.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        sample_loop(
                            collector,
                            &exporter,
                            &config,
                            alerting,
                            &live,
                            history.as_ref(),
                            &stop_rx,
                        )
                    }));
                    // What the writer holds is written before the daemon exits.
                    if let Some(h) = history {
                        h.finish();
                    }
                    let why = match outcome {
                        Ok(()) => "it returned".to_owned(),
                        Err(panic) => format!("it panicked: {}", panic_message(&panic)),
                    };
                    let _ = ended_tx.send(why);
                })
                .context("starting the sampler thread")?
        };
        let logs = async move {
            match logger {
                Some(logger) => forward_kernel_logs(logger).await,
                None => std::future::pending().await,
            }
        };
        let state = server::AppState {
            exporter,
            events,
            live,
            history: history_path,
        };
        let outcome = tokio::select! {
            r = server::serve(listener, state, server::ServeOptions {
                web,
                limits: HttpLimits {
                    max_connections: config.http.max_connections,
                    max_header_bytes: config.http.max_header_bytes,
                    header_timeout: config.http.header_timeout,
                },
            }) => r,
            r = shutdown_signal() => r,
            () = logs => Ok(()),
            why = ended_rx => Err(anyhow::anyhow!(
                "the sampler thread stopped ({}); exiting rather than serving stale values",
                why.unwrap_or_else(|_| "it vanished".to_owned())
            )),
        };
        let _ = stop_tx.send(());
        let _ = sampler.join();
        drop(requests_stop_tx);
        if let Some(reader) = requests_reader {
            let _ = reader.join();
        }
        // Give queued notifications a moment; what is left stays in the outbox for next time.
        if let Ok(notifier) = Arc::try_unwrap(notifier) {
            if let Err(e) = notifier.drain(std::time::Duration::from_secs(2)).await {
                warn!("{e:#}");
            }
            notifier.shutdown().await;
        }
        outcome.map(|()| ExitCode::SUCCESS)
    })
}

/// The history writer, unless `[history] enabled = false`.
fn start_history(config: &Config, exporter: &Exporter) -> anyhow::Result<Option<Writer>> {
    let h = &config.history;
    if !h.enabled {
        info!("[history] enabled = false: no history is kept");
        return Ok(None);
    }
    let path = config.history_path();
    info!(store = %path.display(), "keeping history");
    let metrics =
        WriterMetrics::new(exporter.registry()).context("registering the history series")?;
    Ok(Some(Writer::start(path, h.retention(), metrics)?))
}

/// Drops the capabilities not needed after attaching, while the daemon has one thread.
fn drop_privileges(collector: &mut Collector) {
    let keep_bpf = collector
        .probes_mut()
        .is_some_and(|p| privileges::map_access_needs_cap_bpf(&p.maps));
    if keep_bpf {
        info!(
            "this kernel checks CAP_BPF on every map access (before 6.5): keeping CAP_BPF to update the target set"
        );
    }
    match privileges::drop_unneeded(keep_bpf) {
        Ok(kept) => info!(?kept, "dropped capabilities not needed after attaching"),
        Err(e) => warn!("could not drop capabilities: {e}"),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

fn load_probes(args: &RunArgs) -> anyhow::Result<Option<Probes>> {
    if args.no_ebpf {
        warn!("--no-ebpf: /proc only; no syscall, fd or fault-exception counts");
        return Ok(None);
    }
    match Probes::load(&Selection::new(&args.programs)) {
        Ok(p) if args.require_ebpf && !p.all_attached() => {
            let failed: Vec<_> = p
                .programs
                .iter()
                .filter(|s| s.enabled && !s.attached())
                .map(|s| s.name)
                .collect();
            anyhow::bail!(
                "--require-ebpf: programs did not attach: {}",
                failed.join(", ")
            )
        }
        Ok(p) => Ok(Some(p)),
        Err(e) if args.require_ebpf => Err(e.context("--require-ebpf")),
        Err(e) => {
            error!(
                "eBPF IS NOT AVAILABLE, falling back to /proc only (monitor_ebpf_attached 0): {e:#}"
            );
            Ok(None)
        }
    }
}

/// Set to N to make the sampler panic at its (N+1)th sample: a test hook.
const SAMPLER_PANIC_ENV: &str = "MONITOR_TEST_SAMPLER_PANIC_AFTER";

/// Runs the cadences until `stop` fires: every kernel counter, CPU and memory at
/// `cadence.cpu_memory`, VMS and fds/threads on their own, and membership at `cadence.discovery`.
fn sample_loop(
    mut collector: Collector,
    exporter: &Exporter,
    config: &Config,
    mut alerting: Alerting,
    live: &LiveFeed,
    writer: Option<&Writer>,
    stop: &mpsc::Receiver<()>,
) {
    let c = &config.cadence;
    let mut limits = LimitsWatch::new();
    let mut model = Model::new(
        limits.read(&collector),
        config.window.peak.as_nanos() as u64,
    );
    exporter.update(&model);
    let start = Instant::now();
    let mut next = [start; 4]; // discovery, cpu_memory, vms, fds_threads
    let periods = [c.discovery, c.cpu_memory, c.vms, c.fds_threads];
    let mut was_up = !collector.members().is_empty();
    // A test hook: panic after this many samples, so the tests can show that a dead sampler
    // ends the daemon (tests/tests/daemon.rs).
    let mut panic_after: Option<u64> = std::env::var(SAMPLER_PANIC_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    loop {
        let now = Instant::now();
        let due_now: Vec<bool> = next.iter().map(|&t| now >= t).collect();
        for (i, due) in due_now.iter().enumerate() {
            if *due {
                next[i] = due_after(next[i], periods[i]);
                if next[i] <= now {
                    // Overran a whole period: skip ahead rather than burst.
                    next[i] = due_after(now, periods[i]);
                }
            }
        }
        let mut leader_changed = false;
        if due_now[0] {
            let before = collector.members().first().copied();
            if let Err(e) = collector.refresh_members() {
                warn!("refreshing the target's processes: {e:#}");
            }
            leader_changed = collector.members().first().copied() != before;
        }
        // Limits change under a running target (a container resized in place, a target that
        // restarts in another cgroup): re-read with the fds and threads, and at once when the
        // target (re)starts. Children that fork and go wait for the cadence: a fork-heavy
        // target would otherwise have every member's cgroup read each second.
        if due_now[3] || leader_changed {
            model.limits = limits.read(&collector);
        }
        if due_now[1] || due_now[2] || due_now[3] {
            let due = Due {
                vms: due_now[2],
                fds_threads: due_now[3],
            };
            if let Some(n) = panic_after.as_mut() {
                assert!(*n > 0, "{SAMPLER_PANIC_ENV} reached");
                *n -= 1;
            }
            match collector.sample(due) {
                Ok(s) => {
                    let at = std::time::SystemTime::now();
                    exporter.sampled_at(at);
                    if s.up != was_up {
                        if s.up {
                            info!("target is up ({} processes)", s.processes);
                        } else {
                            warn!("target has no live process; app_up 0 until it is back");
                        }
                        was_up = s.up;
                    }
                    model.update(s);
                    exporter.update(&model);
                    if due_now[1] {
                        let routes = alerting.on_sample(&model, exporter);
                        live.record(&model, &routes, &alerting.firing(), at);
                        // At the CPU/memory cadence: a regular series compresses best, and the
                        // slower readings repeat their last value in between.
                        if let Some(w) = writer {
                            w.send(history::batch(exporter.registry(), at));
                        }
                    }
                }
                Err(e) => {
                    exporter.sample_failed();
                    warn!("sampling failed: {e:#}");
                }
            }
            let took = now.elapsed();
            if took > c.cpu_memory / 2 {
                warn!(?took, "sampling took more than half the CPU/memory cadence");
            }
        }
        let wake = next.iter().min().copied().unwrap_or(now);
        match stop.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// `t + period`, or a day after `t` when that is past what an `Instant` holds. Config::load
/// keeps cadences within a day (config::MAX_CADENCE), so this only guards a Config built some
/// other way: a sampler that panics takes the whole daemon down.
fn due_after(t: Instant, period: Duration) -> Instant {
    t.checked_add(period)
        .or_else(|| t.checked_add(crate::config::MAX_CADENCE))
        .unwrap_or(t)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    info!("shutting down");
    Ok(())
}

/// Forwards aya-log records from the kernel programs to our log.
async fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the AsyncFd owns the logger, so the registered fd lives as long as the registration.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match fd {
        Ok(fd) => fd,
        Err(e) => {
            warn!("kernel log records unavailable: {e}");
            return std::future::pending().await;
        }
    };
    loop {
        match fd.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(e) => {
                warn!("kernel log records: {e}");
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_past_what_an_instant_holds_is_due_a_day_later() {
        let now = Instant::now();
        assert_eq!(
            due_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(
            due_after(now, Duration::MAX),
            now + crate::config::MAX_CADENCE
        );
    }
}
