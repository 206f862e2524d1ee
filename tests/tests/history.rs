//! The history store end to end: the daemon records what it samples (checked against the
//! kernel's own accounting of a workload), import and export are exact and refuse a malformed
//! file whole, kill -9 during writes leaves a store that checks, and a full disk never stops
//! sampling, serving or alerting.
mod common;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;

fn history(args: &[&str], store: &Path) -> Output {
    Command::new(monitor_bin())
        .arg("history")
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("running monitor history")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The samples of `series` (exposition form, `name{target="t",...}`) in an export.
fn exported(text: &str, series: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|rest| {
            let (v, t) = rest.split_once(' ').unwrap();
            (t.parse().unwrap(), v.parse().unwrap())
        })
        .collect()
}

fn check(store: &Path) {
    let out = history(&["check"], store);
    assert_eq!(
        out.status.code(),
        Some(0),
        "monitor history check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemon_records_what_the_kernel_accounted() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("history.db");
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "1500"]);
    let d = Daemon::start_with(
        &["--pid", &w.pid().to_string()],
        &[],
        &format!("[history]\npath = \"{}\"\n", store.display()),
    );
    let started = Instant::now();
    let report = w.go();
    let truth = oncpu_truth_seconds(&report);
    // Let a few more samples see the finished spin.
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = started.elapsed().as_secs_f64();
    let pid = w.pid().to_string();
    drop(d); // SIGTERM: the writer writes what it holds before the daemon exits.
    w.finish();
    let text = ok(&history(&["export"], &store), "export");
    let name = "app_oncpu_seconds_total{target=\"workload\"}".to_string();
    let oncpu = exported(&text, &name);
    assert!(!oncpu.is_empty(), "no {name} in the export:\n{text}");
    // Every sample at the 300 ms cadence since the daemon started, give or take a few.
    let expected = elapsed / 0.3;
    assert!(
        oncpu.len() as f64 >= expected * 0.8,
        "{} samples of {name} over {elapsed:.1} s at 300 ms (pid {pid})",
        oncpu.len()
    );
    assert!(
        oncpu.windows(2).all(|p| p[0].0 < p[1].0),
        "timestamps increase"
    );
    let (_, last) = *oncpu.last().unwrap();
    assert_within("stored on-CPU seconds at the end", last, truth, 0.05);
    check(&store);
}

/// Two series of `n` samples each, written as monitor exports them, with values whose text
/// must survive exactly (fractions, large and tiny numbers, NaN, infinities, -0).
fn synthetic(start_ms: i64, n: i64) -> String {
    synthetic_for(&["api"], start_ms, n)
}

/// The same two series for each target.
fn synthetic_for(targets: &[&str], start_ms: i64, n: i64) -> String {
    let mut s = String::new();
    s.push_str("# TYPE app_cpu_usage_percent gauge\n");
    for target in targets {
        for i in 0..n {
            let v = match i % 7 {
                0 => "NaN".to_string(),
                1 => "+Inf".to_string(),
                2 => "-0".to_string(),
                3 => format!("{}", 1e-300 * i as f64),
                _ => format!("{}", (i as f64 * 0.37).sin() * 100.0),
            };
            let t = start_ms + i * 5000;
            let _ = writeln!(
                s,
                "app_cpu_usage_percent{{target=\"{target}\"}} {v} {}.{:03}",
                t / 1000,
                t % 1000
            );
        }
    }
    s.push_str("# TYPE app_syscalls counter\n");
    for target in targets {
        for i in 0..n {
            let t = start_ms + i * 5000 + 7;
            let _ = writeln!(
                s,
                "app_syscalls_total{{target=\"{target}\",syscall=\"read\\\"x\\\\\"}} {} {}.{:03}",
                i * 1000 + i % 3,
                t / 1000,
                t % 1000
            );
        }
    }
    s.push_str("# EOF\n");
    s
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn export_after_import_is_exact_and_a_malformed_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("h.db");
    // Two days ending now: inside the raw window, so every sample stays raw.
    let text = synthetic(now_ms() - 20_000 * 5000, 20_000);
    let file = dir.path().join("in.om");
    std::fs::write(&file, &text).unwrap();
    ok(
        &history(&["import", file.to_str().unwrap()], &store),
        "import",
    );
    let back = ok(&history(&["export"], &store), "export");
    assert!(back == text, "export after import differs");
    check(&store);

    // One bad line in a file that would add to both series: refused by line, nothing written.
    let later = synthetic(now_ms() + 3_600_000, 100);
    let mut lines: Vec<&str> = later.lines().collect();
    lines[57] = "app_cpu_usage_percent{target=\"api\"} 12 notatime";
    let bad = dir.path().join("bad.om");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let out = history(&["import", bad.to_str().unwrap()], &store);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 58") && err.contains("notatime"), "{err}");
    assert!(
        ok(&history(&["export"], &store), "export") == text,
        "the store changed"
    );
}

