//! The persisted outbox: one directory per channel, one file per queued notification.
//!
//! Why one file per entry rather than an append-only JSON-lines log: an entry is written to
//! `SEQ.json.tmp`, fsync'd, renamed to `SEQ.json` and the directory fsync'd, so a crash leaves
//! either a whole entry or a stray `.tmp` (never a torn line in the middle of the queue);
//! acknowledging a delivery is one `unlink`, with no cursor file to keep in step and no
//! compaction; and the file name orders the queue. The cost, a few syscalls per notification,
//! is nothing at alert rates (a handful per minute).
//!
//! Sequence numbers are `max(previous + 1, now in ns)`: increasing within a run, and not reusing
//! the name of an entry left by an earlier run even when that run's files could not be listed.
use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{alerts::Alert, state_file};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot create outbox directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot list outbox directory {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot write outbox entry {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read outbox entry {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot make outbox entry {path} private to monitor's user: {source}")]
    MakePrivate { path: PathBuf, source: io::Error },
    #[error("outbox entry {path} is corrupt ({source}); kept as {kept}")]
    Corrupt {
        path: PathBuf,
        kept: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "cannot remove delivered outbox entry {path} (it will be sent again at next start): {source}"
    )]
    Remove { path: PathBuf, source: io::Error },
}

/// One queued notification: the alerts one delivery attempt sends.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    /// When it was queued: what `max_age` is measured from, across restarts.
    pub created: SystemTime,
    pub alerts: Arc<[Alert]>,
    /// Its file, or None when it lives in memory only (log channel, or the write failed).
    pub path: Option<PathBuf>,
}

/// What a file holds. `version` lets a later format be told apart.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    #[serde(with = "humantime_serde")]
    created: SystemTime,
    alerts: Vec<Alert>,
}

const SUFFIX: &str = ".json";

/// The writing side of one channel's queue directory.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    last_seq: u64,
}

