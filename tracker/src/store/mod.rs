//! The metadata store: all SQL of the tracker lives under this module.
//!
//! One implementation serves SQLite and Postgres through sqlx's `any` driver: the schema and
//! almost every statement are the same in both dialects (`$n` placeholders, `on conflict`,
//! `returning`), and the few differences are branches on [`Dialect`]. That keeps one code path to
//! test, and the conformance suite (`tests/store_conformance.rs`) runs it on both databases.
//! Queries are checked at run time, not by `query!`, because `query!` cannot check one statement
//! against two databases.
//!
//! SQLite allows one writer at a time. Writes therefore go through a pool of one connection
//! (`write`), so concurrent requests queue in the pool instead of failing with `SQLITE_BUSY`, while
//! reads use a pool of several connections under WAL. On Postgres both pools are the same pool.
//!
//! Two paths exist on SQLite alone, for speed, and run the same SQL:
//! - reads that return many rows (metric history, run search and hydration) step their
//!   statements through rusqlite instead of sqlx's per-row channel (`native`);
//! - requests that log metric points alone are stored in groups, one transaction for every
//!   request waiting at that moment, through rusqlite while the group holds sqlx's write
//!   connection (`group_commit`).

pub mod audit;
pub mod experiments;
mod group_commit;
pub mod logged_models;
mod native;
pub mod promotion;
pub mod registry;
pub mod backup;
pub mod runs;
pub mod tokens;
pub mod webhooks;
pub mod search_sql;
pub mod studies;

use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use group_commit::GroupCommitCounts;
pub use search_sql::Dialect;

/// A store error. Handlers map these to MLflow error codes in `crate::error`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The entity does not exist; the message is MLflow's.
    #[error("{0}")]
    NotFound(String),
    /// The entity exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request breaks a rule of the data (changing a param, logging to a deleted run).
    #[error("{0}")]
    Invalid(String),
    /// A concurrent change won (stale lease, lost race).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Db(sqlx::Error),
    /// The database failed on the native SQLite path (`native`, `group_commit`).
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl From<sqlx::Error> for Error {
    /// Database errors caused by the data a client sent are the client's error, not a 5xx that
    /// the mlflow client would retry for minutes: Postgres refuses NUL characters in `text`
    /// (22021, 22P05) and values too large for an index entry (54000), where SQLite stores both.
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.code().as_deref() {
                Some("22021" | "22P05") => return Error::Invalid(format!("Invalid text in request: {}", db.message())),
                Some("54000") => return Error::Invalid(format!("A value is too large for the database: {}", db.message())),
                _ => {}
            }
        }
        Error::Db(e)
    }
}

impl Error {
    /// Whether the failure is the database being momentarily unable to serve, so that the same
    /// request can succeed when retried: no pooled connection within the timeout, a lost
    /// connection, SQLite's busy or locked database, and Postgres' serialization failures,
    /// deadlock victims, lock timeouts, connection limits and a server starting or shutting down.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            Error::Db(e) => e,
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                return matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            _ => return false,
        };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                // SQLite reports extended result codes; the primary code is the low byte.
                let sqlite_primary = code.parse::<u32>().ok().map(|c| c & 0xff);
                matches!(sqlite_primary, Some(5 | 6)) // SQLITE_BUSY, SQLITE_LOCKED
                    || matches!(code, "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03")
            }
            _ => false,
        }
    }
}

/// Result with the store's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an error is a unique-constraint violation (Postgres 23505, SQLite's "UNIQUE constraint
/// failed"), the signal for "already exists".
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.message().contains("UNIQUE constraint failed") || db.code().as_deref() == Some("23505")
        }
        _ => false,
    }
}

/// The metadata store.
#[derive(Clone, Debug)]
pub struct Store {
    dialect: Dialect,
    /// Reads (several connections).
    read: AnyPool,
    /// Writes: a single connection on SQLite, the read pool on Postgres.
    write: AnyPool,
    /// Trials and reports of studies as of their last decision here (see `studies::StudyTx`).
    study_cache: studies::StudyCache,
    /// Each metric's last block as this process last wrote it (see `runs::LastBlocks`).
    last_blocks: runs::LastBlocks,
    /// Reads of many rows through rusqlite, on SQLite only (see `native`).
    native: Option<std::sync::Arc<native::NativeReads>>,
    /// Requests that log metric points alone, stored in groups, on SQLite only (see `group_commit`).
    group_commit: Option<group_commit::GroupCommit>,
    /// The one rusqlite write connection, on SQLite only: the group commit's and the study
    /// decisions' writes (see `native`).
    native_writer: Option<std::sync::Arc<native::NativeWriter>>,
}

