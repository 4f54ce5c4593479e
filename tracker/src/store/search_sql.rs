//! SQL for parsed search filters and orderings (see `crate::search`).
//!
//! One SQL text serves SQLite and Postgres through sqlx's `any` driver: placeholders are
//! `$1, $2, ...` in both. The fragments refer to the `run` table aliased `r` and the
//! `experiment` table aliased `e`:
//!
//! ```text
//! let f = run_filter_sql(&clauses, dialect, 2);                 // $2 .. $(1 + f.binds.len())
//! let o = run_order_sql(&orders, dialect, 2 + f.binds.len());
//! let sql = format!("SELECT r.run_uuid FROM run r WHERE r.experiment_id = $1{} ORDER BY {}",
//!                   f.sql, o.sql);
//! // bind the experiment id, then f.binds, then o.binds, in that order.
//! ```
//!
//! Semantics, following MLflow's SQL store:
//! * metrics compare the run's latest value (`latest_metric`); a NaN latest value satisfies only
//!   `!=`, and `!=` needs the metric to be present;
//! * `params.k` / `tags.k` comparisons need the key to be present (`!=` is "present and
//!   different"); `IS NULL` is "absent";
//! * `LIKE` is case-sensitive in both dialects (SQLite: `GLOB` with the pattern translated),
//!   `ILIKE` is case-insensitive (SQLite: `lower(x) LIKE lower(p)`, ASCII case folding only);
//! * missing values sort last in both directions; NaN metrics sort after numbers, before
//!   missing ones.

use crate::search::{
    DatasetField, ExperimentAttribute, ExperimentClause, ExperimentOrder, KeyCond, NumOp, Number,
    RegistryAttribute, RegistryClause, RegistryEntity, RegistryOrder, RunAttribute, RunClause,
    RunOrder, RunOrderKey, StrCond, StrOp,
};

/// The database the SQL is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value for one `$n` placeholder.
#[derive(Clone, Debug, PartialEq)]
pub enum Bind {
    Text(String),
    Float(f64),
    Int(i64),
    /// SQL NULL, typed as text for Postgres.
    NullText,
    /// SQL NULL, typed as a 64-bit integer for Postgres.
    NullInt,
    /// SQL NULL, typed as a double for Postgres.
    ///
    /// sqlx 0.8.6's `any` driver sends a NULL `f64` to Postgres as a `float4` parameter (its NULL
    /// mapping swaps `Real` and `Double`). The statement is then cached with a `float4` parameter,
    /// and the next non-NULL `f64` fails with "incorrect binary data format". A NULL `f32` is sent
    /// as `float8`, so this is bound as that.
    NullFloat,
}

impl Bind {
    /// Text, or NULL typed as text.
    pub fn text_or_null(v: Option<&str>) -> Bind {
        v.map_or(Bind::NullText, |s| Bind::Text(s.to_owned()))
    }

    /// An integer, or NULL typed as one.
    pub fn int_or_null(v: Option<i64>) -> Bind {
        v.map_or(Bind::NullInt, Bind::Int)
    }

    /// A double, or NULL typed as one.
    pub fn float_or_null(v: Option<f64>) -> Bind {
        v.map_or(Bind::NullFloat, Bind::Float)
    }
}

/// A piece of SQL and the values for its placeholders, in placeholder order.
///
/// For filters `sql` is empty or a sequence of ` AND (...)` to append to a WHERE clause; for
/// orderings it is a complete ORDER BY list (without the `ORDER BY` keywords).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SqlFragment {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// Binds `binds` in order onto a `sqlx::query(...)`.
pub fn bind_all<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    binds: &[Bind],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB>,
    Option<i64>: sqlx::Encode<'q, DB>,
    Option<f32>: sqlx::Encode<'q, DB>,
    f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    f32: sqlx::Type<DB>,
{
    for b in binds {
        query = match b {
            Bind::Text(s) => query.bind(s.clone()),
            Bind::Float(f) => query.bind(*f),
            Bind::Int(i) => query.bind(*i),
            Bind::NullText => query.bind(None::<String>),
            Bind::NullInt => query.bind(None::<i64>),
            Bind::NullFloat => query.bind(None::<f32>),
        };
    }
    query
}

/// Binds `binds` in order onto a `sqlx::query_as(...)`.
pub fn bind_all_as<'q, DB, O>(
    mut query: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    binds: &[Bind],
) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB>,
    Option<i64>: sqlx::Encode<'q, DB>,
    Option<f32>: sqlx::Encode<'q, DB>,
    f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    f32: sqlx::Type<DB>,
{
    for b in binds {
        query = match b {
            Bind::Text(s) => query.bind(s.clone()),
            Bind::Float(f) => query.bind(*f),
            Bind::Int(i) => query.bind(*i),
            Bind::NullText => query.bind(None::<String>),
            Bind::NullInt => query.bind(None::<i64>),
            Bind::NullFloat => query.bind(None::<f32>),
        };
    }
    query
}

/// Translates a SQL LIKE pattern (`%`, `_`, no escape character) into a SQLite GLOB pattern,
/// which is case-sensitive: `%` -> `*`, `_` -> `?`, and the GLOB metacharacters `*`, `?`, `[`,
/// `]` are made literal with one-character classes.
pub fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for c in pattern.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            ']' => out.push_str("[]]"),
            c => out.push(c),
        }
    }
    out
}

struct Builder {
    dialect: Dialect,
    next: usize,
    binds: Vec<Bind>,
}

impl Builder {
    fn new(dialect: Dialect, first_placeholder: usize) -> Self {
        assert!(first_placeholder >= 1, "placeholders start at $1");
        Builder {
            dialect,
            next: first_placeholder,
            binds: Vec::new(),
        }
    }

    fn bind(&mut self, value: Bind) -> String {
        let p = format!("${}", self.next);
        self.next += 1;
        self.binds.push(value);
        p
    }

    fn text(&mut self, s: &str) -> String {
        self.bind(Bind::Text(s.to_string()))
    }

    fn number(&mut self, n: Number) -> String {
        match (n, self.dialect) {
            (Number::Int(i), _) => self.bind(Bind::Int(i)),
            // Postgres types a parameter from its context: beside a bigint column a float would be
            // read as a bigint. The cast keeps `start_time > 1999.5` a float comparison.
            (Number::Float(f), Dialect::Postgres) => format!("CAST({} AS DOUBLE PRECISION)", self.bind(Bind::Float(f))),
            (Number::Float(f), Dialect::Sqlite) => self.bind(Bind::Float(f)),
        }
    }

