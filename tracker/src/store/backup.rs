//! Backup and restore of the metadata: every table as JSON lines, read in one snapshot (a read
//! transaction; repeatable read on Postgres), so a backup taken while the server runs is
//! consistent. The format names columns, not positions, and carries no SQL, so a SQLite backup
//! restores into Postgres and back.
//!
//! ```text
//! {"table": "experiment", "columns": ["experiment_id", "name", ...]}
//! [0, "Default", ...]
//! ...
//! ```

use std::io::{BufRead, Write};

use futures::TryStreamExt as _;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{Column, Row};

use super::{Dialect, Error, Result, Store};

/// Every table, in migration order: parents before children, as foreign keys need on restore.
pub const TABLES: [&str; 29] = [
    "experiment",
    "experiment_tag",
    "run",
    "param",
    "tag",
    "metric",
    "latest_metric",
    "metric_block",
    "dataset",
    "run_input",
    "logged_model",
    "logged_model_param",
    "logged_model_tag",
    "run_output",
    "registered_model",
    "registered_model_tag",
    "model_version",
    "model_version_tag",
    "registered_model_alias",
    "api_token",
    "study",
    "trial",
    "trial_report",
    "worker",
    "registered_model_promotion_rules",
    "registry_audit",
    "webhook",
    "webhook_delivery",
    "webhook_attempt",
];

/// Generated ids whose Postgres sequences must continue after the restored rows.
const IDENTITY_COLUMNS: [(&str, &str); 5] =
    [("experiment", "experiment_id"), ("metric", "metric_id"), ("registry_audit", "id"), ("webhook_delivery", "id"), ("webhook_attempt", "id")];

/// How a column's values are bound on restore.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Text,
}

fn io(e: std::io::Error) -> Error {
    Error::Db(sqlx::Error::Io(e))
}

fn value_of(row: &AnyRow, i: usize) -> Result<Value> {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return Ok(v.map_or(Value::Null, Value::from));
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        // Non-finite doubles are not JSON; the store never keeps them (NaN is a flag, infinities
        // are clamped), so one here is refused rather than silently changed.
        return match v {
            None => Ok(Value::Null),
            Some(f) => serde_json::Number::from_f64(f).map(Value::Number).ok_or_else(|| Error::Invalid(format!("column {} holds {f}, which a backup cannot keep", row.column(i).name()))),
        };
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return Ok(v.map_or(Value::Null, Value::from));
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return Ok(v.map_or(Value::Null, Value::from));
    }
    Err(Error::Invalid(format!("column {} has a type the backup does not know", row.column(i).name())))
}

