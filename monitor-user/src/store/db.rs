//! The SQLite file: its schema and migrations, what happens to a damaged one, and every read and
//! write of series, samples and chunks.
//!
//! New samples go to `head` (one row each), so a sample is on disk once its transaction commits
//! and a kill -9 loses nothing committed. Once a window is over, [`Store::seal`] moves its
//! samples into one compressed raw chunk and writes the window's minute and hour aggregates, in
//! one transaction: a crash leaves the head rows or the chunks, never both or neither.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OptionalExtension as _, params};
use tracing::error;

use super::{
    chunk::{self, Aggregate, Sample},
    series::SeriesKey,
};
use crate::state_file;

/// The schema version this monitor writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Each step's SQL, from the version before it: `MIGRATIONS[v]` takes a store from v to v + 1.
/// Version 0 is an empty file.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        kind TEXT NOT NULL,
        UNIQUE (target, name, labels)
    );
    CREATE TABLE head (
        series INTEGER NOT NULL,
        t_ms INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (series, t_ms)
    ) WITHOUT ROWID;
    CREATE TABLE chunk (
        series INTEGER NOT NULL,
        tier INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (series, tier, start_ms)
    ) WITHOUT ROWID;",
];

/// The resolutions kept: raw samples, and aggregates per minute and per hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Raw = 0,
    Minute = 1,
    Hour = 2,
}

impl Tier {
    /// The span of one chunk: long enough for pco to find the series' shape (it wants a few
    /// thousand numbers), short enough that the uncompressed head stays small.
    pub const fn window_ms(self) -> i64 {
        match self {
            Tier::Raw => 6 * HOUR_MS,
            Tier::Minute => 24 * HOUR_MS,
            Tier::Hour => 7 * 24 * HOUR_MS,
        }
    }
}

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// The start of the window of `tier` that holds `t_ms`.
pub fn window_start(tier: Tier, t_ms: i64) -> i64 {
    t_ms.div_euclid(tier.window_ms()) * tier.window_ms()
}

/// A stored series.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub id: i64,
    pub key: SeriesKey,
    /// The OpenMetrics type of its family: "gauge", "counter" or "unknown".
    pub kind: String,
}