    /// `col <op> $n` for a string comparison.
    fn str_cmp(&mut self, col: &str, op: StrOp, value: &str) -> String {
        match (op, self.dialect) {
            (StrOp::Eq, _) => format!("{col} = {}", self.text(value)),
            (StrOp::Ne, _) => format!("{col} <> {}", self.text(value)),
            (StrOp::Like, Dialect::Sqlite) => {
                format!("{col} GLOB {}", self.text(&like_to_glob(value)))
            }
            (StrOp::Like, Dialect::Postgres) => format!("{col} LIKE {}", self.text(value)),
            (StrOp::ILike, Dialect::Sqlite) => {
                format!("lower({col}) LIKE lower({})", self.text(value))
            }
            (StrOp::ILike, Dialect::Postgres) => format!("{col} ILIKE {}", self.text(value)),
        }
    }

    fn str_cond(&mut self, col: &str, cond: &StrCond) -> String {
        match cond {
            StrCond::Cmp(op, v) => self.str_cmp(col, *op, v),
            StrCond::In(items) => format!("{col} IN ({})", self.text_list(items)),
            StrCond::NotIn(items) => format!("{col} NOT IN ({})", self.text_list(items)),
        }
    }

    fn text_list(&mut self, items: &[String]) -> String {
        items
            .iter()
            .map(|s| self.text(s))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A params/tags-style condition on table `table` (alias `alias`, columns run_uuid-like
    /// `owner_col`, key, value) correlated with `outer`.
    fn key_cond(
        &mut self,
        table: &str,
        alias: &str,
        correlate: &str,
        key: &str,
        cond: &KeyCond,
    ) -> String {
        let key_p = self.text(key);
        let base =
            format!("SELECT 1 FROM {table} {alias} WHERE {correlate} AND {alias}.key = {key_p}");
        match cond {
            KeyCond::IsNull => format!("NOT EXISTS ({base})"),
            KeyCond::IsNotNull => format!("EXISTS ({base})"),
            KeyCond::Cmp(op, v) => {
                let cmp = self.str_cmp(&format!("{alias}.value"), *op, v);
                format!("EXISTS ({base} AND {cmp})")
            }
        }
    }

    fn finish(self, sql: String) -> SqlFragment {
        SqlFragment {
            sql,
            binds: self.binds,
        }
    }
}

fn run_attribute_column(attr: RunAttribute) -> &'static str {
    match attr {
        RunAttribute::RunId => "r.run_uuid",
        RunAttribute::RunName => "r.run_name",
        RunAttribute::Status => "r.status",
        RunAttribute::UserId => "r.user_id",
        RunAttribute::ArtifactUri => "r.artifact_uri",
        RunAttribute::LifecycleStage => "r.lifecycle_stage",
        RunAttribute::StartTime => "r.start_time",
        RunAttribute::EndTime => "r.end_time",
    }
}

fn run_clause_sql(b: &mut Builder, clause: &RunClause) -> String {
    match clause {
        RunClause::Metric { key, op, value } => {
            let key_p = b.text(key);
            let value_p = b.bind(Bind::Float(*value));
            let cmp = match op {
                // NaN differs from every number.
                NumOp::Ne => format!("(m.is_nan <> 0 OR m.value <> {value_p})"),
                _ => format!("m.is_nan = 0 AND m.value {} {value_p}", op.as_sql()),
            };
            format!(
                "EXISTS (SELECT 1 FROM latest_metric m WHERE m.run_uuid = r.run_uuid \
                 AND m.key = {key_p} AND {cmp})"
            )
        }
        RunClause::Param { key, cond } => {
            b.key_cond("param", "p", "p.run_uuid = r.run_uuid", key, cond)
        }
        RunClause::Tag { key, cond } => {
            b.key_cond("tag", "t", "t.run_uuid = r.run_uuid", key, cond)
        }
        RunClause::StringAttribute { attr, cond } => b.str_cond(run_attribute_column(*attr), cond),
        RunClause::NumericAttribute { attr, op, value } => {
            let p = b.number(*value);
            format!("{} {} {p}", run_attribute_column(*attr), op.as_sql())
        }
        RunClause::Dataset { field, cond } => match field {
            DatasetField::Name | DatasetField::Digest => {
                let col = if *field == DatasetField::Name {
                    "d.name"
                } else {
                    "d.digest"
                };
                let cmp = b.str_cond(col, cond);
                format!(
                    "EXISTS (SELECT 1 FROM run_input ri JOIN dataset d \
                     ON d.dataset_uuid = ri.dataset_uuid WHERE ri.run_uuid = r.run_uuid AND {cmp})"
                )
            }
            // run_input.tags_json is a JSON array of {"key": ..., "value": ...} objects.
            DatasetField::Context => match b.dialect {
                Dialect::Sqlite => {
                    let cmp = b.str_cond("json_extract(jt.value, '$.value')", cond);
                    format!(
                        "EXISTS (SELECT 1 FROM run_input ri, json_each(ri.tags_json) jt \
                         WHERE ri.run_uuid = r.run_uuid \
                         AND json_extract(jt.value, '$.key') = 'mlflow.data.context' AND {cmp})"
                    )
                }
                Dialect::Postgres => {
                    let cmp = b.str_cond("(jt.elem ->> 'value')", cond);
                    format!(
                        "EXISTS (SELECT 1 FROM run_input ri CROSS JOIN LATERAL \
                         jsonb_array_elements(CAST(ri.tags_json AS jsonb)) AS jt(elem) \
                         WHERE ri.run_uuid = r.run_uuid \
                         AND (jt.elem ->> 'key') = 'mlflow.data.context' AND {cmp})"
                    )
                }
            },
        },
    }
}

/// WHERE-clause conditions for `clauses` on `run r`: `""` or `" AND (...) AND (...)"`.
/// Placeholders are numbered from `first_placeholder`.
pub fn run_filter_sql(
    clauses: &[RunClause],
    dialect: Dialect,
    first_placeholder: usize,
) -> SqlFragment {
    let mut b = Builder::new(dialect, first_placeholder);
    let mut sql = String::new();
    for clause in clauses {
        let cond = run_clause_sql(&mut b, clause);
        sql.push_str(" AND (");
        sql.push_str(&cond);
        sql.push(')');
    }
    b.finish(sql)
}

fn direction(ascending: bool) -> &'static str {
    if ascending {
        "ASC"
    } else {
        "DESC"
    }
}

