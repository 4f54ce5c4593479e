//! Reads of many rows, and the group commit's writes, on SQLite through rusqlite instead of sqlx.
//!
//! sqlx's SQLite driver runs each statement on a worker thread and hands every row to the async
//! task through a channel, then converts it to an `AnyRow`: about 4 us a row here, so a
//! 100,000-point metric history took half a second and a page of 1,000 hydrated runs (about
//! 15,000 rows of params, tags and metrics) a tenth of one. rusqlite steps the same statement on a
//! blocking thread and decodes each row in place.
//!
//! The SQL is the store's own and the same on both databases; only the executor differs
//! ([`Store::fetch_rows`]), so Postgres keeps sqlx and the conformance suite covers both paths.
//! The read connections are `query_only`. The one write connection here, [`NativeWriter`],
//! stores the group commit's metric points with the same statements as sqlx's path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::any::AnyRow;

use super::runs::{block_statements, last_block_queries, point_statements, points_of, LastBlocks, RunPoints};
use super::search_sql::{bind_all_as, Bind};
use super::{Dialect, Result, Store};

/// Read connections open at once (and blocking threads in use), as many as sqlx's read pool.
const MAX_CONNECTIONS: usize = 8;

/// How long a read waits for a lock (a checkpoint truncating the WAL) before failing busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the database file each connection maps into memory.
const MMAP_BYTES: u64 = 1 << 30;

/// Prepared statements kept per connection: a search prepares about six of them.
const STATEMENTS_KEPT: usize = 64;

/// A small pool of read-only rusqlite connections to the store's SQLite file.
pub(crate) struct NativeReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for NativeReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeReads").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A row decoded into a tuple of column values, the rusqlite twin of sqlx's `FromRow` for tuples.
pub(crate) trait NativeRow: Sized {
    fn from_native(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

macro_rules! native_row_tuple {
    ($($index:tt : $column:ident),+) => {
        impl<$($column: rusqlite::types::FromSql),+> NativeRow for ($($column,)+) {
            fn from_native(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($(row.get::<_, $column>($index)?,)+))
            }
        }
    };
}

native_row_tuple!(0: A);
native_row_tuple!(0: A, 1: B);
native_row_tuple!(0: A, 1: B, 2: C);
native_row_tuple!(0: A, 1: B, 2: C, 3: D);
native_row_tuple!(0: A, 1: B, 2: C, 3: D, 4: E);
native_row_tuple!(0: A, 1: B, 2: C, 3: D, 4: E, 5: F);
native_row_tuple!(0: A, 1: B, 2: C, 3: D, 4: E, 5: F, 6: G);
native_row_tuple!(0: A, 1: B, 2: C, 3: D, 4: E, 5: F, 6: G, 7: H);
native_row_tuple!(0: A, 1: B, 2: C, 3: D, 4: E, 5: F, 6: G, 7: H, 8: I);

impl NativeReads {
    /// Reads of the SQLite file at `path`, which must exist with its schema (the store opens
    /// these after migrating).
    pub(crate) fn new(path: &Path) -> Self {
        NativeReads { path: path.to_owned(), idle: Mutex::new(Vec::new()), permits: tokio::sync::Semaphore::new(MAX_CONNECTIONS) }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        // Read-write without create, then `query_only`: a read-only open of a WAL database fails
        // when its -shm file is missing, which a read-write open recreates.
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // `case_sensitive_like` as on sqlx's connections: MLflow's LIKE is case-sensitive.
        // Pages of the database file are read through a memory map instead of a copy into each
        // connection's cache (pages still in the WAL are read from it as before).
        conn.execute_batch(&format!("pragma query_only = on; pragma case_sensitive_like = on; pragma mmap_size = {MMAP_BYTES};"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
        Ok(conn)
    }

    /// Runs one read statement with its binds and decodes every row, on a blocking thread.
    pub(crate) async fn fetch<T: NativeRow + Send + 'static>(self: &Arc<Self>, sql: String, binds: Vec<Bind>) -> Result<Vec<T>> {
        let _permit = self.permits.acquire().await.map_err(|_| sqlx::Error::PoolClosed)?;
        let this = Arc::clone(self);
        let rows = tokio::task::spawn_blocking(move || {
            let idle = this.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => this.connect()?,
            };
            let rows = query(&conn, &sql, &binds);
            this.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            rows
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok(rows)
    }
}

/// Prepares (or reuses) `sql`, binds `binds` and collects the rows.
pub(crate) fn query<T: NativeRow>(conn: &Connection, sql: &str, binds: &[Bind]) -> rusqlite::Result<Vec<T>> {
    let mut stmt = prepare(conn, sql, binds)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(T::from_native(row)?);
    }
    Ok(out)
}

/// Prepares (or reuses) `sql`, binds `binds` and runs it to its end.
pub(crate) fn execute(conn: &Connection, sql: &str, binds: &[Bind]) -> rusqlite::Result<usize> {
    prepare(conn, sql, binds)?.raw_execute()
}

/// A cached statement with `binds` bound as sqlx binds them on SQLite: `$n` takes the n-th
/// value wherever it stands (SQLite numbers named parameters by first appearance, which is not
/// always n), and an anonymous `?` takes the value of its position.
fn prepare<'c>(conn: &'c Connection, sql: &str, binds: &[Bind]) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for index in 1..=stmt.parameter_count() {
        let number = match stmt.parameter_name(index) {
            Some(name) if name.starts_with('$') => name[1..].parse::<usize>().map_err(|_| rusqlite::Error::InvalidParameterName(name.to_owned()))?,
            _ => index,
        };
        let bind = binds.get(number.wrapping_sub(1)).ok_or(rusqlite::Error::InvalidParameterCount(number, binds.len()))?;
        match bind {
            Bind::Text(s) => stmt.raw_bind_parameter(index, s)?,
            Bind::Float(f) => stmt.raw_bind_parameter(index, f)?,
            Bind::Int(i) => stmt.raw_bind_parameter(index, i)?,
            Bind::NullText | Bind::NullInt | Bind::NullFloat => stmt.raw_bind_parameter(index, rusqlite::types::Null)?,
        }
    }
    Ok(stmt)
}

