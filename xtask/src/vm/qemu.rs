//! Host side of a boot: two virtiofsd daemons (the host's root, read-only; the results
//! directory, writable) and qemu under TCG, with the serial console streamed to the terminal and
//! a log, and a wall-clock timeout.
//!
//! virtio-fs rather than 9p because Debian's cloud kernels lack 9p (see initramfs.rs). It needs a
//! vhost-user daemon: a virtiofsd on the machine if there is one (Debian 13 packages it), else
//! the crates.io one built once into the cache, as setup.rs does for bpf-linker. vhost-user
//! also needs the guest's RAM in shared memory, hence the memfd memory backend.
use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    initramfs::{HEARTBEAT_FILE, RESULTS_TAG, ROOT_TAG, SUITE_STARTING},
    stale_code::{self, StaleCode},
};

const VIRTIOFSD_VERSION: &str = "1.14.0";
const MEMORY_MIB: u32 = 2048;
/// Serial lines kept for a failure report.
pub const TAIL_LINES: usize = 30;
/// A guest whose heartbeat (written every few seconds, see initramfs.rs) is older than this has
/// stopped: even a loaded emulated guest runs a shell loop that often.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(120);

pub struct BootSpec<'a> {
    /// Prefix of every streamed line, e.g. `6.1`.
    pub label: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// Host directory the guest mounts writable (tag `results`).
    pub results: &'a Path,
    /// Where serial.log and the daemons' logs go.
    pub log_dir: &'a Path,
    pub timeout: Duration,
    pub virtiofsd: &'a Path,
}

/// Why a boot was stopped before its suite ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The console showed QEMU running stale code (see stale_code.rs).
    StaleCode(StaleCode),
    /// The guest's heartbeat stopped, with nothing on the console that says why.
    Silent(Duration),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StaleCode(what) => write!(f, "stale code under TCG: {what}"),
            Self::Silent(d) => write!(
                f,
                "the guest stopped: no heartbeat for {} s and no kernel message",
                d.as_secs()
            ),
        }
    }
}

pub struct Boot {
    pub timed_out: bool,
    /// Set when the guest was stopped early because it could not finish.
    pub stopped: Option<Stopped>,
    /// What the console showed of stale code, whether or not the guest was stopped for it.
    pub stale: Option<StaleCode>,
    /// qemu's own exit status (None when it was killed at the timeout).
    pub status: Option<ExitStatus>,
    /// From qemu's start to the init announcing the suite.
    pub boot_time: Option<Duration>,
    /// The last serial (and qemu stderr) lines.
    pub tail: Vec<String>,
    pub serial_log: PathBuf,
}

/// A virtiofsd binary: the system's if it is the Rust one (Debian 13 packages it), else ours,
/// built on first use. Debian 12's qemu ships the old C virtiofsd (/usr/lib/qemu/virtiofsd),
/// which has no read-only mode, so it is not used: the host's root must stay untouchable.
pub fn virtiofsd() -> anyhow::Result<PathBuf> {
    let system = Path::new("/usr/libexec/virtiofsd");
    if system.is_file() && has_readonly_mode(system) {
        return Ok(system.into());
    }
    let root = crate::setup::cache_dir().join(format!("virtiofsd-{VIRTIOFSD_VERSION}"));
    let bin = root.join("bin/virtiofsd");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: building virtiofsd {VIRTIOFSD_VERSION} (once, a few minutes; Debian 12 does not \
         package it)"
    );
    // The binary requires the seccomp feature (libseccomp); we start it with `--seccomp=none`.
    super::status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                &format!("virtiofsd@{VIRTIOFSD_VERSION}"),
                "--locked",
                "--root",
            ])
            .arg(&root),
    )
    .context("building virtiofsd (it needs libcap-ng-dev and libseccomp-dev: cargo xtask setup --test-deps)")?;
    Ok(bin)
}

fn has_readonly_mode(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--readonly"))
}