/// ORDER BY list for `orders` on `run r`, ending with MLflow's default order
/// `r.start_time DESC` (unless start_time was ordered on) and the tie-breaker `r.run_uuid`.
/// Placeholders are numbered from `first_placeholder`.
pub fn run_order_sql(
    orders: &[RunOrder],
    dialect: Dialect,
    first_placeholder: usize,
) -> SqlFragment {
    let mut b = Builder::new(dialect, first_placeholder);
    let mut items: Vec<String> = Vec::new();
    let mut has_start_time = false;
    for order in orders {
        let dir = direction(order.ascending);
        match &order.key {
            RunOrderKey::Metric(key) => {
                // 0: a number, 1: NaN, 2: no such metric; always ascending so missing is last.
                let k1 = b.text(key);
                let k2 = b.text(key);
                items.push(format!(
                    "COALESCE((SELECT CASE WHEN m.is_nan <> 0 THEN 1 ELSE 0 END FROM latest_metric m \
                     WHERE m.run_uuid = r.run_uuid AND m.key = {k1}), 2)"
                ));
                items.push(format!(
                    "(SELECT m.value FROM latest_metric m WHERE m.run_uuid = r.run_uuid \
                     AND m.key = {k2}) {dir}"
                ));
            }
            RunOrderKey::Param(key) | RunOrderKey::Tag(key) => {
                let table = if matches!(order.key, RunOrderKey::Param(_)) {
                    "param"
                } else {
                    "tag"
                };
                let k1 = b.text(key);
                let k2 = b.text(key);
                let sub = |k: &str| {
                    format!("(SELECT x.value FROM {table} x WHERE x.run_uuid = r.run_uuid AND x.key = {k})")
                };
                items.push(format!("{} IS NULL", sub(&k1)));
                items.push(format!("{} {dir}", sub(&k2)));
            }
            RunOrderKey::Attribute(attr) => {
                let col = run_attribute_column(*attr);
                if *attr == RunAttribute::StartTime {
                    has_start_time = true;
                }
                if *attr == RunAttribute::EndTime {
                    // The only nullable attribute: unfinished runs go last.
                    items.push(format!("{col} IS NULL"));
                }
                items.push(format!("{col} {dir}"));
            }
        }
    }
    if !has_start_time {
        items.push("r.start_time DESC".to_string());
    }
    items.push("r.run_uuid ASC".to_string());
    b.finish(items.join(", "))
}

fn experiment_attribute_column(attr: ExperimentAttribute) -> &'static str {
    match attr {
        ExperimentAttribute::ExperimentId => "e.experiment_id",
        ExperimentAttribute::Name => "e.name",
        ExperimentAttribute::CreationTime => "e.creation_time",
        ExperimentAttribute::LastUpdateTime => "e.last_update_time",
    }
}

/// WHERE-clause conditions for `clauses` on `experiment e`: `""` or `" AND (...)..."`.
pub fn experiment_filter_sql(
    clauses: &[ExperimentClause],
    dialect: Dialect,
    first_placeholder: usize,
) -> SqlFragment {
    let mut b = Builder::new(dialect, first_placeholder);
    let mut sql = String::new();
    for clause in clauses {
        let cond = match clause {
            ExperimentClause::Name(op, v) => b.str_cmp("e.name", *op, v),
            ExperimentClause::ExperimentId { ids, negated } => {
                let list = ids
                    .iter()
                    .map(|i| b.bind(Bind::Int(*i)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let not = if *negated { "NOT " } else { "" };
                format!("e.experiment_id {not}IN ({list})")
            }
            ExperimentClause::NumericAttribute { attr, op, value } => {
                let p = b.number(*value);
                format!("{} {} {p}", experiment_attribute_column(*attr), op.as_sql())
            }
            ExperimentClause::Tag { key, cond } => b.key_cond(
                "experiment_tag",
                "et",
                "et.experiment_id = e.experiment_id",
                key,
                cond,
            ),
        };
        sql.push_str(" AND (");
        sql.push_str(&cond);
        sql.push(')');
    }
    b.finish(sql)
}

/// ORDER BY list for `orders` on `experiment e`. No orders: MLflow's default
/// `creation_time DESC, experiment_id ASC`; otherwise `experiment_id DESC` is appended as the
/// tie-breaker unless experiment_id was ordered on.
pub fn experiment_order_sql(
    orders: &[ExperimentOrder],
    dialect: Dialect,
    first_placeholder: usize,
) -> SqlFragment {
    let b = Builder::new(dialect, first_placeholder);
    if orders.is_empty() {
        return b.finish("e.creation_time DESC, e.experiment_id ASC".to_string());
    }
    let mut items: Vec<String> = orders
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                experiment_attribute_column(o.attr),
                direction(o.ascending)
            )
        })
        .collect();
    if !orders
        .iter()
        .any(|o| o.attr == ExperimentAttribute::ExperimentId)
    {
        items.push("e.experiment_id DESC".to_string());
    }
    b.finish(items.join(", "))
}