impl Outbox {
    /// Opens (creating it if needed) a queue directory and returns the entries left in it, oldest
    /// first, with the problems met (each names its path; none stops the others from loading).
    pub fn open(dir: PathBuf) -> (Self, Vec<Entry>, Vec<OutboxError>) {
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        match state_file::create_dir(&dir) {
            Err(source) => problems.push(OutboxError::CreateDir {
                path: dir.clone(),
                source,
            }),
            Ok(()) => match load(&dir, &mut problems) {
                Ok(found) => entries = found,
                Err(e) => problems.push(e),
            },
        }
        let last_seq = entries.last().map_or(0, |e| e.seq);
        (Self { dir, last_seq }, entries, problems)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Assigns the next sequence number (also used for entries that stay in memory).
    pub fn next_seq(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1));
        self.last_seq = now.max(self.last_seq.saturating_add(1));
        self.last_seq
    }

    /// Writes an entry durably; on error nothing is left behind but, at worst, a `.tmp` file.
    pub fn append(
        &mut self,
        seq: u64,
        created: SystemTime,
        alerts: &[Alert],
    ) -> Result<PathBuf, OutboxError> {
        // The directory may have been removed or been unwritable at start: try again each time.
        state_file::create_dir(&self.dir).map_err(|source| OutboxError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(format!("{seq:020}{SUFFIX}"));
        let stored = Stored {
            version: 1,
            created,
            alerts: alerts.to_vec(),
        };
        serde_json::to_vec(&stored)
            .map_err(io::Error::other)
            .and_then(|json| state_file::replace(&path, &json))
            .map_err(|source| OutboxError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }
}

/// Removes a delivered (or dropped) entry's file.
pub fn remove(path: &Path) -> Result<(), OutboxError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OutboxError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn load(dir: &Path, problems: &mut Vec<OutboxError>) -> Result<Vec<Entry>, OutboxError> {
    let list_err = |source| OutboxError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(list_err)? {
        let path = item.map_err(list_err)?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.ends_with(state_file::TMP_SUFFIX) {
            // A write that crashed before its rename: never acknowledged as queued.
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(seq) = file_name
            .strip_suffix(SUFFIX)
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        if let Err(source) = state_file::make_private(&path) {
            // Still sent: keeping an alert from its receiver would be worse than its mode.
            problems.push(OutboxError::MakePrivate {
                path: path.clone(),
                source,
            });
        }
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(source) => {
                problems.push(OutboxError::Read { path, source });
                continue;
            }
        };
        match serde_json::from_slice::<Stored>(&text) {
            Ok(stored) => entries.push(Entry {
                seq,
                created: stored.created,
                alerts: stored.alerts.into(),
                path: Some(path),
            }),
            Err(source) => {
                // Kept aside, not deleted: someone may want to read what it was.
                let kept = path.with_extension("corrupt");
                let _ = fs::rename(&path, &kept);
                problems.push(OutboxError::Corrupt { path, kept, source });
            }
        }
    }
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::alert;

    #[test]
    fn entries_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("webhook");
        let (mut outbox, found, problems) = Outbox::open(q.clone());
        assert!(found.is_empty() && problems.is_empty());
        let now = SystemTime::now();
        let mut paths = Vec::new();
        for name in ["A", "B", "C"] {
            let seq = outbox.next_seq();
            paths.push(outbox.append(seq, now, &[alert(name)]).unwrap());
        }
        remove(&paths[1]).unwrap();
        fs::write(q.join("00000000000000000001.json.tmp"), b"{\"vers").unwrap();
        drop(outbox);

        let (mut outbox, found, problems) = Outbox::open(q.clone());
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<_> = found.iter().map(|e| e.alerts[0].name.as_str()).collect();
        assert_eq!(names, ["A", "C"]);
        assert!(!q.join("00000000000000000001.json.tmp").exists());
        assert!(outbox.next_seq() > found[1].seq);
        assert_eq!(
            found[0]
                .created
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            now.duration_since(UNIX_EPOCH).unwrap().as_secs()
        );
    }

    #[test]
    fn corrupt_entries_are_set_aside_and_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000007.json"), b"not json").unwrap();
        let (_, found, problems) = Outbox::open(dir.path().to_path_buf());
        assert!(found.is_empty());
        let msg = problems[0].to_string();
        assert!(msg.contains("00000000000000000007.json"), "{msg}");
        assert!(dir.path().join("00000000000000000007.corrupt").exists());
    }

    fn mode(path: &Path) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        format!(
            "{:03o}",
            fs::metadata(path).unwrap().permissions().mode() & 0o777
        )
    }

    #[test]
    fn entries_and_the_directories_made_for_them_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let q = state.join("outbox").join("webhook");
        let (mut outbox, _, problems) = Outbox::open(q.clone());
        assert!(problems.is_empty(), "{problems:?}");
        let seq = outbox.next_seq();
        let entry = outbox
            .append(seq, SystemTime::now(), &[alert("A")])
            .unwrap();
        assert_eq!(mode(&entry), "600", "{}", entry.display());
        for d in [&q, &state.join("outbox"), &state] {
            assert_eq!(mode(d), "700", "{}", d.display());
        }
    }

    #[test]
    fn a_world_readable_entry_is_made_private_when_loaded() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (mut outbox, _, _) = Outbox::open(dir.path().to_path_buf());
        let seq = outbox.next_seq();
        let entry = outbox
            .append(seq, SystemTime::now(), &[alert("A")])
            .unwrap();
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o644)).unwrap();
        let (_, found, problems) = Outbox::open(dir.path().to_path_buf());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(found.len(), 1);
        assert_eq!(mode(&entry), "600");
    }

    #[test]
    fn an_unusable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let (mut outbox, _, problems) = Outbox::open(file.join("q"));
        assert!(
            problems[0].to_string().contains("file/q"),
            "{:?}",
            problems[0]
        );
        let seq = outbox.next_seq();
        let e = outbox
            .append(seq, SystemTime::now(), &[alert("A")])
            .unwrap_err();
        assert!(e.to_string().contains("file/q"), "{e}");
    }
}
