//! The embedded results store: one SQLite file (`sqlite://path`), no server needed.
//!
//! Several processes on one host may share the file: it is opened in WAL mode with a
//! 10 s busy timeout, and every write is a `BEGIN IMMEDIATE` transaction, so writers
//! queue for the lock instead of failing, and readers never block them. Keep the file
//! on a local disk: SQLite's locking is not reliable on network file systems (NFS, SMB),
//! so a fleet spread over several hosts should use the redis store instead.
//!
//! rusqlite is blocking, so each [`SqliteStore`] keeps one connection behind a mutex and
//! runs every call on tokio's blocking pool; the async runtime never waits on the disk.
//!
//! # Schema
//!
//! The tables are stable, so other tools (the `sqlite3` shell, pandas, Grafana) can read
//! them. Times are integers: `*_us` are µs and `expires_ms` ms since the Unix epoch,
//! `second` is Unix time in seconds. Histograms are HdrHistogram V2 + deflate blobs
//! (empty when no latency was recorded), readable by any HdrHistogram library.
//!
//! ```sql
//! -- One row per component instance of a run (`iotload results list`).
//! CREATE TABLE runs (
//!     run_id TEXT, component TEXT, instance TEXT,
//!     started_us INTEGER, ended_us INTEGER,          -- ended_us = 0 while running
//!     tool_version TEXT, broker TEXT, config_json TEXT,
//!     PRIMARY KEY (run_id, component, instance));
//! -- Per-topic per-second counters and latency histograms of each writer instance.
//! -- Writing the same key again adds the counters and merges the histograms.
//! CREATE TABLE seconds (
//!     run_id TEXT, topic TEXT, second INTEGER, instance TEXT,
//!     sent INTEGER, received INTEGER, lost INTEGER, duplicates INTEGER,
//!     reordered INTEGER, undecodable INTEGER,
//!     latency_hdr BLOB,                                -- receive − sent, µs
//!     corrected_hdr BLOB,                              -- receive − intended, µs
//!     PRIMARY KEY (run_id, topic, second, instance));
//! -- Time slices of a run (`Store::seconds_between`).
//! CREATE INDEX seconds_by_run_time ON seconds (run_id, second);
//! -- One row per received message when `--raw` is on.
//! CREATE TABLE raw (
//!     run_id TEXT, topic TEXT, device INTEGER, seq INTEGER,
//!     intended_us INTEGER, sent_us INTEGER, received_us INTEGER);
//! CREATE INDEX raw_by_run_topic_time ON raw (run_id, topic, received_us);
//! -- Fleet coordination; a row whose expires_ms is in the past is dead.
//! CREATE TABLE advertisements (topic TEXT PRIMARY KEY, owner TEXT, expires_ms INTEGER);
//! CREATE TABLE claims (topic TEXT PRIMARY KEY, owner TEXT, expires_ms INTEGER);
//! CREATE TABLE barriers (name TEXT, member TEXT, PRIMARY KEY (name, member));
//! ```
//!
//! # Coordination
//!
//! Leases are wall-clock times (ms since the epoch) compared with the local clock, which
//! is the same for every process sharing the file. A topic has one advertisement: when
//! two loadgens advertise the same topic, the last one wins. [`Coordinator::claim`] reads
//! and writes in one `BEGIN IMMEDIATE` transaction, which SQLite serialises across
//! processes, so a topic never has two live claims. Dead advertisements and claims are
//! deleted by the next claim.
//!
//! # Raw records and their run
//!
//! A [`Batch`] names its run only through its seconds, so raw records are filed under the
//! run id of the batch's seconds when they all agree, otherwise under the run this handle
//! last stored with [`Store::put_run`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};

use super::{
    Advertisement, Batch, Coordinator, RawRecord, RunExtent, RunRecord, Store, StoreError,
    TopicSecond,
};
use crate::clock_offset::ClockEstimate;
use crate::recorder::LatencyHistogram;

mod coordination;
mod results;

/// How long a call waits for another process's lock before failing with a retryable error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection (more than this file uses).
const STATEMENT_CACHE: usize = 32;