#[test]
fn imported_history_past_the_raw_window_keeps_its_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("h.db");
    // From midnight (UTC) 30 days ago, 2 hours at 5 s: 1440 samples, 120 minutes, 2 hours,
    // one day's minute chunk and one week's hour chunk for each series.
    let start = (now_ms() - 30 * 86_400_000) / 86_400_000 * 86_400_000;
    let text = synthetic(start, 1440);
    let file = dir.path().join("old.om");
    std::fs::write(&file, &text).unwrap();
    ok(
        &history(&["import", file.to_str().unwrap()], &store),
        "import",
    );
    let back = ok(&history(&["export"], &store), "export");
    assert!(
        back == "# EOF\n",
        "raw samples past 14 days are kept: {} bytes",
        back.len()
    );
    let stats = ok(&history(&["stats"], &store), "stats");
    assert!(stats.contains("raw: 0 chunks"), "{stats}");
    // 120 minutes for each of the two series.
    assert!(stats.contains("minute: 2 chunks, 240 rows"), "{stats}");
    assert!(stats.contains("hour: 2 chunks, 4 rows"), "{stats}");
}

/// A child killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_9_during_an_import_and_during_daemon_writes_leaves_a_store_that_checks() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("h.db");
    // A million samples of two targets, the older half past the raw window: the import writes
    // raw chunks, aggregates, and expires. A test hook stops it inside its transaction before
    // its last series, seven written (more than SQLite's page cache holds: pages of the open
    // transaction are in the WAL); kill -9 there.
    let text = synthetic_for(
        &["api", "web", "db", "mq"],
        now_ms() - 125_000 * 5000,
        125_000,
    );
    let file = dir.path().join("big.om");
    std::fs::write(&file, &text).unwrap();
    let mut import = KillOnDrop(
        Command::new(monitor_bin())
            .args(["history", "import", file.to_str().unwrap(), "--store"])
            .arg(&store)
            .env("MONITOR_TEST_IMPORT_PAUSE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(import.0.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("paused inside the import's transaction") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the import ended without reaching its pause");
    }
    let wal = PathBuf::from(format!("{}-wal", store.display()));
    let written = wal.metadata().map(|m| m.len()).unwrap_or(0);
    assert!(
        written > 256 << 10,
        "the paused import had written {written} bytes to the WAL"
    );
    import.0.kill().unwrap();
    import.0.wait().unwrap();
    check(&store);
    let after = ok(&history(&["export"], &store), "export");
    assert!(
        after == "# EOF\n",
        "a killed import left {} bytes of samples behind",
        after.len()
    );
    let stats = ok(&history(&["stats"], &store), "stats");
    assert!(
        stats.contains(": 0 series") && stats.contains("minute: 0 chunks"),
        "{stats}"
    );

    // The daemon at its fastest cadence, killed while it writes: what it committed is there.
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "100"]);
    let mut d = Daemon::start_configured(
        &["--pid", &w.pid().to_string()],
        &[],
        &format!(
            "[cadence]\ncpu_memory = \"100ms\"\ndiscovery = \"100ms\"\n[history]\npath = \"{}\"\n",
            store.display()
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    check(&store);
    let text = ok(&history(&["export"], &store), "export");
    let n = exported(&text, "app_up{target=\"workload\"}").len();
    assert!(n >= 15, "{n} samples of app_up after 3 s at 100 ms");
    w.release();
    w.finish();
}

#[test]
fn a_full_disk_never_stops_sampling_and_writing_resumes_when_space_returns() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("running mount");
    assert!(
        status.success(),
        "mounting an 8 MiB tmpfs for the full-disk test failed"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let store = mnt.join("history.db");
    let mut w = Workload::start(&workload_bin(), &["spin", "--millis", "100"]);
    let d = Daemon::start_with(
        &["--pid", &w.pid().to_string()],
        &[],
        &format!("[history]\npath = \"{}\"\n", store.display()),
    );
    let written = |d: &Daemon| {
        d.value("monitor_history_points_written_total", &[])
            .unwrap_or(0.0)
    };
    let errors = |d: &Daemon| {
        d.value("monitor_history_write_errors_total", &[])
            .unwrap_or(0.0)
    };
    d.wait_for(
        |m| metric_value(m, "monitor_history_points_written_total", &[]).unwrap_or(0.0) > 0.0,
        "history written",
    );
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    d.wait_for_within(
        Duration::from_secs(20),
        |m| metric_value(m, "monitor_history_write_errors_total", &[]).unwrap_or(0.0) >= 2.0,
        "history write errors on a full disk",
    );
    // Sampling, serving and alerting go on: app_up fresh, samples counted.
    let before = d
        .value("monitor_last_sample_timestamp_seconds", &[])
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let after = d
        .value("monitor_last_sample_timestamp_seconds", &[])
        .unwrap();
    assert!(after > before, "sampling stopped on a full disk");
    assert_eq!(d.value("app_up", &[]), Some(1.0));
    let stuck = written(&d);
    std::fs::remove_file(&filler).unwrap();
    d.wait_for_within(
        Duration::from_secs(20),
        |m| metric_value(m, "monitor_history_points_written_total", &[]).unwrap_or(0.0) > stuck,
        "history writes resuming after space returns",
    );
    let errs = errors(&d);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(errors(&d), errs, "errors go on after space returned");
    // Nothing the daemon sampled while the disk was full was lost: pending points were kept.
    assert_eq!(
        d.value("monitor_history_points_dropped_total", &[]),
        Some(0.0)
    );
    drop(d);
    check(&store);
    w.release();
    w.finish();
}