/// Kills and reaps a child we started when dropped, so no daemon outlives a failed boot.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_virtiofsd(
    binary: &Path,
    socket: &Path,
    shared: &Path,
    readonly: bool,
    log: &Path,
) -> anyhow::Result<Reaped> {
    let _ = std::fs::remove_file(socket);
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", shared.display()))
        // We are root; a chroot into the shared directory is enough of a jail, and the
        // namespace sandbox may not be allowed inside containers.
        .arg("--sandbox=chroot")
        .arg("--cache=auto")
        // No daemon killed over a syscall its allow-list did not foresee on a newer host.
        .arg("--seccomp=none")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("duplicating a log handle")?)
        .stderr(log_file);
    if readonly {
        cmd.arg("--readonly");
    }
    let mut child = Reaped(cmd.spawn().with_context(|| format!("starting {cmd:?}"))?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if let Some(status) = child.0.try_wait().context("polling virtiofsd")? {
            bail!(
                "virtiofsd for {} exited with {status} before listening: {}",
                shared.display(),
                std::fs::read_to_string(log).unwrap_or_default().trim()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "virtiofsd for {} did not create {} within 20 s",
                shared.display(),
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// Boots the kernel, streams its console, and returns when qemu exits or the timeout kills it.
pub fn boot(spec: &BootSpec) -> anyhow::Result<Boot> {
    std::fs::create_dir_all(spec.log_dir)
        .with_context(|| format!("creating {}", spec.log_dir.display()))?;
    // Unix socket paths are limited to 108 bytes, so they live in a short temporary directory.
    let sockets =
        std::env::temp_dir().join(format!("monitor-vm-{}-{}", std::process::id(), spec.label));
    let _ = std::fs::remove_dir_all(&sockets);
    std::fs::create_dir_all(&sockets).with_context(|| format!("creating {}", sockets.display()))?;
    let root_socket = sockets.join("root.sock");
    let results_socket = sockets.join("results.sock");
    let result = (|| {
        let _root_fs = start_virtiofsd(
            spec.virtiofsd,
            &root_socket,
            Path::new("/"),
            true,
            &spec.log_dir.join("virtiofsd-root.log"),
        )?;
        let _results_fs = start_virtiofsd(
            spec.virtiofsd,
            &results_socket,
            spec.results,
            false,
            &spec.log_dir.join("virtiofsd-results.log"),
        )?;
        run_qemu(spec, &root_socket, &results_socket)
    })();
    let _ = std::fs::remove_dir_all(&sockets);
    result
}

fn qemu_command(spec: &BootSpec, root_socket: &Path, results_socket: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // Single-threaded TCG: the two vCPUs take turns on one host thread, so a jump label the
    // kernel rewrites is retranslated before the other vCPU runs again. Multi-threaded TCG let
    // a vCPU run a stale translation holding the rewrite's int3 (see stale_code.rs), which
    // killed one boot in three on 6.12.
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2"])
        .args(["-m", &MEMORY_MIB.to_string()])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on"),
            "-machine",
            "pc,memory-backend=mem",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(spec.vmlinuz)
        .arg("-initrd")
        .arg(spec.initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=5 edd=off"])
        .args([
            "-chardev",
            &format!("socket,id=fsroot,path={}", root_socket.display()),
            "-device",
            &format!("vhost-user-fs-pci,chardev=fsroot,tag={ROOT_TAG},queue-size=1024"),
            "-chardev",
            &format!("socket,id=fsresults,path={}", results_socket.display()),
            "-device",
            &format!("vhost-user-fs-pci,chardev=fsresults,tag={RESULTS_TAG},queue-size=1024"),
        ])
        .args(["-device", "virtio-rng-pci"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What the reader threads share: the log, the tail, and when the suite started.
struct Console {
    log: std::fs::File,
    tail: VecDeque<String>,
    suite_started: Option<Instant>,
    stale: stale_code::Watch,
}

fn run_qemu(spec: &BootSpec, root_socket: &Path, results_socket: &Path) -> anyhow::Result<Boot> {
    let serial_log = spec.log_dir.join("serial.log");
    let console = Arc::new(Mutex::new(Console {
        log: std::fs::File::create(&serial_log)
            .with_context(|| format!("creating {}", serial_log.display()))?,
        tail: VecDeque::new(),
        suite_started: None,
        stale: stale_code::Watch::default(),
    }));
    let mut cmd = qemu_command(spec, root_socket, results_socket);
    let started = Instant::now();
    let mut qemu = cmd.spawn().with_context(|| {
        format!("starting {cmd:?} (install qemu-system-x86: cargo xtask setup --test-deps)")
    })?;
    let readers = [
        stream(
            qemu.stdout.take().expect("piped"),
            spec.label.to_string(),
            "",
            Arc::clone(&console),
        ),
        stream(
            qemu.stderr.take().expect("piped"),
            spec.label.to_string(),
            "qemu: ",
            Arc::clone(&console),
        ),
    ];
    let heartbeat = spec.results.join(HEARTBEAT_FILE);
    let mut stopped = None;
    let (status, timed_out) = loop {
        if let Some(status) = qemu.try_wait().context("polling qemu")? {
            break (Some(status), false);
        }
        if started.elapsed() > spec.timeout {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break (None, true);
        }
        // A guest that cannot finish is stopped now rather than at the timeout. The lockup
        // watchdog reports every ~25 s, so a few seconds' grace lets the log hold both CPUs.
        let stale = console.lock().expect("a reader panicked").stale.seen;
        let silent = heartbeat_age(&heartbeat).filter(|age| *age > HEARTBEAT_LIMIT);
        if let Some(why) = stale
            .map(Stopped::StaleCode)
            .or(silent.map(Stopped::Silent))
        {
            std::thread::sleep(Duration::from_secs(3));
            eprintln!("xtask: [{}] stopping the guest: {why}", spec.label);
            let _ = qemu.kill();
            let _ = qemu.wait();
            stopped = Some(why);
            break (None, false);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for reader in readers {
        let _ = reader.join();
    }
    let console = console.lock().expect("a reader panicked");
    Ok(Boot {
        timed_out,
        stopped,
        stale: console.stale.seen,
        status,
        boot_time: console.suite_started.map(|t| t - started),
        tail: console.tail.iter().cloned().collect(),
        serial_log,
    })
}

/// How long ago the guest last wrote its heartbeat (None before its first).
fn heartbeat_age(path: &Path) -> Option<Duration> {
    let written = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(written.elapsed().unwrap_or_default())
}

/// Copies one of qemu's pipes line by line to the terminal (as `[label] source line`) and to
/// serial.log (as `source line`).
fn stream(
    pipe: impl Read + Send + 'static,
    label: String,
    source: &'static str,
    console: Arc<Mutex<Console>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = printable(&raw);
            let now = Instant::now();
            let mut c = console.lock().expect("the other reader panicked");
            if line.trim() == SUITE_STARTING && c.suite_started.is_none() {
                c.suite_started = Some(now);
            }
            c.stale.feed(&line);
            let _ = writeln!(c.log, "{source}{line}");
            if c.tail.len() == TAIL_LINES {
                c.tail.pop_front();
            }
            c.tail.push_back(format!("{source}{line}"));
            drop(c);
            println!("[{label}] {source}{line}");
        }
    })
}

/// A console line without its line ending, terminal escape sequences or other control bytes.
pub fn printable(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_lose_escapes_and_line_endings() {
        assert_eq!(
            printable(b"\x1bc\x1b[?7l\x1b[2Jloaded virtio\r\n"),
            "loaded virtio"
        );
        assert_eq!(printable(b"a\tb\x07c\n"), "a\tbc");
        assert_eq!(
            printable(b"[    3.44] reboot: Power down"),
            "[    3.44] reboot: Power down"
        );
    }

    #[test]
    fn qemu_gets_tcg_shared_memory_and_both_shares() {
        let spec = BootSpec {
            label: "6.1",
            vmlinuz: Path::new("/k/vmlinuz"),
            initrd: Path::new("/k/initrd"),
            results: Path::new("/r"),
            log_dir: Path::new("/l"),
            timeout: Duration::from_secs(1),
            virtiofsd: Path::new("/bin/virtiofsd"),
        };
        let cmd = qemu_command(&spec, Path::new("/s/root"), Path::new("/s/results"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg,thread=single"));
        assert!(joined.contains("share=on"));
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("panic=-1"));
        assert!(joined.contains(&format!("tag={ROOT_TAG}")));
        assert!(joined.contains(&format!("tag={RESULTS_TAG}")));
        assert!(joined.contains("path=/s/root"));
    }
}