impl Store {
    /// Writes every table to `out` from one snapshot; returns the row count of each table.
    pub async fn export(&self, out: &mut impl Write) -> Result<Vec<(String, u64)>> {
        let mut tx = self.read.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
        }
        let mut counts = Vec::new();
        for table in TABLES {
            let columns = self.columns_of(table).await?;
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            writeln!(out, "{}", json!({"table": table, "columns": names})).map_err(io)?;
            let sql = format!("select {} from {table}", names.join(", "));
            let mut rows = sqlx::query(&sql).fetch(&mut *tx);
            let mut n = 0u64;
            while let Some(row) = rows.try_next().await? {
                let values = (0..names.len()).map(|i| value_of(&row, i)).collect::<Result<Vec<_>>>()?;
                writeln!(out, "{}", Value::Array(values)).map_err(io)?;
                n += 1;
            }
            counts.push((table.to_string(), n));
        }
        drop(tx);
        Ok(counts)
    }

    /// Columns of a table and how to bind them, from the database's own catalogue.
    async fn columns_of(&self, table: &str) -> Result<Vec<(String, Kind)>> {
        let rows = match self.dialect {
            Dialect::Sqlite => sqlx::query("select name, type from pragma_table_info($1) order by cid").bind(table).fetch_all(&self.read).await?,
            Dialect::Postgres => {
                sqlx::query("select column_name::text, data_type::text from information_schema.columns where table_schema = current_schema() and table_name = $1 order by ordinal_position")
                    .bind(table)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                let (name, ty): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                let ty = ty.to_ascii_lowercase();
                let kind = if ty.contains("int") || ty.contains("serial") {
                    Kind::Int
                } else if ty.contains("double") || ty.contains("real") || ty.contains("float") || ty.contains("numeric") {
                    Kind::Float
                } else {
                    Kind::Text
                };
                Ok((name, kind))
            })
            .collect()
    }

    /// Loads a backup written by [`Store::export`] into this store, which must hold nothing but
    /// what its migrations create; all in one transaction, so a failed restore leaves it empty.
    /// Returns the row count of each table.
    pub async fn import(&self, input: impl BufRead) -> Result<Vec<(String, u64)>> {
        let experiments: i64 = sqlx::query("select count(*) from experiment").fetch_one(&self.read).await?.try_get(0)?;
        let runs: i64 = sqlx::query("select count(*) from run").fetch_one(&self.read).await?.try_get(0)?;
        let models: i64 = sqlx::query("select count(*) from registered_model").fetch_one(&self.read).await?.try_get(0)?;
        if experiments > 1 || runs > 0 || models > 0 {
            return Err(Error::Conflict("a restore needs an empty store: this one already holds experiments, runs or models".into()));
        }
        let mut tx = self.write.begin().await?;
        for table in TABLES.iter().rev() {
            sqlx::query(&format!("delete from {table}")).execute(&mut *tx).await?;
        }
        let mut counts: Vec<(String, u64)> = Vec::new();
        let mut current: Option<(String, Vec<Kind>, String)> = None;
        for (number, line) in input.lines().enumerate() {
            let line = line.map_err(io)?;
            let bad = |why: String| Error::Invalid(format!("backup line {}: {why}", number + 1));
            let value: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if let Some(header) = value.as_object() {
                let table = header.get("table").and_then(Value::as_str).ok_or_else(|| bad("a table header needs `table`".into()))?;
                if !TABLES.contains(&table) {
                    return Err(bad(format!("unknown table '{table}'")));
                }
                let columns: Vec<String> = header
                    .get("columns")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("a table header needs `columns`".into()))?
                    .iter()
                    .map(|c| c.as_str().map(str::to_owned).ok_or_else(|| bad("column names are strings".into())))
                    .collect::<Result<_>>()?;
                let known = self.columns_of(table).await?;
                let kinds = columns
                    .iter()
                    .map(|c| known.iter().find(|(n, _)| n == c).map(|(_, k)| *k).ok_or_else(|| bad(format!("table '{table}' has no column '{c}' here"))))
                    .collect::<Result<Vec<_>>>()?;
                let placeholders = (1..=columns.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
                let sql = format!("insert into {table} ({}) values ({placeholders})", columns.join(", "));
                counts.push((table.to_owned(), 0));
                current = Some((table.to_owned(), kinds, sql));
                continue;
            }
            let (_, kinds, sql) = current.as_ref().ok_or_else(|| bad("a row before any table header".into()))?;
            let values = value.as_array().filter(|v| v.len() == kinds.len()).ok_or_else(|| bad(format!("a row needs {} values", kinds.len())))?;
            let mut q = sqlx::query(sql);
            for (v, kind) in values.iter().zip(kinds) {
                q = match (kind, v) {
                    (Kind::Int, Value::Null) => q.bind(None::<i64>),
                    (Kind::Float, Value::Null) => q.bind(None::<f64>),
                    (Kind::Text, Value::Null) => q.bind(None::<String>),
                    (Kind::Int, Value::Number(n)) => q.bind(n.as_i64().ok_or_else(|| bad(format!("{n} is not an integer")))?),
                    (Kind::Float, Value::Number(n)) => q.bind(n.as_f64().ok_or_else(|| bad(format!("{n} is not a number")))?),
                    (Kind::Int, Value::Bool(b)) => q.bind(i64::from(*b)),
                    (Kind::Text, Value::String(s)) => q.bind(s.clone()),
                    (_, other) => return Err(bad(format!("{other} does not fit a {kind:?} column"))),
                };
            }
            q.execute(&mut *tx).await?;
            if let Some(last) = counts.last_mut() {
                last.1 += 1;
            }
        }
        if self.dialect == Dialect::Postgres {
            for (table, column) in IDENTITY_COLUMNS {
                sqlx::query(&format!(
                    "select setval(pg_get_serial_sequence('{table}', '{column}'), coalesce((select max({column}) from {table}), 0) + 1, false)"
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(counts)
    }
}