/// The schema; every statement is idempotent.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT    NOT NULL,
    component    TEXT    NOT NULL,
    instance     TEXT    NOT NULL,
    started_us   INTEGER NOT NULL,
    ended_us     INTEGER NOT NULL,
    tool_version TEXT    NOT NULL,
    broker       TEXT    NOT NULL,
    config_json  TEXT    NOT NULL,
    PRIMARY KEY (run_id, component, instance)
);
CREATE TABLE IF NOT EXISTS seconds (
    run_id        TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    second        INTEGER NOT NULL,
    instance      TEXT    NOT NULL,
    sent          INTEGER NOT NULL,
    received      INTEGER NOT NULL,
    lost          INTEGER NOT NULL,
    duplicates    INTEGER NOT NULL,
    reordered     INTEGER NOT NULL,
    undecodable   INTEGER NOT NULL,
    latency_hdr   BLOB    NOT NULL,
    corrected_hdr BLOB    NOT NULL,
    PRIMARY KEY (run_id, topic, second, instance)
);
CREATE INDEX IF NOT EXISTS seconds_by_run_time ON seconds (run_id, second);
CREATE TABLE IF NOT EXISTS raw (
    run_id      TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    device      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    intended_us INTEGER NOT NULL,
    sent_us     INTEGER NOT NULL,
    received_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_by_run_topic_time ON raw (run_id, topic, received_us);
CREATE TABLE IF NOT EXISTS advertisements (
    topic      TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    topic      TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS barriers (
    name   TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (name, member)
);
CREATE TABLE IF NOT EXISTS device_blocks (
    run_id TEXT PRIMARY KEY,
    next   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS clocks (
    run_id    TEXT    NOT NULL,
    instance  TEXT    NOT NULL,
    offset_us INTEGER NOT NULL,
    bound_us  INTEGER NOT NULL,
    PRIMARY KEY (run_id, instance)
);
";

/// The columns of `seconds`, in the order [`read_second`] expects.
const SECOND_COLUMNS: &str = "run_id, topic, second, instance, sent, received, lost, \
     duplicates, reordered, undecodable, latency_hdr, corrected_hdr";

/// The sqlite backend: a results store and fleet coordinator in one local file.
///
/// Holds one connection, so calls through one store run one at a time; share it behind
/// an `Arc`. Several processes (or several stores in one process) may open the same file.
pub struct SqliteStore {
    url: String,
    conn: Arc<Mutex<Connection>>,
    /// The run id of the last [`Store::put_run`], for raw records of batches without seconds.
    last_run: Mutex<Option<String>>,
}

/// Why a blocking call failed, before the store's URL is attached.
enum Failure {
    /// SQLite refused.
    Sql(rusqlite::Error),
    /// Stored data cannot be decoded.
    Corrupt(String),
    /// The call cannot be carried out as asked.
    Invalid(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl Failure {
    fn into_store_error(self, url: &str) -> StoreError {
        let url = url.to_string();
        match self {
            Self::Sql(e) => sql_error(url, &e),
            Self::Corrupt(reason) => StoreError::Corrupt { url, reason },
            Self::Invalid(reason) => StoreError::Io { url, reason },
        }
    }
}

/// Maps a rusqlite error: undecodable values are corrupt data, the rest is I/O.
fn sql_error(url: String, e: &rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match e {
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => StoreError::Corrupt {
            url,
            reason: e.to_string(),
        },
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt {
                url,
                reason: e.to_string(),
            }
        }
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Io {
                url,
                reason: format!(
                    "{e}: another process held the file locked for more than {} s; retry later",
                    BUSY_TIMEOUT.as_secs()
                ),
            }
        }
        _ => StoreError::Io {
            url,
            reason: e.to_string(),
        },
    }
}

/// The file a `sqlite://path` URL names.
fn parse_url(url: &str) -> Result<PathBuf, StoreError> {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(StoreError::BadUrl {
            url: url.to_string(),
            reason: "name a file: sqlite://iotload-results.db (relative to the working \
                     directory) or sqlite:///absolute/path/results.db"
                .into(),
        }),
    }
}

/// Why `path` could not be opened, with the fix where it can be told.
fn open_error(url: &str, path: &Path, e: &rusqlite::Error) -> StoreError {
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let code = match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let unreachable = |reason: String| StoreError::Unreachable {
        url: url.to_string(),
        reason,
    };
    if code == Some(ErrorCode::NotADatabase) {
        return StoreError::Corrupt {
            url: url.to_string(),
            reason: format!("`{shown}` exists but is not a SQLite database; name another file"),
        };
    }
    if matches!(
        code,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    ) {
        return unreachable(format!(
            "`{shown}` stayed locked by another process for {} s ({e}); retry later",
            BUSY_TIMEOUT.as_secs()
        ));
    }
    if path.is_dir() {
        return unreachable(format!(
            "`{shown}` is a directory; name a file in it, e.g. sqlite://{}",
            path.join("iotload-results.db").display()
        ));
    }
    if !parent.exists() {
        return unreachable(format!(
            "cannot create `{shown}`: directory `{}` does not exist; create it \
             (mkdir -p {}) or name a file in an existing directory",
            parent.display(),
            parent.display()
        ));
    }
    if !parent.is_dir() {
        return unreachable(format!(
            "cannot create `{shown}`: `{}` is not a directory",
            parent.display()
        ));
    }
    unreachable(format!(
        "cannot open or create `{shown}` ({e}); make sure directory `{}` and the file are \
         writable by this user (SQLite also creates `{shown}-wal` and `{shown}-shm` beside it)",
        parent.display()
    ))
}

/// [`open_once`], tried again while the file is busy, for up to [`BUSY_TIMEOUT`]: SQLite
/// answers "database is locked" at once, without waiting in its busy handler, when
/// connections race to switch a new file to WAL or to create its schema (seen with 200
/// stores opened at once in `tests/store_conformance.rs`).
fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match open_once(path) {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                // Runs on a blocking thread (`spawn_blocking` in `open`), not on the runtime.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Opens the file, switches it to WAL and creates the schema if missing.
fn open_once(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %path.display(),
            mode,
            "the results store could not switch to WAL; concurrent writers will wait longer"
        );
    }
    // Safe with WAL: a crash of the process loses nothing, a power loss at most the last
    // transactions, never the file's consistency.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.commit()?;
    Ok(conn)
}

/// Now, ms since the epoch, as stored in `expires_ms`.
fn now_ms() -> i64 {
    i64::try_from(crate::stamp::now_us() / 1000).unwrap_or(i64::MAX)
}

/// When a lease taken at `now` (ms since the epoch) ends.
fn lease_end(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// Reads a `seconds` row selected with [`SECOND_COLUMNS`].
fn read_second(r: &Row<'_>) -> rusqlite::Result<TopicSecond> {
    Ok(TopicSecond {
        run_id: r.get(0)?,
        topic: r.get(1)?,
        second: r.get(2)?,
        instance: r.get(3)?,
        sent: r.get(4)?,
        received: r.get(5)?,
        gaps: r.get(6)?,
        duplicates: r.get(7)?,
        reordered: r.get(8)?,
        undecodable: r.get(9)?,
        latency_hdr: r.get::<_, Option<Vec<u8>>>(10)?.unwrap_or_default(),
        corrected_hdr: r.get::<_, Option<Vec<u8>>>(11)?.unwrap_or_default(),
    })
}

/// Combines two encoded histograms; an empty encoding is an empty histogram.
fn merge_hdr(old: &[u8], new: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>, Failure> {
    if old.is_empty() {
        return Ok(new.to_vec());
    }
    if new.is_empty() {
        return Ok(old.to_vec());
    }
    let decode = |bytes: &[u8], side: &str| {
        LatencyHistogram::decode(bytes)
            .map_err(|e| Failure::Corrupt(format!("{side} histogram of {}: {e}", what())))
    };
    let mut merged = decode(old, "stored")?;
    merged.add(&decode(new, "new")?);
    Ok(merged.encode())
}

/// Adds `new` into the stored row `old` of the same key.
fn merge_second(old: TopicSecond, new: &TopicSecond) -> Result<TopicSecond, Failure> {
    let what = || {
        format!(
            "run `{}` topic `{}` second {} instance `{}`",
            new.run_id, new.topic, new.second, new.instance
        )
    };
    Ok(TopicSecond {
        sent: old.sent.saturating_add(new.sent),
        received: old.received.saturating_add(new.received),
        gaps: old.gaps.saturating_add(new.gaps),
        duplicates: old.duplicates.saturating_add(new.duplicates),
        reordered: old.reordered.saturating_add(new.reordered),
        undecodable: old.undecodable.saturating_add(new.undecodable),
        latency_hdr: merge_hdr(&old.latency_hdr, &new.latency_hdr, &what)?,
        corrected_hdr: merge_hdr(&old.corrected_hdr, &new.corrected_hdr, &what)?,
        ..old
    })
}

/// SQLite's page cache (negative: KiB) while only per-second rows are written: small, so a
/// process's memory does not grow with the file as a long run fills it.
const CACHE_KIB: i64 = -1_024;

/// The page cache once raw records are written: large enough to keep the raw index in
/// memory, which sustained insert rates need (BENCHMARKS.md, issue #3).
const RAW_CACHE_KIB: i64 = -65_536;

/// Writes one batch in one transaction.
fn write_batch(conn: &mut Connection, batch: &Batch, raw_run: Option<&str>) -> Result<(), Failure> {
    if !batch.raw.is_empty() {
        conn.pragma_update(None, "cache_size", RAW_CACHE_KIB)?;
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !batch.seconds.is_empty() {
        let mut get = tx.prepare_cached(&format!(
            "SELECT {SECOND_COLUMNS} FROM seconds \
             WHERE run_id = ?1 AND topic = ?2 AND second = ?3 AND instance = ?4"
        ))?;
        let mut put = tx.prepare_cached(&format!(
            "INSERT INTO seconds ({SECOND_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (run_id, topic, second, instance) DO UPDATE SET \
             sent = excluded.sent, received = excluded.received, lost = excluded.lost, \
             duplicates = excluded.duplicates, reordered = excluded.reordered, \
             undecodable = excluded.undecodable, latency_hdr = excluded.latency_hdr, \
             corrected_hdr = excluded.corrected_hdr"
        ))?;
        for s in &batch.seconds {
            let old = get
                .query_row(
                    params![s.run_id, s.topic, s.second, s.instance],
                    read_second,
                )
                .optional()?;
            let merged;
            let row = match old {
                Some(old) => {
                    merged = merge_second(old, s)?;
                    &merged
                }
                None => s,
            };
            put.execute(params![
                row.run_id,
                row.topic,
                row.second,
                row.instance,
                row.sent,
                row.received,
                row.gaps,
                row.duplicates,
                row.reordered,
                row.undecodable,
                row.latency_hdr,
                row.corrected_hdr,
            ])?;
        }
    }
    if !batch.raw.is_empty() {
        let Some(run_id) = raw_run else {
            return Err(Failure::Invalid(format!(
                "{} raw records name no run: the batch has no seconds and no run was \
                 stored with put_run on this handle",
                batch.raw.len()
            )));
        };
        let mut put = tx.prepare_cached(
            "INSERT INTO raw (run_id, topic, device, seq, intended_us, sent_us, received_us) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        // In index order, so each index page is touched once per batch, not once per row.
        let mut rows: Vec<&(String, RawRecord)> = batch.raw.iter().collect();
        rows.sort_by(|a, b| (&a.0, a.1.received_us).cmp(&(&b.0, b.1.received_us)));
        for (topic, r) in rows {
            put.execute(params![
                run_id,
                topic,
                r.device,
                r.seq,
                r.intended_us,
                r.sent_us,
                r.received_us
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Whether `run_id` has a run record.
fn run_exists(conn: &Connection, run_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = ?1)")?
        .query_row([run_id], |r| r.get(0))
}

impl SqliteStore {
    /// Opens (creating if missing) the file a `sqlite://path` URL names: relative to the
    /// working directory, or absolute with three slashes (`sqlite:///var/lib/x.db`).
    ///
    /// Creates the schema if missing and switches the file to WAL. A path that cannot be
    /// opened gives [`StoreError::Unreachable`] naming the path and the fix; a file that
    /// is not a SQLite database gives [`StoreError::Corrupt`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let path = parse_url(url)?;
        let owned_url = url.to_string();
        let conn = tokio::task::spawn_blocking(move || {
            open_connection(&path).map_err(|e| open_error(&owned_url, &path, &e))
        })
        .await
        .map_err(|e| StoreError::Unreachable {
            url: url.to_string(),
            reason: format!("the task opening the file failed: {e}"),
        })??;
        Ok(Self {
            url: url.to_string(),
            conn: Arc::new(Mutex::new(conn)),
            last_run: Mutex::new(None),
        })
    }

    /// Deletes `owner`'s leases of `kind` on `topics`, in one transaction.
    async fn drop_leases(
        &self,
        kind: Lease,
        topics: &[String],
        owner: &str,
    ) -> Result<(), StoreError> {
        let (topics, owner) = (topics.to_vec(), owner.to_string());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let sql = match kind {
                    Lease::Advertisement => {
                        "DELETE FROM advertisements WHERE topic = ?1 AND owner = ?2"
                    }
                    Lease::Claim => "DELETE FROM claims WHERE topic = ?1 AND owner = ?2",
                };
                let mut delete = tx.prepare_cached(sql)?;
                for topic in &topics {
                    delete.execute(params![topic, owner])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on the connection on tokio's blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let outcome = tokio::task::spawn_blocking(move || {
            // A panic inside a call rolled its transaction back while unwinding, so the
            // connection is still usable.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await;
        match outcome {
            Ok(result) => result.map_err(|e| e.into_store_error(&self.url)),
            Err(e) => Err(StoreError::Io {
                url: self.url.clone(),
                reason: format!("the store task failed: {e}"),
            }),
        }
    }

    /// The run id raw records of `batch` belong to (see the module documentation).
    fn raw_run_id(&self, batch: &Batch) -> Option<String> {
        if !batch.run_id.is_empty() {
            return Some(batch.run_id.clone());
        }
        if let Some(first) = batch.seconds.first()
            && batch.seconds.iter().all(|s| s.run_id == first.run_id)
        {
            return Some(first.run_id.clone());
        }
        self.last_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The two kinds of leased rows.
#[derive(Clone, Copy)]
enum Lease {
    Advertisement,
    Claim,
}

#[cfg(test)]
mod tests;
