//! The files monitor keeps its state in (alert state, outbox entries) and the directories it
//! makes for them: readable by monitor's own user only, whatever the umask.
//!
//! Why: alerts carry the watched application's labels, annotations and values (runbook links,
//! host names, memory figures) that other local users have no business reading, and the daemon
//! runs as root, whose usual umask (022) makes new files world-readable.
use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// Read and write for monitor's user only.
pub const FILE_MODE: u32 = 0o600;
/// Directories: monitor's user only.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, 0700. A directory that already exists keeps its mode:
/// the state directory is the operator's choice and may be shared (narrowing `/tmp` would break
/// the host); the files in it are what must stay private, and they are.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Creates (or truncates) a file for writing, 0600.
pub fn create(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // `mode` applies only to a file this call creates: one left by an earlier run keeps its own.
    let mode = file.metadata()?.permissions().mode();
    if readable_by_others(mode) {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        warn_narrowed(path, mode);
    }
    Ok(file)
}

/// Narrows an existing state file to 0600 if an earlier version of monitor (or an operator)
/// left it open to other users, and says so. Anything but a regular file is left alone: a
/// symlink's target is not monitor's to change.
pub fn make_private(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = metadata.permissions().mode();
    if metadata.is_file() && readable_by_others(mode) {
        fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
        warn_narrowed(path, mode);
    }
    Ok(())
}

fn readable_by_others(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn warn_narrowed(path: &Path, mode: u32) {
    tracing::warn!(
        "{} was open to other users (mode {:03o}): narrowed to {FILE_MODE:03o}",
        path.display(),
        mode & 0o777
    );
}