/// WHERE-clause conditions for a registry search: on `registered_model rm` for
/// [`RegistryEntity::RegisteredModel`], on `model_version mv` for model versions.
pub fn registry_filter_sql(clauses: &[RegistryClause], entity: RegistryEntity, dialect: Dialect, first_placeholder: usize) -> SqlFragment {
    let mut b = Builder::new(dialect, first_placeholder);
    let (name_col, tag_table, correlate) = match entity {
        RegistryEntity::RegisteredModel => ("rm.name", "registered_model_tag", "t.name = rm.name"),
        RegistryEntity::ModelVersion => ("mv.name", "model_version_tag", "t.name = mv.name AND t.version = mv.version"),
    };
    let mut sql = String::new();
    for clause in clauses {
        let cond = match clause {
            RegistryClause::Name(op, v) => b.str_cmp(name_col, *op, v),
            RegistryClause::VersionNumber(op, n) => {
                let p = b.number(*n);
                format!("mv.version {} {p}", op.as_sql())
            }
            RegistryClause::RunId(cond) => b.str_cond("mv.run_id", cond),
            RegistryClause::SourcePath(op, v) => b.str_cmp("mv.source", *op, v),
            // `!=` on a registry tag: absent, or present with another value (see RegistryClause::Tag).
            RegistryClause::Tag { key, cond: KeyCond::Cmp(StrOp::Ne, v) } => {
                let key_p = b.text(key);
                let value_p = b.text(v);
                format!("NOT EXISTS (SELECT 1 FROM {tag_table} t WHERE {correlate} AND t.key = {key_p} AND t.value = {value_p})")
            }
            RegistryClause::Tag { key, cond } => b.key_cond(tag_table, "t", correlate, key, cond),
        };
        sql.push_str(" AND (");
        sql.push_str(&cond);
        sql.push(')');
    }
    b.finish(sql)
}

