//! The files monitor keeps its state in (alert state, outbox entries) and the directories it
//! makes for them: readable by monitor's own user only, whatever the umask, and replaced whole
//! and durably.
//!
//! Why: alerts carry the watched application's labels, annotations and values (runbook links,
//! host names, memory figures) that other local users have no business reading, and the daemon
//! runs as root, whose usual umask (022) makes new files world-readable.
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
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

/// What [`replace`] appends to a file's name for the copy it writes first.
pub const TMP_SUFFIX: &str = ".tmp";

/// Replaces the content of `path` so that a crash leaves the old content or the new one, never a
/// torn file, and the new one is on disk once this returns: written to `path` + [`TMP_SUFFIX`]
/// in the same directory, fsync'd, renamed over `path`, then the directory fsync'd (the rename
/// is durable only once the directory is). The temporary file is made anew, 0600: whatever an
/// earlier crash or anyone else left at its name (a torn copy, a read-only file, a symlink) is
/// removed, not written through. On error nothing is left behind but, at worst, that file.
pub fn replace(path: &Path, content: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let write = || -> io::Result<()> {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
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