/// Where the metadata lives, parsed from `--backend-store-uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendUri {
    /// A SQLite file (created when missing).
    Sqlite(std::path::PathBuf),
    /// A Postgres URL, passed to sqlx as is.
    Postgres(String),
}

impl BackendUri {
    /// Parses the URI forms `mlflow server` accepts: `sqlite:///abs/path`, `sqlite://rel/path`,
    /// `postgresql://...` or `postgres://...`, and a plain path to a SQLite file.
    pub fn parse(uri: &str) -> std::result::Result<Self, String> {
        if let Some(rest) = uri.strip_prefix("sqlite://") {
            // `sqlite:///abs` keeps its leading slash; `sqlite://rel` is relative to the CWD.
            if rest.is_empty() {
                return Err("`--backend-store-uri`: a sqlite URI needs a file path".into());
            }
            if rest == ":memory:" || rest.starts_with("/:memory:") {
                return Err("`--backend-store-uri`: an in-memory SQLite database would lose everything on restart; give a file path".into());
            }
            Ok(BackendUri::Sqlite(rest.into()))
        } else if uri.starts_with("postgresql://") || uri.starts_with("postgres://") {
            Ok(BackendUri::Postgres(uri.to_owned()))
        } else if uri.contains("://") {
            Err(format!("`--backend-store-uri`: unsupported scheme in '{uri}'; use sqlite:///path or postgresql://..."))
        } else {
            Ok(BackendUri::Sqlite(uri.into()))
        }
    }
}

impl Store {
    /// Connects, creating a SQLite file if needed, and runs the migrations (idempotent: applied
    /// versions are recorded and skipped).
    pub async fn open(uri: &BackendUri) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let store = match uri {
            BackendUri::Sqlite(path) => {
                if let Some(parent) = path.parent() {
                    if !parent.as_os_str().is_empty() {
                        std::fs::create_dir_all(parent).map_err(|e| Error::Db(sqlx::Error::Io(e)))?;
                    }
                }
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let opts = AnyConnectOptions::from_str(&url)?;
                let pool = |max: u32| {
                    AnyPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(Duration::from_secs(30))
                        // A connection to a local file does not go stale, and the ping sqlx
                        // sends before handing one out is a trip to its SQLite thread, as
                        // costly as a statement.
                        .test_before_acquire(false)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                // WAL lets readers run beside the writer; NORMAL sync is durable
                                // across process crashes (the WAL is fsynced at checkpoints).
                                // No automatic checkpoints: they run inside whichever commit
                                // crosses the threshold and fsync the database there, a 20-30 ms
                                // stall of every write queued behind it. `checkpoint_in_background`
                                // does them off the write path instead.
                                conn.execute("pragma journal_mode = wal; pragma synchronous = normal; pragma wal_autocheckpoint = 0; pragma busy_timeout = 10000; pragma foreign_keys = on; pragma case_sensitive_like = on;")
                                    .await?;
                                Ok(())
                            })
                        })
                        .connect_with(opts.clone())
                };
                let write = pool(1).await?;
                // Migrate before the read pool exists so its connections see the final schema.
                sqlx::migrate!("../migrations/sqlite").run(&write).await.map_err(migrate_error)?;
                let read = pool(8).await?;
                checkpoint_in_background(read.clone(), write.clone());
                let native = Some(std::sync::Arc::new(native::NativeReads::new(path)));
                let last_blocks = runs::LastBlocks::default();
                let native_writer = std::sync::Arc::new(native::NativeWriter::new(path));
                let group_commit = Some(group_commit::GroupCommit::start(write.clone(), native_writer.clone(), last_blocks.clone()));
                Store { dialect: Dialect::Sqlite, read, write, study_cache: Default::default(), last_blocks, native, group_commit, native_writer: Some(native_writer) }
            }
            BackendUri::Postgres(url) => {
                let opts = AnyConnectOptions::from_str(url)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    // sqlx pings a connection before handing it out: a round trip before every
                    // query or transaction, about a third of a study decision's. A connection
                    // the server dropped fails its next statement instead, as a retryable error
                    // (503), and is closed by the pool.
                    .test_before_acquire(false)
                    .connect_with(opts)
                    .await?;
                sqlx::migrate!("../migrations/postgres").run(&pool).await.map_err(migrate_error)?;
                Store { dialect: Dialect::Postgres, read: pool.clone(), write: pool, study_cache: Default::default(), last_blocks: Default::default(), native: None, group_commit: None, native_writer: None }
            }
        };
        Ok(store)
    }

    /// Which SQL dialect the store speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Pool statistics for `/metrics`: (connections open, idle connections), reads and writes.
    pub fn pool_stats(&self) -> [(&'static str, u32, usize); 2] {
        [("read", self.read.size(), self.read.num_idle()), ("write", self.write.size(), self.write.num_idle())]
    }

    /// What the group commit of metric points has done, on SQLite (for `/metrics`).
    pub fn group_commit_counts(&self) -> Option<std::sync::Arc<GroupCommitCounts>> {
        self.group_commit.as_ref().map(|g| g.counts().clone())
    }

    /// Checks that the database answers (for `/health`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.read).await?;
        Ok(())
    }
}