/// ORDER BY list for a registry search. Registered models default to `name ASC`; model versions to
/// `name ASC, version DESC`, MLflow's orders; the natural key is always the final tie-breaker.
pub fn registry_order_sql(orders: &[RegistryOrder], entity: RegistryEntity) -> String {
    let (table, version_tiebreak) = match entity {
        RegistryEntity::RegisteredModel => ("rm", ""),
        RegistryEntity::ModelVersion => ("mv", ", mv.version DESC"),
    };
    if orders.is_empty() {
        return format!("{table}.name ASC{version_tiebreak}");
    }
    let mut items: Vec<String> = orders
        .iter()
        .map(|o| {
            let col = match o.attr {
                RegistryAttribute::Name => "name",
                RegistryAttribute::VersionNumber => "version",
                RegistryAttribute::CreationTimestamp => "creation_timestamp",
                RegistryAttribute::LastUpdatedTimestamp => "last_updated_timestamp",
            };
            format!("{table}.{col} {}", direction(o.ascending))
        })
        .collect();
    items.push(format!("{table}.name ASC{version_tiebreak}"));
    items.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{
        parse_experiment_filter, parse_experiment_order_by, parse_run_filter, parse_run_order_by,
    };
    use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

    const SQLITE_SCHEMA: &str = include_str!("../../../migrations/sqlite/0001_tracking.sql");
    const POSTGRES_SCHEMA: &str = include_str!("../../../migrations/postgres/0001_tracking.sql");

    // ---- pure SQL text -------------------------------------------------------------------

    fn filter(f: &str, dialect: Dialect, first: usize) -> SqlFragment {
        run_filter_sql(&parse_run_filter(f).unwrap(), dialect, first)
    }

    #[test]
    fn empty_filter_is_empty_sql() {
        assert_eq!(filter("", Dialect::Sqlite, 1), SqlFragment::default());
        assert_eq!(
            experiment_filter_sql(&[], Dialect::Postgres, 3),
            SqlFragment::default()
        );
    }

    #[test]
    fn placeholders_are_numbered_from_first() {
        let f = filter(
            "params.a = 'x' AND metrics.m > 1 AND run_id IN ('r1','r2') AND start_time > 5",
            Dialect::Postgres,
            3,
        );
        for p in 3..=9 {
            assert!(
                f.sql.contains(&format!("${p}")),
                "${p} missing in {}",
                f.sql
            );
        }
        assert!(!f.sql.contains("$10") && !f.sql.contains("$2 ") && !f.sql.contains("$1 "));
        assert_eq!(
            f.binds,
            vec![
                Bind::Text("a".into()),
                Bind::Text("x".into()),
                Bind::Text("m".into()),
                Bind::Float(1.0),
                Bind::Text("r1".into()),
                Bind::Text("r2".into()),
                Bind::Int(5),
            ]
        );
        assert!(f.sql.starts_with(" AND ("));
        assert_eq!(f.sql.matches(" AND (").count(), 4, "{}", f.sql);
    }

    #[test]
    fn like_and_ilike_per_dialect() {
        let s = filter("params.p LIKE 'a%_[x]*?'", Dialect::Sqlite, 1);
        assert!(s.sql.contains("p.value GLOB $2"), "{}", s.sql);
        assert_eq!(s.binds[1], Bind::Text("a*?[[]x[]][*][?]".into()));
        let p = filter("params.p LIKE 'a%_[x]*?'", Dialect::Postgres, 1);
        assert!(p.sql.contains("p.value LIKE $2"), "{}", p.sql);
        assert_eq!(p.binds[1], Bind::Text("a%_[x]*?".into()));
        let s = filter("tags.t ILIKE 'A%'", Dialect::Sqlite, 1);
        assert!(s.sql.contains("lower(t.value) LIKE lower($2)"), "{}", s.sql);
        let p = filter("tags.t ILIKE 'A%'", Dialect::Postgres, 1);
        assert!(p.sql.contains("t.value ILIKE $2"), "{}", p.sql);
        assert_eq!(like_to_glob("100%"), "100*");
        assert_eq!(like_to_glob("plain"), "plain");
    }

    #[test]
    fn postgres_dataset_context_uses_jsonb() {
        let p = filter("datasets.context = 'training'", Dialect::Postgres, 1);
        assert!(p.sql.contains("jsonb_array_elements"), "{}", p.sql);
        assert!(p.sql.contains("(jt.elem ->> 'value') = $1"), "{}", p.sql);
        let s = filter("datasets.context = 'training'", Dialect::Sqlite, 1);
        assert!(s.sql.contains("json_each(ri.tags_json)"), "{}", s.sql);
    }

    #[test]
    fn order_sql_text() {
        let o = run_order_sql(&[], Dialect::Sqlite, 1);
        assert_eq!(o.sql, "r.start_time DESC, r.run_uuid ASC");
        assert!(o.binds.is_empty());
        let orders =
            parse_run_order_by(&["metrics.m DESC".to_string(), "start_time".to_string()]).unwrap();
        let o = run_order_sql(&orders, Dialect::Postgres, 4);
        assert!(o.sql.contains("m.key = $4), 2)"), "{}", o.sql);
        assert!(o.sql.contains("m.key = $5) DESC"), "{}", o.sql);
        assert!(
            o.sql.ends_with("r.start_time ASC, r.run_uuid ASC"),
            "{}",
            o.sql
        );
        assert_eq!(
            o.binds,
            vec![Bind::Text("m".into()), Bind::Text("m".into())]
        );
        let e = experiment_order_sql(&[], Dialect::Sqlite, 1);
        assert_eq!(e.sql, "e.creation_time DESC, e.experiment_id ASC");
        let e = experiment_order_sql(
            &parse_experiment_order_by(&["name".to_string()]).unwrap(),
            Dialect::Sqlite,
            1,
        );
        assert_eq!(e.sql, "e.name ASC, e.experiment_id DESC");
        let e = experiment_order_sql(
            &parse_experiment_order_by(&["experiment_id".to_string(), "name DESC".to_string()])
                .unwrap(),
            Dialect::Sqlite,
            1,
        );
        assert_eq!(e.sql, "e.experiment_id ASC, e.name DESC");
    }

    // ---- executed against a database ------------------------------------------------------

    /// Experiment 1 holds r1..r4, experiment 2 holds r5 (a near-copy of r1, never returned).
    ///
    /// | run | name      | user  | status   | start | end  | stage   |
    /// |-----|-----------|-------|----------|-------|------|---------|
    /// | r1  | alpha     | alice | FINISHED | 1000  | 2000 | active  |
    /// | r2  | Beta      | bob   | RUNNING  | 2000  | NULL | active  |
    /// | r3  | gamma-run | alice | FAILED   | 3000  | 3500 | active  |
    /// | r4  | delta     | carol | FINISHED | 3000  | 4000 | deleted |
    ///
    /// Default order (start_time DESC, run_uuid): r3, r4, r2, r1.
    /// Experiments: 0 Default (created 0, updated 0), 1 exp-one (100, 500), 2 Exp-Two (200, 200),
    /// 3 third_exp (200, 900).
    const FIXTURE: &str = r#"
        insert into experiment (experiment_id, name, artifact_location, creation_time, last_update_time) values
            (1, 'exp-one', 'a/1', 100, 500),
            (2, 'Exp-Two', 'a/2', 200, 200),
            (3, 'third_exp', 'a/3', 200, 900);
        insert into experiment_tag (experiment_id, key, value) values
            (1, 'team', 'ml'), (2, 'team', 'ML'), (2, 'note', 'x'), (3, 'note', 'y');
        insert into run (run_uuid, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri, lifecycle_stage) values
            ('r1', 1, 'alpha', 'alice', 'FINISHED', 1000, 2000, 's3://b/1/r1', 'active'),
            ('r2', 1, 'Beta', 'bob', 'RUNNING', 2000, NULL, 's3://b/1/r2', 'active'),
            ('r3', 1, 'gamma-run', 'alice', 'FAILED', 3000, 3500, 'file:///x/r3', 'active'),
            ('r4', 1, 'delta', 'carol', 'FINISHED', 3000, 4000, 's3://b/1/r4', 'deleted'),
            ('r5', 2, 'alpha', 'alice', 'FINISHED', 1000, 2000, 's3://b/2/r5', 'active');
        insert into param (run_uuid, key, value) values
            ('r1', 'lr', '0.01'), ('r1', 'model', 'CNN'), ('r1', 'x y', 'space'),
            ('r2', 'lr', '0.1'), ('r2', 'model', 'cnn'),
            ('r3', 'model', 'RNN_v2'), ('r3', 'path', 'a*b?[c]'),
            ('r4', 'lr', '0.01'),
            ('r5', 'lr', '0.01'), ('r5', 'model', 'CNN');
        insert into tag (run_uuid, key, value) values
            ('r1', 'mlflow.runName', 'alpha'), ('r1', 'env', 'prod'),
            ('r2', 'env', 'Prod'),
            ('r3', 'env', 'dev'), ('r3', 'team', 'ml'),
            ('r5', 'env', 'prod');
        insert into latest_metric (run_uuid, key, value, is_nan, timestamp, step) values
            ('r1', 'acc', 0.9, 0, 1, 0), ('r1', 'loss', 0.5, 0, 1, 0), ('r1', 'a.b', 1, 0, 1, 0),
            ('r2', 'acc', 0, 1, 1, 0), ('r2', 'loss', 0.3, 0, 1, 0),
            ('r3', 'acc', 0.7, 0, 1, 0), ('r3', 'loss', -0.0015, 0, 1, 0),
            ('r4', 'acc', 0.95, 0, 1, 0), ('r4', 'big', 1.7976931348623157e308, 0, 1, 0),
            ('r5', 'acc', 0.9, 0, 1, 0), ('r5', 'loss', 0.5, 0, 1, 0);
        insert into dataset (dataset_uuid, experiment_id, name, digest) values
            ('d1', 1, 'train_ds', 'abc123'), ('d2', 1, 'eval_ds', 'def456'), ('d3', 2, 'train_ds', 'abc123');
        insert into run_input (run_uuid, dataset_uuid, tags_json) values
            ('r1', 'd1', '[{"key":"mlflow.data.context","value":"training"}]'),
            ('r2', 'd2', '[{"key":"other","value":"training"},{"key":"mlflow.data.context","value":"eval"}]'),
            ('r3', 'd1', '[]'),
            ('r5', 'd3', '[{"key":"mlflow.data.context","value":"training"}]');
    "#;

    /// (filter, order_by, expected run ids in experiment 1)
    type RunCase = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    );

    const METRIC_CASES: &[RunCase] = &[
        ("", &[], &["r3", "r4", "r2", "r1"]),
        ("metrics.acc > 0.8", &[], &["r4", "r1"]),
        ("metric.acc >= 0.9", &[], &["r4", "r1"]),
        ("metrics.acc < 1", &[], &["r3", "r4", "r1"]),
        ("metrics.acc <= 0.7", &[], &["r3"]),
        ("metrics.acc = 0.7", &[], &["r3"]),
        // NaN is stored as value 0 with is_nan = 1: it must not equal 0 ...
        ("metrics.acc = 0", &[], &[]),
        ("metrics.acc < 0.5", &[], &[]),
        // ... but it differs from everything.
        ("metrics.acc != 0.9", &[], &["r3", "r4", "r2"]),
        ("metrics.acc != 0", &[], &["r3", "r4", "r2", "r1"]),
        // != needs the metric to be present.
        ("metrics.loss != 100", &[], &["r3", "r2", "r1"]),
        ("metrics.loss < 0", &[], &["r3"]),
        ("metrics.loss >= -1.5e-3", &[], &["r3", "r2", "r1"]),
        ("metrics.loss > -1.5e-3", &[], &["r2", "r1"]),
        ("metrics.`a.b` = 1", &[], &["r1"]),
        ("metrics.\"a.b\" = 1.0", &[], &["r1"]),
        ("metrics.a.b = 1", &[], &["r1"]),
        ("metrics.missing > -1e300", &[], &[]),
        ("metrics.big > 1e308", &[], &["r4"]),
        ("metrics.big < 1e999", &[], &["r4"]),
        ("metrics.acc > 0.5 AND metrics.loss < 0.4", &[], &["r3"]),
    ];

    const PARAM_TAG_CASES: &[RunCase] = &[
        ("params.lr = '0.01'", &[], &["r4", "r1"]),
        ("param.lr != '0.01'", &[], &["r2"]),
        ("parameter.model = 'cnn'", &[], &["r2"]),
        // LIKE is case-sensitive.
        ("params.model LIKE 'CNN'", &[], &["r1"]),
        ("params.model LIKE 'cnn'", &[], &["r2"]),
        ("params.model LIKE '%NN%'", &[], &["r3", "r1"]),
        ("params.model LIKE '_NN'", &[], &["r1"]),
        ("params.model LIKE 'RNN_v_'", &[], &["r3"]),
        ("params.model LIKE 'RNN_v'", &[], &[]),
        // GLOB metacharacters in the pattern are literal.
        ("params.path LIKE 'a*b?[c]'", &[], &["r3"]),
        ("params.path LIKE 'a_b_[c%'", &[], &["r3"]),
        ("params.path LIKE 'a[*]b%'", &[], &[]),
        ("params.path = 'a*b?[c]'", &[], &["r3"]),
        ("params.model ILIKE 'cnn'", &[], &["r2", "r1"]),
        ("params.model ILIKE 'rnn%'", &[], &["r3"]),
        ("params.model ILIKE '%N'", &[], &["r2", "r1"]),
        ("params.\"x y\" = 'space'", &[], &["r1"]),
        ("params.`x y` LIKE 's%'", &[], &["r1"]),
        ("params.lr IS NULL", &[], &["r3"]),
        ("params.lr IS NOT NULL", &[], &["r4", "r2", "r1"]),
        ("params.nothing IS NULL", &[], &["r3", "r4", "r2", "r1"]),
        ("params.nothing IS NOT NULL", &[], &[]),
        ("tags.env = 'prod'", &[], &["r1"]),
        ("tag.env != 'prod'", &[], &["r3", "r2"]),
        ("tags.env LIKE 'P%'", &[], &["r2"]),
        ("tags.env LIKE '%d'", &[], &["r2", "r1"]),
        ("tags.env ILIKE 'PROD'", &[], &["r2", "r1"]),
        ("tags.env IS NULL", &[], &["r4"]),
        ("tags.env IS NOT NULL", &[], &["r3", "r2", "r1"]),
        ("tags.`mlflow.runName` = 'alpha'", &[], &["r1"]),
        ("tags.mlflow.runName = 'alpha'", &[], &["r1"]),
        ("tags.team = 'ml' AND params.model LIKE 'R%'", &[], &["r3"]),
        ("params.lr = '0.01' AND tags.env IS NULL", &[], &["r4"]),
        ("params.p = 'it''s'", &[], &[]),
    ];

    const ATTRIBUTE_CASES: &[RunCase] = &[
        ("attributes.run_id IN ('r1', 'r3')", &[], &["r3", "r1"]),
        ("run_id IN ('r5')", &[], &[]),
        ("run_id NOT IN ('r1','r3')", &[], &["r4", "r2"]),
        ("attr.run_id = 'r2'", &[], &["r2"]),
        ("run.run_id != 'r2'", &[], &["r3", "r4", "r1"]),
        ("run_name = 'Beta'", &[], &["r2"]),
        ("run_name = 'beta'", &[], &[]),
        ("`Run name` LIKE '%a'", &[], &["r4", "r2", "r1"]),
        ("attributes.run_name ILIKE 'BETA'", &[], &["r2"]),
        ("attributes.run_name LIKE 'B%'", &[], &["r2"]),
        ("status = 'FINISHED'", &[], &["r4", "r1"]),
        ("status != 'FINISHED'", &[], &["r3", "r2"]),
        ("user_id = 'alice'", &[], &["r3", "r1"]),
        ("user_id ILIKE 'A%'", &[], &["r3", "r1"]),
        ("artifact_uri LIKE 's3://%'", &[], &["r4", "r2", "r1"]),
        ("lifecycle_stage = 'deleted'", &[], &["r4"]),
        ("start_time > 1500", &[], &["r3", "r4", "r2"]),
        ("attributes.start_time = 2000", &[], &["r2"]),
        ("start_time > 1999.5", &[], &["r3", "r4", "r2"]),
        ("start_time < 2000.5", &[], &["r2", "r1"]),
        ("created >= 3000", &[], &["r3", "r4"]),
        ("end_time < 3600", &[], &["r3", "r1"]),
        // A run without end_time matches no end_time comparison.
        ("end_time != 0", &[], &["r3", "r4", "r1"]),
        (
            "start_time >= 1000 AND end_time <= 4000 AND status = 'FINISHED'",
            &[],
            &["r4", "r1"],
        ),
    ];

    const DATASET_CASES: &[RunCase] = &[
        ("datasets.name = 'train_ds'", &[], &["r3", "r1"]),
        ("datasets.name != 'train_ds'", &[], &["r2"]),
        ("dataset.digest IN ('def456')", &[], &["r2"]),
        ("datasets.digest NOT IN ('def456')", &[], &["r3", "r1"]),
        ("datasets.name LIKE '%_DS'", &[], &[]),
        ("datasets.name ILIKE '%_DS'", &[], &["r3", "r2", "r1"]),
        ("datasets.context = 'training'", &[], &["r1"]),
        ("datasets.context LIKE 'e%'", &[], &["r2"]),
        (
            "datasets.context IN ('training', 'eval')",
            &[],
            &["r2", "r1"],
        ),
        (
            "datasets.name = 'train_ds' AND datasets.context = 'training'",
            &[],
            &["r1"],
        ),
    ];

    /// String orderings assume binary collation (SQLite; Postgres with the C collation).
    const ORDER_CASES: &[RunCase] = &[
        ("", &[], &["r3", "r4", "r2", "r1"]),
        // NaN (r2) after numbers, in both directions.
        ("", &["metrics.acc DESC"], &["r4", "r1", "r3", "r2"]),
        ("", &["metrics.acc ASC"], &["r3", "r1", "r4", "r2"]),
        // Missing (r4) last in both directions.
        ("", &["metrics.loss"], &["r3", "r2", "r1", "r4"]),
        ("", &["metrics.loss DESC"], &["r1", "r2", "r3", "r4"]),
        // Ties fall back to start_time DESC, then run_uuid.
        ("", &["params.lr ASC"], &["r4", "r1", "r2", "r3"]),
        ("", &["params.lr DESC"], &["r2", "r4", "r1", "r3"]),
        ("", &["tags.env"], &["r2", "r3", "r1", "r4"]),
        ("", &["tags.env DESC"], &["r1", "r3", "r2", "r4"]),
        (
            "",
            &["attributes.start_time ASC"],
            &["r1", "r2", "r3", "r4"],
        ),
        ("", &["created DESC"], &["r3", "r4", "r2", "r1"]),
        ("", &["end_time DESC"], &["r4", "r3", "r1", "r2"]),
        ("", &["end_time"], &["r1", "r3", "r4", "r2"]),
        ("", &["run_name"], &["r2", "r1", "r4", "r3"]),
        ("", &["`Run name` DESC"], &["r3", "r4", "r1", "r2"]),
        ("", &["status", "run_id DESC"], &["r3", "r4", "r1", "r2"]),
        (
            "",
            &["params.lr DESC", "metrics.acc ASC"],
            &["r2", "r1", "r4", "r3"],
        ),
        (
            "",
            &["user_id DESC", "start_time"],
            &["r4", "r2", "r1", "r3"],
        ),
        // Filter and order placeholders numbered consecutively.
        ("params.lr = '0.01'", &["metrics.acc DESC"], &["r4", "r1"]),
        (
            "tags.env IS NOT NULL AND metrics.loss > -1",
            &["tags.env", "metrics.loss DESC"],
            &["r2", "r3", "r1"],
        ),
    ];

    /// (filter, order_by, expected experiment ids among the active ones)
    type ExperimentCase = (&'static str, &'static [&'static str], &'static [i64]);

    const EXPERIMENT_CASES: &[ExperimentCase] = &[
        ("", &[], &[2, 3, 1, 0]),
        ("name = 'exp-one'", &[], &[1]),
        ("name != 'exp-one'", &[], &[2, 3, 0]),
        ("name LIKE 'exp%'", &[], &[1]),
        ("name ILIKE 'exp%'", &[], &[2, 1]),
        ("name LIKE '%_exp'", &[], &[3]),
        ("attribute.name LIKE '%t'", &[], &[0]),
        ("creation_time >= 200", &[], &[2, 3]),
        ("creation_time > 0 AND last_update_time < 600", &[], &[2, 1]),
        ("last_update_time = 900", &[], &[3]),
        ("last_update_time > 899.5", &[], &[3]),
        ("experiment_id = '2'", &[], &[2]),
        ("experiment_id != 2", &[], &[3, 1, 0]),
        ("experiment_id IN ('0', '3')", &[], &[3, 0]),
        ("experiment_id NOT IN ('0', '3')", &[], &[2, 1]),
        ("tags.team = 'ml'", &[], &[1]),
        ("tags.team LIKE 'M%'", &[], &[2]),
        ("tags.team ILIKE 'ml'", &[], &[2, 1]),
        ("tags.team != 'ml'", &[], &[2]),
        ("tags.team IS NULL", &[], &[3, 0]),
        ("tags.note IS NOT NULL AND tags.team IS NOT NULL", &[], &[2]),
        ("", &["name"], &[0, 2, 1, 3]),
        ("", &["name DESC"], &[3, 1, 2, 0]),
        ("", &["creation_time"], &[0, 1, 3, 2]),
        ("", &["creation_time", "experiment_id ASC"], &[0, 1, 2, 3]),
        ("", &["last_update_time DESC"], &[3, 1, 2, 0]),
        ("", &["experiment_id"], &[0, 1, 2, 3]),
    ];

    /// A database the cases run against: SQLite directly, or either backend through `any`.
    enum Db {
        Sqlite(SqlitePool),
        Any(sqlx::AnyPool, Dialect),
    }

    impl Db {
        fn dialect(&self) -> Dialect {
            match self {
                Db::Sqlite(_) => Dialect::Sqlite,
                Db::Any(_, d) => *d,
            }
        }

        async fn strings(&self, sql: &str, binds: &[Bind]) -> Result<Vec<String>, sqlx::Error> {
            let rows: Vec<(String,)> = match self {
                Db::Sqlite(pool) => {
                    bind_all_as(sqlx::query_as(sql), binds)
                        .fetch_all(pool)
                        .await?
                }
                Db::Any(pool, _) => {
                    bind_all_as(sqlx::query_as(sql), binds)
                        .fetch_all(pool)
                        .await?
                }
            };
            Ok(rows.into_iter().map(|r| r.0).collect())
        }

        async fn ints(&self, sql: &str, binds: &[Bind]) -> Result<Vec<i64>, sqlx::Error> {
            let rows: Vec<(i64,)> = match self {
                Db::Sqlite(pool) => {
                    bind_all_as(sqlx::query_as(sql), binds)
                        .fetch_all(pool)
                        .await?
                }
                Db::Any(pool, _) => {
                    bind_all_as(sqlx::query_as(sql), binds)
                        .fetch_all(pool)
                        .await?
                }
            };
            Ok(rows.into_iter().map(|r| r.0).collect())
        }
    }

    async fn sqlite_db() -> Db {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql(SQLITE_SCHEMA).execute(&pool).await.unwrap();
        sqlx::raw_sql(FIXTURE).execute(&pool).await.unwrap();
        Db::Sqlite(pool)
    }

    async fn run_ids(db: &Db, filter: &str, order_by: &[&str]) -> Vec<String> {
        let clauses = parse_run_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        let order_by: Vec<String> = order_by.iter().map(|s| s.to_string()).collect();
        let orders = parse_run_order_by(&order_by).unwrap_or_else(|e| panic!("{order_by:?}: {e}"));
        let f = run_filter_sql(&clauses, db.dialect(), 2);
        let o = run_order_sql(&orders, db.dialect(), 2 + f.binds.len());
        let sql = format!(
            "select r.run_uuid from run r where r.experiment_id = $1{} order by {}",
            f.sql, o.sql
        );
        let binds: Vec<Bind> = std::iter::once(Bind::Int(1))
            .chain(f.binds)
            .chain(o.binds)
            .collect();
        db.strings(&sql, &binds)
            .await
            .unwrap_or_else(|e| panic!("{filter} / {order_by:?}: {e}\n{sql}"))
    }

    async fn experiment_ids(db: &Db, filter: &str, order_by: &[&str]) -> Vec<i64> {
        let clauses = parse_experiment_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        let order_by: Vec<String> = order_by.iter().map(|s| s.to_string()).collect();
        let orders = parse_experiment_order_by(&order_by).unwrap();
        let f = experiment_filter_sql(&clauses, db.dialect(), 2);
        let o = experiment_order_sql(&orders, db.dialect(), 2 + f.binds.len());
        let sql = format!(
            "select e.experiment_id from experiment e where e.lifecycle_stage = $1{} order by {}",
            f.sql, o.sql
        );
        let binds: Vec<Bind> = std::iter::once(Bind::Text("active".into()))
            .chain(f.binds)
            .chain(o.binds)
            .collect();
        db.ints(&sql, &binds)
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}\n{sql}"))
    }

    async fn check_runs(db: &Db, cases: &[RunCase]) -> Vec<String> {
        let mut failures = Vec::new();
        for (filter, order_by, expected) in cases {
            let got = run_ids(db, filter, order_by).await;
            if got != *expected {
                failures.push(format!(
                    "{filter} / {order_by:?}: expected {expected:?}, got {got:?}"
                ));
            }
        }
        failures
    }

    async fn check_experiments(db: &Db, cases: &[ExperimentCase]) -> Vec<String> {
        let mut failures = Vec::new();
        for (filter, order_by, expected) in cases {
            let got = experiment_ids(db, filter, order_by).await;
            if got != *expected {
                failures.push(format!(
                    "{filter} / {order_by:?}: expected {expected:?}, got {got:?}"
                ));
            }
        }
        failures
    }

    async fn check_all(db: &Db) -> Vec<String> {
        let mut failures = Vec::new();
        for cases in [
            METRIC_CASES,
            PARAM_TAG_CASES,
            ATTRIBUTE_CASES,
            DATASET_CASES,
            ORDER_CASES,
        ] {
            failures.extend(check_runs(db, cases).await);
        }
        failures.extend(check_experiments(db, EXPERIMENT_CASES).await);
        failures
    }

    fn assert_none(failures: Vec<String>) {
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[tokio::test]
    async fn sqlite_metric_filters() {
        assert_none(check_runs(&sqlite_db().await, METRIC_CASES).await);
    }

    #[tokio::test]
    async fn sqlite_param_and_tag_filters() {
        assert_none(check_runs(&sqlite_db().await, PARAM_TAG_CASES).await);
    }

    #[tokio::test]
    async fn sqlite_attribute_filters() {
        assert_none(check_runs(&sqlite_db().await, ATTRIBUTE_CASES).await);
    }

    #[tokio::test]
    async fn sqlite_dataset_filters() {
        assert_none(check_runs(&sqlite_db().await, DATASET_CASES).await);
    }

    #[tokio::test]
    async fn sqlite_run_ordering() {
        assert_none(check_runs(&sqlite_db().await, ORDER_CASES).await);
    }

    #[tokio::test]
    async fn sqlite_experiment_filters_and_ordering() {
        assert_none(check_experiments(&sqlite_db().await, EXPERIMENT_CASES).await);
    }

    /// The production path: sqlx's `any` driver over SQLite, with `bind_all` / `bind_all_as`.
    #[tokio::test]
    async fn any_driver_over_sqlite() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql(SQLITE_SCHEMA).execute(&pool).await.unwrap();
        sqlx::raw_sql(FIXTURE).execute(&pool).await.unwrap();
        let db = Db::Any(pool, Dialect::Sqlite);
        assert_none(check_all(&db).await);

        // bind_all with a plain query.
        let Db::Any(pool, _) = &db else {
            unreachable!()
        };
        let f = run_filter_sql(
            &parse_run_filter("params.model ILIKE 'CNN'").unwrap(),
            Dialect::Sqlite,
            2,
        );
        let sql = format!(
            "select r.run_uuid from run r where r.experiment_id = $1{} order by r.run_uuid",
            f.sql
        );
        let binds: Vec<Bind> = std::iter::once(Bind::Int(1)).chain(f.binds).collect();
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(pool)
            .await
            .unwrap();
        use sqlx::Row;
        let ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        assert_eq!(ids, vec!["r1", "r2"]);
    }

    /// The Postgres dialect, run only when `TRACKER_TEST_POSTGRES_URL` names a database
    /// (with the C collation, for the string orderings). It works in a throwaway schema.
    #[tokio::test]
    async fn postgres_dialect() {
        let Ok(url) = std::env::var("TRACKER_TEST_POSTGRES_URL") else {
            eprintln!("TRACKER_TEST_POSTGRES_URL unset: skipping the Postgres search tests");
            return;
        };
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let schema = format!(
            "search_sql_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        sqlx::raw_sql(&format!(
            "create schema {schema}; set search_path to {schema};"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::raw_sql(POSTGRES_SCHEMA).execute(&pool).await.unwrap();
        sqlx::raw_sql(FIXTURE).execute(&pool).await.unwrap();
        let db = Db::Any(pool, Dialect::Postgres);
        let failures = check_all(&db).await;
        let Db::Any(pool, _) = &db else {
            unreachable!()
        };
        sqlx::raw_sql(&format!("drop schema {schema} cascade"))
            .execute(pool)
            .await
            .unwrap();
        assert_none(failures);
    }
}