/// How long each tier is kept, relative to now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retention {
    pub raw: Duration,
    pub minute: Duration,
    pub hour: Duration,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (or creates) the store at `path`, migrated to [`SCHEMA_VERSION`]. A file that is
    /// not a database or fails SQLite's quick check is moved aside (its name is logged and
    /// returned) and a new store is started.
    pub fn open(path: &Path) -> anyhow::Result<(Self, Option<PathBuf>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            state_file::create_dir(dir)
                .with_context(|| format!("creating the history directory {}", dir.display()))?;
        }
        match Self::open_checked(path) {
            Ok(store) => Ok((store, None)),
            Err(OpenError::Damaged(why)) => {
                let aside = move_aside(path)?;
                error!(
                    store = %path.display(),
                    moved_to = %aside.display(),
                    "the history store is damaged ({why}); moved it aside and started a new one"
                );
                let store = Self::open_checked(path).map_err(|e| e.into_anyhow(path))?;
                Ok((store, Some(aside)))
            }
            Err(e) => Err(e.into_anyhow(path)),
        }
    }

    /// A read-only connection to a store the daemon's writer opened (and checked) already:
    /// no check and no migration, which would read the whole file at every page load.
    pub fn open_reader(path: &Path) -> anyhow::Result<Self> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening the history store {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let store = Self { conn };
        // A reader's pages are freed when it closes; a small cache still bounds a long read.
        store.set_cache_kib(1024)?;
        Ok(store)
    }

    /// A connection to `path` without any check or schema: for tests that damage a store
    /// under an open one.
    #[cfg(test)]
    pub fn open_unchecked_for_tests(path: &Path) -> Self {
        Self {
            conn: Connection::open(path).unwrap(),
        }
    }

    fn open_checked(path: &Path) -> Result<Self, OpenError> {
        if !path.exists() {
            // Made private before SQLite writes a byte; its WAL and shared-memory files take
            // the database's mode.
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(state_file::FILE_MODE)
                .open(path)
                .map_err(|e| OpenError::Other(e.into()))?;
        }
        let conn = Connection::open(path).map_err(OpenError::classify)?;
        // One made before (by an older monitor, or by hand) may be open to others.
        for p in [
            path.to_path_buf(),
            suffixed(path, "-wal"),
            suffixed(path, "-shm"),
        ] {
            if p.exists() {
                state_file::make_private(&p).map_err(|e| OpenError::Other(e.into()))?;
            }
        }
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(OpenError::classify)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(OpenError::classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::Other(anyhow::anyhow!(
                "SQLite kept journal mode {mode}, not WAL"
            )));
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;")
            .map_err(OpenError::classify)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(OpenError::classify)?;
        if check != "ok" {
            return Err(OpenError::Damaged(format!("quick_check: {check}")));
        }
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), OpenError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(OpenError::classify)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::Other(anyhow::anyhow!(
                "it was written by a newer monitor (schema {version}; this one knows up to {SCHEMA_VERSION})"
            )));
        }
        for v in version..SCHEMA_VERSION {
            let tx = self.conn.transaction().map_err(OpenError::classify)?;
            tx.execute_batch(MIGRATIONS[v as usize])
                .map_err(OpenError::classify)?;
            tx.pragma_update(None, "user_version", v + 1)
                .map_err(OpenError::classify)?;
            tx.commit().map_err(OpenError::classify)?;
        }
        Ok(())
    }

    /// Caps SQLite's page cache at `kib`: the daemon's writer touches a few pages a batch and
    /// keeps its footprint; imports and reports keep SQLite's default (2 MiB).
    pub fn set_cache_kib(&self, kib: u32) -> anyhow::Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))
            .context("setting the history store's cache size")
    }

    /// Runs `f` in one transaction: all of it is written, or none.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let tx = self.conn.transaction()?;
        let out = f(&Tx { tx: &tx })?;
        tx.commit()?;
        Ok(out)
    }

    /// Every series, optionally of one target.
    pub fn series(&self, target: Option<&str>) -> anyhow::Result<Vec<Series>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, target, name, labels, kind FROM series
             WHERE ?1 IS NULL OR target = ?1 ORDER BY name, target, labels",
        )?;
        let rows = stmt.query_map(params![target], |r| {
            Ok(Series {
                id: r.get(0)?,
                key: SeriesKey {
                    target: r.get(1)?,
                    name: r.get(2)?,
                    labels: r.get(3)?,
                },
                kind: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A series' raw samples in [from, to), in time order: sealed chunks, then the head.
    pub fn raw(&self, series: i64, from: i64, to: i64) -> anyhow::Result<Vec<Sample>> {
        let mut out: Vec<Sample> = Vec::new();
        for (start, blob) in self.chunks(series, Tier::Raw, from, to)? {
            let samples = chunk::decode_samples(&blob)
                .with_context(|| format!("raw chunk of series {series} at {start} ms"))?;
            out.extend(
                samples
                    .into_iter()
                    .filter(|s| s.t_ms >= from && s.t_ms < to),
            );
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT t_ms, value FROM head WHERE series = ?1 AND t_ms >= ?2 AND t_ms < ?3
             ORDER BY t_ms",
        )?;
        let head = stmt.query_map(params![series, from, to], |r| {
            Ok(Sample {
                t_ms: r.get(0)?,
                value: r.get(1)?,
            })
        })?;
        for s in head {
            out.push(s?);
        }
        // A window sealed, then written again: the head's sample replaces the chunk's, as
        // sealing will.
        Ok(chunk::merge_last_wins(out))
    }

    /// A series' aggregates of `tier` (Minute or Hour) with steps in [from, to).
    pub fn aggregates(
        &self,
        series: i64,
        tier: Tier,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<Aggregate>> {
        let mut out = Vec::new();
        for (start, blob) in self.chunks(series, tier, from, to)? {
            let rows = chunk::decode_aggregates(&blob)
                .with_context(|| format!("{tier:?} chunk of series {series} at {start} ms"))?;
            out.extend(rows.into_iter().filter(|r| r.t_ms >= from && r.t_ms < to));
        }
        Ok(out)
    }

    /// The time of a series' latest sample or step, whichever tier holds it; None when empty.
    pub fn last_sample_ms(&self, series: i64) -> anyhow::Result<Option<i64>> {
        let mut last: Option<i64> = self.conn.query_row(
            "SELECT MAX(t_ms) FROM head WHERE series = ?1",
            params![series],
            |r| r.get(0),
        )?;
        for tier in [Tier::Raw, Tier::Minute, Tier::Hour] {
            let mut stmt = self.conn.prepare_cached(
                "SELECT data FROM chunk WHERE series = ?1 AND tier = ?2
                 ORDER BY start_ms DESC LIMIT 1",
            )?;
            let blob: Option<Vec<u8>> = stmt
                .query_row(params![series, tier as i64], |r| r.get(0))
                .optional()?;
            let Some(blob) = blob else { continue };
            let t = match tier {
                Tier::Raw => chunk::decode_samples(&blob)?.last().map(|s| s.t_ms),
                _ => chunk::decode_aggregates(&blob)?.last().map(|a| a.t_ms),
            };
            last = last.max(t);
        }
        Ok(last)
    }

    /// (start, blob) of the chunks of `tier` that overlap [from, to).
    fn chunks(
        &self,
        series: i64,
        tier: Tier,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT start_ms, data FROM chunk WHERE series = ?1 AND tier = ?2
             AND start_ms > ?3 AND start_ms < ?4 ORDER BY start_ms",
        )?;
        let rows = stmt.query_map(
            params![series, tier as i64, from - tier.window_ms(), to],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows, raw samples and bytes of each tier's chunks, and the head's rows: for the bench and
    /// `monitor history stats`.
    pub fn sizes(&self) -> anyhow::Result<Sizes> {
        let mut s = Sizes::default();
        let mut stmt = self.conn.prepare(
            "SELECT tier, count(*), sum(rows), sum(length(data)) FROM chunk GROUP BY tier",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (tier, chunks, n, bytes) = row?;
            s.tiers.insert(tier, (chunks, n, bytes));
        }
        s.head_rows = self
            .conn
            .query_row("SELECT count(*) FROM head", [], |r| r.get(0))?;
        s.series = self
            .conn
            .query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
        Ok(s)
    }

    /// What is wrong with the store, if anything: SQLite's full integrity check, chunks that do
    /// not decode, and aggregates that differ from a recomputation from the raw samples they
    /// summarise (where those are still kept).
    pub fn check(&self) -> anyhow::Result<Vec<String>> {
        let mut problems = Vec::new();
        let integrity: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if integrity != "ok" {
            problems.push(format!("integrity_check: {integrity}"));
        }
        for series in self.series(None)? {
            let id = series.id;
            let name = series.key.exposition();
            for (start, blob) in self.chunks(id, Tier::Raw, i64::MIN / 2, i64::MAX / 2)? {
                let raw = match chunk::decode_samples(&blob) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(format!("{name}: raw chunk at {start} ms: {e:#}"));
                        continue;
                    }
                };
                let end = start + Tier::Raw.window_ms();
                let minutes = chunk::aggregate(&raw, MINUTE_MS);
                let hours = chunk::coarsen(&minutes, HOUR_MS);
                for (tier, expected) in [(Tier::Minute, minutes), (Tier::Hour, hours)] {
                    match self.aggregates(id, tier, start, end) {
                        Ok(stored)
                            if stored.len() == expected.len()
                                && stored.iter().zip(&expected).all(|(a, b)| a.same_as(b)) => {}
                        Ok(stored) => problems.push(format!(
                            "{name}: {tier:?} aggregates of the raw window at {start} ms differ from a recomputation ({} stored, {} recomputed)",
                            stored.len(),
                            expected.len()
                        )),
                        Err(e) => problems.push(format!("{name}: {e:#}")),
                    }
                }
            }
        }
        Ok(problems)
    }
}

#[derive(Debug, Default)]
pub struct Sizes {
    /// tier -> (chunks, rows, bytes)
    pub tiers: BTreeMap<i64, (i64, i64, i64)>,
    pub head_rows: i64,
    pub series: i64,
}

/// The writes, inside one transaction.
pub struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl Tx<'_> {
    /// The id of a series, created if new. `kind` is kept from its first sight.
    pub fn series_id(&self, key: &SeriesKey, kind: &str) -> anyhow::Result<i64> {
        let mut find = self.tx.prepare_cached(
            "SELECT id FROM series WHERE target = ?1 AND name = ?2 AND labels = ?3",
        )?;
        if let Some(id) = find
            .query_row(params![key.target, key.name, key.labels], |r| r.get(0))
            .optional()?
        {
            return Ok(id);
        }
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO series (target, name, labels, kind) VALUES (?1, ?2, ?3, ?4)",
        )?;
        insert.execute(params![key.target, key.name, key.labels, kind])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// One raw sample into the head (a sample at a time already there replaces it).
    pub fn put(&self, series: i64, s: Sample) -> anyhow::Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO head (series, t_ms, value) VALUES (?1, ?2, ?3)",
        )?;
        stmt.execute(params![series, s.t_ms, s.value])?;
        Ok(())
    }

    /// (series, window start) of the raw windows in the head that end at or before `until`.
    pub fn closed_windows(&self, until: i64) -> anyhow::Result<Vec<(i64, i64)>> {
        let w = Tier::Raw.window_ms();
        let mut stmt = self.tx.prepare_cached(
            "SELECT DISTINCT series, t_ms - (((t_ms % ?1) + ?1) % ?1) AS start FROM head
             WHERE t_ms - (((t_ms % ?1) + ?1) % ?1) + ?1 <= ?2 ORDER BY series, start",
        )?;
        let rows = stmt.query_map(params![w, until], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Seals one raw window of one series: its head rows join the window's chunk (merged by
    /// time, a head row replacing a chunk sample at the same time), and the window's minute and
    /// hour aggregates are recomputed from the merged samples.
    pub fn seal(&self, series: i64, start: i64) -> anyhow::Result<()> {
        self.merge_window(series, start, &[])
    }

    /// [`Tx::seal`] with `extra` samples (sorted, all in the window) merged in last: they
    /// replace what the window had at the same times. How an import lands.
    pub fn merge_window(&self, series: i64, start: i64, extra: &[Sample]) -> anyhow::Result<()> {
        let end = start + Tier::Raw.window_ms();
        let mut samples = match self.chunk(series, Tier::Raw, start)? {
            Some(blob) => chunk::decode_samples(&blob)
                .with_context(|| format!("raw chunk of series {series} at {start} ms"))?,
            None => Vec::new(),
        };
        let mut stmt = self.tx.prepare_cached(
            "SELECT t_ms, value FROM head WHERE series = ?1 AND t_ms >= ?2 AND t_ms < ?3",
        )?;
        let head = stmt
            .query_map(params![series, start, end], |r| {
                Ok(Sample {
                    t_ms: r.get(0)?,
                    value: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // Head rows after the chunk's and extra samples last, so that a stable sort and keeping
        // the last of equal times lets them win.
        samples.extend(head);
        samples.extend_from_slice(extra);
        let merged = chunk::merge_last_wins(samples);
        self.write_chunk(
            series,
            Tier::Raw,
            start,
            merged.len(),
            chunk::encode_samples(&merged)?,
        )?;
        self.tx
            .prepare_cached("DELETE FROM head WHERE series = ?1 AND t_ms >= ?2 AND t_ms < ?3")?
            .execute(params![series, start, end])?;
        self.roll_up(series, start, end, &merged)
    }

    /// Replaces the minute and hour aggregates of [start, end) with those of `samples`.
    fn roll_up(&self, series: i64, start: i64, end: i64, samples: &[Sample]) -> anyhow::Result<()> {
        let minutes = chunk::aggregate(samples, MINUTE_MS);
        let hours = chunk::coarsen(&minutes, HOUR_MS);
        for (tier, rows) in [(Tier::Minute, minutes), (Tier::Hour, hours)] {
            let mut at = window_start(tier, start);
            while at < end {
                let w_end = at + tier.window_ms();
                let (lo, hi) = (start.max(at), end.min(w_end));
                let mut kept = match self.chunk(series, tier, at)? {
                    Some(blob) => chunk::decode_aggregates(&blob)
                        .with_context(|| format!("{tier:?} chunk of series {series} at {at} ms"))?,
                    None => Vec::new(),
                };
                kept.retain(|r| r.t_ms < lo || r.t_ms >= hi);
                kept.extend(rows.iter().filter(|r| r.t_ms >= lo && r.t_ms < hi));
                kept.sort_by_key(|r| r.t_ms);
                if kept.is_empty() {
                    self.tx
                        .prepare_cached(
                            "DELETE FROM chunk WHERE series = ?1 AND tier = ?2 AND start_ms = ?3",
                        )?
                        .execute(params![series, tier as i64, at])?;
                } else {
                    self.write_chunk(
                        series,
                        tier,
                        at,
                        kept.len(),
                        chunk::encode_aggregates(&kept)?,
                    )?;
                }
                at = w_end;
            }
        }
        Ok(())
    }

    fn chunk(&self, series: i64, tier: Tier, start: i64) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT data FROM chunk WHERE series = ?1 AND tier = ?2 AND start_ms = ?3",
            )?
            .query_row(params![series, tier as i64, start], |r| r.get(0))
            .optional()?)
    }

    fn write_chunk(
        &self,
        series: i64,
        tier: Tier,
        start: i64,
        rows: usize,
        blob: Vec<u8>,
    ) -> anyhow::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO chunk (series, tier, start_ms, rows, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![series, tier as i64, start, rows as i64, blob])?;
        Ok(())
    }

    /// Writes a series' samples (sorted by time) window by window, as [`Tx::merge_window`].
    pub fn import(&self, series: i64, samples: &[Sample]) -> anyhow::Result<()> {
        let mut rest = samples;
        while let Some(first) = rest.first() {
            let start = window_start(Tier::Raw, first.t_ms);
            let end = start + Tier::Raw.window_ms();
            let n = rest.partition_point(|s| s.t_ms < end);
            self.merge_window(series, start, &rest[..n])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Drops what each tier keeps no longer: chunks whose window ended before now - its
    /// retention (head rows too, for raw). Returns the chunks removed.
    pub fn expire(&self, now_ms: i64, keep: &Retention) -> anyhow::Result<usize> {
        let mut removed = 0;
        for (tier, span) in [
            (Tier::Raw, keep.raw),
            (Tier::Minute, keep.minute),
            (Tier::Hour, keep.hour),
        ] {
            let cutoff = now_ms.saturating_sub(i64::try_from(span.as_millis()).unwrap_or(i64::MAX));
            removed += self
                .tx
                .prepare_cached("DELETE FROM chunk WHERE tier = ?1 AND start_ms + ?2 <= ?3")?
                .execute(params![tier as i64, tier.window_ms(), cutoff])?;
            if tier == Tier::Raw {
                self.tx
                    .prepare_cached("DELETE FROM head WHERE t_ms < ?1")?
                    .execute(params![cutoff])?;
            }
        }
        Ok(removed)
    }
}

/// Why a store did not open.
enum OpenError {
    /// Not a database, or a damaged one: moved aside and started anew.
    Damaged(String),
    Other(anyhow::Error),
}

impl OpenError {
    fn classify(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match e.sqlite_error_code() {
            Some(NotADatabase | DatabaseCorrupt) => Self::Damaged(e.to_string()),
            _ => Self::Other(e.into()),
        }
    }

    fn into_anyhow(self, path: &Path) -> anyhow::Error {
        let e = match self {
            Self::Damaged(why) => anyhow::anyhow!("damaged again after a fresh start: {why}"),
            Self::Other(e) => e,
        };
        e.context(format!("opening the history store {}", path.display()))
    }
}

impl From<OpenError> for anyhow::Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Damaged(why) => anyhow::anyhow!("damaged: {why}"),
            OpenError::Other(e) => e,
        }
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames a damaged store (and its WAL and shared-memory files) to `NAME.corrupt-SECONDS`.
fn move_aside(path: &Path) -> anyhow::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = suffixed(path, &format!(".corrupt-{secs}"));
    std::fs::rename(path, &aside).with_context(|| {
        format!(
            "moving the damaged history store {} aside to {}",
            path.display(),
            aside.display()
        )
    })?;
    for ext in ["-wal", "-shm"] {
        let from = suffixed(path, ext);
        if from.exists() {
            let to = suffixed(&aside, ext);
            if let Err(e) = std::fs::rename(&from, &to) {
                bail!("moving {} aside: {e}", from.display());
            }
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z, a raw window boundary

    fn key(name: &str) -> SeriesKey {
        SeriesKey::new("api", name, &[])
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("h.db")).unwrap().0
    }

    /// Every 5 s from `from` for `n` samples: a value that moves.
    fn every_5s(from: i64, n: i64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t_ms: from + i * 5000,
                value: (i % 97) as f64 * 0.5,
            })
            .collect()
    }

    fn put_all(store: &mut Store, id_of: &str, samples: &[Sample]) -> i64 {
        store
            .transaction(|tx| {
                let id = tx.series_id(&key(id_of), "gauge")?;
                for &s in samples {
                    tx.put(id, s)?;
                }
                Ok(id)
            })
            .unwrap()
    }

    /// The minute and hour aggregates recomputed from the raw samples stored.
    fn check_rollups(store: &Store, id: i64, from: i64, to: i64) {
        let raw = store.raw(id, from, to).unwrap();
        let minutes = chunk::aggregate(&raw, MINUTE_MS);
        assert_eq!(
            store.aggregates(id, Tier::Minute, from, to).unwrap(),
            minutes
        );
        let hours = chunk::coarsen(&minutes, HOUR_MS);
        assert_eq!(store.aggregates(id, Tier::Hour, from, to).unwrap(), hours);
    }

    #[test]
    fn samples_sealed_into_chunks_read_back_with_their_aggregates() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        // Two windows and a bit of a third, with one sample at the very boundary.
        let samples = every_5s(T0, 2 * 4320 + 100);
        let id = put_all(&mut store, "app_cpu_usage_percent", &samples);
        let until = T0 + 2 * Tier::Raw.window_ms();
        store
            .transaction(|tx| {
                let closed = tx.closed_windows(until)?;
                assert_eq!(closed, vec![(id, T0), (id, T0 + Tier::Raw.window_ms())]);
                for (s, w) in closed {
                    tx.seal(s, w)?;
                }
                Ok(())
            })
            .unwrap();
        let sizes = store.sizes().unwrap();
        assert_eq!(sizes.head_rows, 100);
        assert_eq!(sizes.tiers[&0].1, 2 * 4320);
        // Compressed: well under 4 bytes a sample for this series.
        assert!(sizes.tiers[&0].2 < 2 * 4320 * 4, "{sizes:?}");
        assert_eq!(store.raw(id, 0, i64::MAX).unwrap(), samples);
        check_rollups(&store, id, T0, until);
        // Sealing again changes nothing (idempotent).
        store.transaction(|tx| tx.seal(id, T0)).unwrap();
        assert_eq!(store.raw(id, 0, i64::MAX).unwrap(), samples);
        check_rollups(&store, id, T0, until);
    }

    #[test]
    fn an_import_merges_replaces_same_times_and_expires_past_the_raw_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let old = every_5s(T0, 4320 * 3);
        let id = put_all(&mut store, "m", &old[..10]);
        let mut replaced = old[5];
        replaced.value = 1234.0;
        let mut incoming: Vec<Sample> = old[5..].to_vec();
        incoming[0] = replaced;
        store.transaction(|tx| tx.import(id, &incoming)).unwrap();
        let mut expected = old.clone();
        expected[5] = replaced;
        assert_eq!(store.raw(id, 0, i64::MAX).unwrap(), expected);
        assert_eq!(
            store.sizes().unwrap().head_rows,
            0,
            "the import sealed its windows"
        );
        let end = T0 + 3 * Tier::Raw.window_ms();
        check_rollups(&store, id, T0, end);
        // Now is 14 days after the second window: its raw samples go, its aggregates stay.
        let keep = Retention {
            raw: Duration::from_secs(14 * 86400),
            minute: Duration::from_secs(90 * 86400),
            hour: Duration::from_secs(730 * 86400),
        };
        let now = T0 + 2 * Tier::Raw.window_ms() + 14 * 86_400_000;
        store.transaction(|tx| tx.expire(now, &keep)).unwrap();
        let raw = store.raw(id, 0, i64::MAX).unwrap();
        assert_eq!(raw.first().unwrap().t_ms, T0 + 2 * Tier::Raw.window_ms());
        let minutes = store.aggregates(id, Tier::Minute, T0, end).unwrap();
        assert_eq!(minutes.len(), 3 * 360);
        assert_eq!(minutes[0], chunk::aggregate(&expected[..12], MINUTE_MS)[0]);
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_a_new_store_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        std::fs::write(
            &path,
            b"this is not a database, and it is long enough to be read as one page of garbage"
                .repeat(100),
        )
        .unwrap();
        let (store, aside) = Store::open(&path).unwrap();
        let aside = aside.expect("moved aside");
        assert!(
            aside.to_string_lossy().contains("h.db.corrupt-"),
            "{aside:?}"
        );
        assert!(aside.exists());
        assert_eq!(store.series(None).unwrap(), vec![]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_newer_schema_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let e = Store::open(&path).err().unwrap();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("newer monitor") && msg.contains("h.db"),
            "{msg}"
        );
    }
}