/// How often the WAL is copied back into the SQLite database file.
const CHECKPOINT_PERIOD: Duration = Duration::from_secs(1);

/// WAL frames (a page and a 24-byte header each, about 4 KiB) past which the checkpoint holds
/// the writer so that the WAL can start over: about 256 MiB.
const WAL_RESTART_FRAMES: i64 = 65_536;

/// Runs [`checkpoint`] every [`CHECKPOINT_PERIOD`] on a read connection. Stops when the pool is
/// closed.
fn checkpoint_in_background(read: AnyPool, write: AnyPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !read.is_closed() {
            tick.tick().await;
            if let Err(e) = checkpoint(&read, &write, WAL_RESTART_FRAMES).await {
                if !read.is_closed() {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        }
    });
}

/// A passive WAL checkpoint on `read`, which never waits for the writer or blocks it; and when
/// the WAL holds more than `restart_frames` frames, a second one while holding `write`, the
/// store's one write connection, so that the WAL starts over at the next write.
///
/// SQLite starts the WAL over only when a write begins after a checkpoint has copied every frame
/// back. Under steady writes a passive checkpoint never gets there: writes append frames while
/// it copies and fsyncs, and the WAL grows without end (1.3 GB in 90 s of the lease benchmark,
/// for a 13 MB database). The second checkpoint copies only what was written during the first,
/// with no write in between. Readers are never waited for: one still reading an old snapshot
/// leaves the WAL as it is until a later round.
async fn checkpoint(read: &AnyPool, write: &AnyPool, restart_frames: i64) -> std::result::Result<(), sqlx::Error> {
    let row = sqlx::query("pragma wal_checkpoint(passive)").fetch_one(read).await?;
    // The row is (busy, frames in the WAL, frames copied back).
    let frames: i64 = sqlx::Row::try_get(&row, 1)?;
    if frames > restart_frames {
        let _writer = write.acquire().await?;
        sqlx::query("pragma wal_checkpoint(passive)").execute(read).await?;
    }
    Ok(())
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> Error {
    Error::Db(sqlx::Error::Migrate(Box::new(e)))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Placeholders for an `in (...)` list that holds every parameter of its statement:
    /// anonymous `?` on SQLite, whose binding of numbered `$n` is quadratic in their number (see
    /// `runs::row_placeholders`), `$1, $2, ...` on Postgres.
    pub(crate) fn in_list(&self, count: usize) -> String {
        match self.dialect {
            Dialect::Sqlite => vec!["?"; count].join(", "),
            Dialect::Postgres => placeholders(1, count),
        }
    }
}

/// `$first, $first+1, ...` for `count` values.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// An opaque page token for offset paging: base64 of `{"offset": N}`, MLflow's own form, so a
/// token from either server means the same.
pub(crate) fn encode_offset_token(offset: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

/// Trims the extra row an offset-paged query fetched (it asks for `max_results + 1`) and returns
/// the next page's token when that row existed.
pub(crate) fn next_offset_token<T>(items: &mut Vec<T>, max_results: i64, offset: i64) -> Option<String> {
    if items.len() as i64 > max_results {
        items.truncate(max_results as usize);
        Some(encode_offset_token(offset + max_results))
    } else {
        None
    }
}

/// Reads an offset page token; a token that does not decode is the client's error.
pub(crate) fn decode_offset_token(token: Option<&str>) -> Result<i64> {
    let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(0) };
    let invalid = || Error::Invalid(format!("Invalid page token, could not base64-decode '{token}'"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| invalid())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    v.get("offset").and_then(|o| o.as_i64()).filter(|o| *o >= 0).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_uris_parse_like_mlflow() {
        assert_eq!(BackendUri::parse("sqlite:///abs/x.db").unwrap(), BackendUri::Sqlite("/abs/x.db".into()));
        assert_eq!(BackendUri::parse("sqlite://rel/x.db").unwrap(), BackendUri::Sqlite("rel/x.db".into()));
        assert_eq!(BackendUri::parse("postgresql://u@h/db").unwrap(), BackendUri::Postgres("postgresql://u@h/db".into()));
        assert!(BackendUri::parse("mysql://h/db").unwrap_err().contains("unsupported scheme"));
        assert!(BackendUri::parse("sqlite://").is_err());
    }

    #[test]
    fn offset_tokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_offset_token(Some(&encode_offset_token(42))).unwrap(), 42);
        assert_eq!(decode_offset_token(None).unwrap(), 0);
        assert!(decode_offset_token(Some("!!!")).is_err());
        assert!(decode_offset_token(Some(&base64::engine::general_purpose::STANDARD.encode("{\"offset\": -1}"))).is_err());
    }

    /// Past the threshold, the checkpoint lets the WAL start over although writes never stop.
    #[tokio::test]
    async fn the_wal_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&BackendUri::Sqlite(dir.path().join("t.db"))).await.unwrap();
        let frames = |store: Store| async move { sqlx::Row::try_get::<i64, _>(&sqlx::query("pragma wal_checkpoint(passive)").fetch_one(&store.read).await.unwrap(), 1).unwrap() };
        let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer = tokio::spawn({
            let (store, writing) = (store.clone(), writing.clone());
            async move {
                let mut i = 0;
                while writing.load(std::sync::atomic::Ordering::Relaxed) {
                    store.create_experiment(&format!("e{i}"), None, &[]).await.unwrap();
                    i += 1;
                    // Steady, but paced: unpaced, a fast machine refills the restarted WAL past
                    // `before` within the 50 ms below, and the check reads as if it never restarted.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                i
            }
        });
        while frames(store.clone()).await < 500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = frames(store.clone()).await;
        checkpoint(&store.read, &store.write, 10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = frames(store.clone()).await;
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        let written = writer.await.unwrap();
        assert!(after < before, "the WAL started over: {after} frames after, {before} before");
        assert_eq!(store.get_experiment_by_name(&format!("e{}", written - 1)).await.unwrap().lifecycle_stage, "active", "nothing is lost");
    }

    /// A write that meets another process's write lock is retryable (503), a broken rule is not.
    #[tokio::test]
    async fn a_locked_sqlite_database_is_transient_and_a_constraint_is_not() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let connect = || async { AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap() };
        let (holder, other) = (connect().await, connect().await);
        sqlx::query("create table t (id integer primary key)").execute(&holder).await.unwrap();
        sqlx::query("pragma busy_timeout = 0").execute(&other).await.unwrap();
        let mut lock = holder.begin().await.unwrap();
        sqlx::query("insert into t values (1)").execute(&mut *lock).await.unwrap();
        let busy = Error::from(sqlx::query("insert into t values (2)").execute(&other).await.unwrap_err());
        assert!(busy.is_transient(), "{busy}");
        lock.commit().await.unwrap();
        let duplicate = Error::from(sqlx::query("insert into t values (1)").execute(&other).await.unwrap_err());
        assert!(!duplicate.is_transient(), "{duplicate}");
        assert!(!Error::NotFound("x".into()).is_transient());
    }

    #[test]
    fn both_migration_trees_list_the_same_versions() {
        let versions = |dir: &str| {
            let mut v: Vec<String> = std::fs::read_dir(format!("{}/../migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(versions("sqlite"), versions("postgres"));
    }
}
