//! The suite run inside each guest, as a shell script (run by the host's /bin/sh, in a chroot of
//! the host's root, as root, with HOME=/root and a plain PATH).
//!
//! Besides the paths given here, the harness exports MONITOR_BIN, WORKLOAD_BIN,
//! MONITOR_VM_KERNEL (`5.10`, `6.1`, `6.12`) and MONITOR_VM_RESULTS (a writable directory whose
//! files come back to target/vm-test/<version>/results). The script's exit code is the kernel's
//! verdict: 0 is PASS.
//!
//! A placeholder that shows the harness works: what `monitor check` says of this kernel, and a
//! short `monitor stat`.
use std::path::Path;

/// The script text. `monitor` and `workload` are the release binaries, `tests` the directory of
/// the test binaries; all are host paths, which are the same inside the guest's chroot.
pub fn script(_monitor: &Path, _workload: &Path, _tests: &Path) -> String {
    // The placeholder reaches the binaries through the exported variables.
    r#"set -u
status=0
echo "== monitor check on $(uname -r)"
"$MONITOR_BIN" check || status=$?
echo "== monitor check exited with $status"
echo "== monitor stat -- true"
stat_status=0
"$MONITOR_BIN" stat -- true || stat_status=$?
echo "== monitor stat exited with $stat_status"
[ "$status" -eq 0 ] && status=$stat_status
exit "$status"
"#
    .to_string()
}
