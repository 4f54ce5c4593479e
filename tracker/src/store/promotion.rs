//! Promotion gates in the store: the rules of a registered model, and `promote`, which checks them
//! and moves the alias in one transaction, so the version holding the alias cannot change between
//! the check and the move, and a refused promotion changes nothing.

use api::mlflow::ModelVersion;
use sqlx::Row;

use super::audit::{record, Action, Change, ChangeBy};
use super::registry::{alias_holder, ensure_model, ensure_version, parse_version, put_alias};
use super::{now_ms, Dialect, Error, Result, Store};
use crate::promotion::{judge_no_regression, judge_threshold, parse_rules, Check, Field, Rule};

/// What `promote` did.
#[derive(Debug)]
pub enum Promotion {
    /// Every rule passed; the alias now points at the version.
    Promoted {
        /// The version, as `model-versions/get` shows it.
        model_version: Box<ModelVersion>,
        /// The version that held the alias before, if any.
        previous_version: Option<i64>,
        /// Every rule with its outcome.
        checks: Vec<Check>,
    },
    /// A rule failed; nothing changed.
    Refused {
        /// The first rule that failed.
        failed: Check,
        /// The rules checked up to and including it.
        checks: Vec<Check>,
    },
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    /// Replaces the promotion rules of a registered model; every rule must parse.
    pub async fn set_promotion_rules(&self, name: &str, rules: &[String]) -> Result<Vec<String>> {
        parse_rules(rules).map_err(Error::Invalid)?;
        let rules: Vec<String> = rules.iter().map(|r| r.trim().to_owned()).collect();
        let text = serde_json::to_string(&rules).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut tx = self.write.begin().await?;
        ensure_model(&mut tx, name).await?;
        sqlx::query(
            "insert into registered_model_promotion_rules (name, rules, updated_at) values ($1, $2, $3) \
             on conflict (name) do update set rules = excluded.rules, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(&text)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rules)
    }

    /// The promotion rules of a registered model (empty when none are set).
    pub async fn get_promotion_rules(&self, name: &str) -> Result<Vec<String>> {
        let mut tx = self.read.begin().await?;
        ensure_model(&mut tx, name).await?;
        let rules = rules_in(&mut tx, name).await?;
        tx.commit().await?;
        Ok(rules)
    }

    /// Checks the model's rules against `version` and, when all pass, points `alias` at it.
    pub async fn promote(&self, name: &str, version: &str, alias: &str, by: &ChangeBy) -> Result<Promotion> {
        let number = parse_version(name, version)?;
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            // Serialises promotions of one model; SQLite's single writer already does.
            sqlx::query("select 1 from registered_model where name = $1 for update").bind(name).fetch_optional(&mut *tx).await?;
        }
        ensure_version(&mut tx, name, number, version).await?;
        let texts = rules_in(&mut tx, name).await?;
        let rules = parse_rules(&texts).map_err(Error::Invalid)?;
        let candidate_run = source_run(&mut tx, name, number).await?;
        let holder = alias_holder(&mut tx, name, alias).await?;
        let mut checks = Vec::with_capacity(rules.len());
        for (text, rule) in texts.iter().zip(&rules) {
            let (passed, detail) = match rule {
                Rule::Threshold { field, op, value } => {
                    let found = match &candidate_run {
                        Some(run) => field_value(&mut tx, run, field).await?,
                        None => None,
                    };
                    let (passed, detail) = judge_threshold(field, *op, *value, found);
                    (passed, if candidate_run.is_none() { format!("{detail} (version {number} has no source run)") } else { detail })
                }
                Rule::NoRegression { metric, lower_is_better } => {
                    let field = Field::Metric(metric.clone());
                    let candidate = match &candidate_run {
                        Some(run) => field_value(&mut tx, run, &field).await?,
                        None => None,
                    };
                    let base = match holder {
                        Some(v) => {
                            let value = match source_run(&mut tx, name, v).await? {
                                Some(run) => field_value(&mut tx, &run, &field).await?,
                                None => None,
                            };
                            Some((v, value))
                        }
                        None => None,
                    };
                    judge_no_regression(metric, *lower_is_better, candidate, base)
                }
            };
            let check = Check { rule: text.clone(), passed, detail };
            checks.push(check.clone());
            if !passed {
                tx.rollback().await?;
                return Ok(Promotion::Refused { failed: check, checks });
            }
        }
        put_alias(&mut tx, name, alias, number).await?;
        record(&mut tx, name, Action::Promote, Change { alias, from_version: holder, to_version: Some(number), ..Default::default() }, by).await?;
        tx.commit().await?;
        let model_version = Box::new(self.get_model_version(name, version).await?);
        Ok(Promotion::Promoted { model_version, previous_version: holder, checks })
    }
}

async fn rules_in(tx: &mut Tx<'_>, name: &str) -> Result<Vec<String>> {
    let row = sqlx::query("select rules from registered_model_promotion_rules where name = $1").bind(name).fetch_optional(&mut **tx).await?;
    match row {
        None => Ok(Vec::new()),
        Some(row) => {
            let text: String = row.try_get(0)?;
            serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("stored promotion rules of '{name}' do not decode: {e}")))
        }
    }
}

/// The source run of a version, when it has one.
async fn source_run(tx: &mut Tx<'_>, name: &str, version: i64) -> Result<Option<String>> {
    let row = sqlx::query("select run_id from model_version where name = $1 and version = $2").bind(name).bind(version).fetch_optional(&mut **tx).await?;
    let run: Option<String> = match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    };
    Ok(run.filter(|r| !r.is_empty()))
}

/// The latest value of a metric (NaN kept), or a param read as a number; `None` when missing or
/// not a number.
async fn field_value(tx: &mut Tx<'_>, run: &str, field: &Field) -> Result<Option<f64>> {
    match field {
        Field::Metric(key) => {
            let row = sqlx::query("select value, is_nan from latest_metric where run_uuid = $1 and key = $2").bind(run).bind(key).fetch_optional(&mut **tx).await?;
            let Some(row) = row else { return Ok(None) };
            let is_nan: i64 = row.try_get(1)?;
            Ok(Some(if is_nan != 0 { f64::NAN } else { row.try_get(0)? }))
        }
        Field::Param(key) => {
            let row = sqlx::query("select value from param where run_uuid = $1 and key = $2").bind(run).bind(key).fetch_optional(&mut **tx).await?;
            let Some(row) = row else { return Ok(None) };
            let value: String = row.try_get(0)?;
            Ok(value.trim().parse::<f64>().ok())
        }
    }
}