/// The connection that the group commit of metric points (see `group_commit`) and the study
/// decisions (see `studies`) write through, on a blocking thread, while they hold sqlx's write
/// connection: that single pooled connection is the process's write lock on SQLite, so these
/// writes never wait on SQLite's own lock, and `with` never waits on its mutex.
pub(crate) struct NativeWriter {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for NativeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl NativeWriter {
    /// The writer of the SQLite file at `path`, opened on first use.
    pub(crate) fn new(path: &Path) -> Self {
        NativeWriter { path: path.to_owned(), conn: Mutex::new(None) }
    }

    /// Runs `write` on the connection, opening it first if needed. Blocking.
    pub(crate) fn with<T>(&self, write: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                // As on sqlx's connections (see `Store::open`): durable across process crashes,
                // and no checkpoint inside a commit.
                conn.execute_batch("pragma synchronous = normal; pragma wal_autocheckpoint = 0; pragma foreign_keys = on;")?;
                conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
                slot.insert(conn)
            }
        };
        write(conn)
    }

    /// [`runs::insert_metrics`](super::runs::insert_metrics) on this connection: the same
    /// statements, in the caller's transaction.
    pub(crate) fn insert_metrics(conn: &Connection, last_blocks: &LastBlocks, batches: &[RunPoints<'_>]) -> Result<()> {
        let points = points_of(batches);
        for statement in point_statements(Dialect::Sqlite, &points) {
            execute(conn, &statement.sql, &statement.binds)?;
        }
        let mut looked_up = HashMap::new();
        for (run_id, q) in last_block_queries(last_blocks, &points) {
            for (key, block, points) in query::<(String, i64, i64)>(conn, &q.sql, &q.binds)? {
                looked_up.insert((run_id.to_owned(), key), (block, points));
            }
        }
        for statement in block_statements(Dialect::Sqlite, last_blocks, &points, &looked_up) {
            execute(conn, &statement.sql, &statement.binds)?;
        }
        Ok(())
    }
}

impl Store {
    /// Runs a read statement written with `$n` placeholders and returns its rows as `T`, a tuple
    /// of column types: through rusqlite on SQLite ([`NativeReads`]), through sqlx on Postgres.
    pub(crate) async fn fetch_rows<T>(&self, sql: String, binds: Vec<Bind>) -> Result<Vec<T>>
    where
        T: NativeRow + for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin + 'static,
    {
        match &self.native {
            Some(native) => native.fetch(sql, binds).await,
            None => Ok(bind_all_as(sqlx::query_as::<_, T>(&sql), &binds).fetch_all(&self.read).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Error;

    fn reads_of(dir: &tempfile::TempDir, setup: &str) -> Arc<NativeReads> {
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("pragma journal_mode = wal; {setup}")).unwrap();
        Arc::new(NativeReads::new(&path))
    }

    /// `$n` takes the n-th bind wherever and however often it stands, `?` its position's.
    #[tokio::test]
    async fn placeholders_bind_as_sqlx_binds_them() {
        let dir = tempfile::tempdir().unwrap();
        let reads = reads_of(&dir, "create table t (a text, b integer, c real); insert into t values ('x', 1, 0.5), ('y', 2, 1.5), ('x', 3, 2.5);");
        let binds = vec![Bind::Text("x".into()), Bind::Int(2), Bind::Float(1.0)];
        let rows: Vec<(String, i64, f64)> =
            reads.fetch("select a, b, c from t where b >= $2 and (a = $1 or c > $3) and $2 > 0 order by b".into(), binds.clone()).await.unwrap();
        assert_eq!(rows, vec![("y".to_owned(), 2, 1.5), ("x".to_owned(), 3, 2.5)]);
        let rows: Vec<(i64,)> = reads.fetch("select b from t where a in (?, ?) order by b".into(), vec![Bind::Text("y".into()), Bind::Text("x".into())]).await.unwrap();
        assert_eq!(rows, vec![(1,), (2,), (3,)]);
    }

    /// A statement with more placeholders than binds, a column of another type, or bad SQL is
    /// an error, never a panic; and the connection goes back to the pool fit for the next read.
    #[tokio::test]
    async fn bad_statements_are_errors_and_the_pool_survives_them() {
        let dir = tempfile::tempdir().unwrap();
        let reads = reads_of(&dir, "create table t (a text); insert into t values ('x');");
        let missing = reads.fetch::<(String,)>("select a from t where a = $2".into(), vec![Bind::Text("x".into())]).await.unwrap_err();
        assert!(matches!(missing, Error::Sqlite(_)), "{missing:?}");
        let wrong_type = reads.fetch::<(i64,)>("select a from t".into(), vec![]).await.unwrap_err();
        assert!(matches!(wrong_type, Error::Sqlite(_)), "{wrong_type:?}");
        assert!(reads.fetch::<(i64,)>("select nope from t".into(), vec![]).await.is_err());
        assert!(reads.fetch::<(i64,)>("insert into t values ('y') returning 1".into(), vec![]).await.is_err(), "query_only");
        let rows: Vec<(String,)> = reads.fetch("select a from t".into(), vec![]).await.unwrap();
        assert_eq!(rows, vec![("x".to_owned(),)]);
    }

    /// A read that meets a lock it cannot wait out is busy: retryable (503), not a 500.
    #[test]
    fn a_busy_database_is_transient() {
        let busy = Error::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None));
        assert!(busy.is_transient());
        let misuse = Error::Sqlite(rusqlite::Error::InvalidParameterCount(2, 1));
        assert!(!misuse.is_transient());
    }
}
