//! Runs and everything logged to them: params, tags, metrics (history and latest), inputs, outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use api::mlflow::{Dataset, DatasetInput, Metric, ModelOutput, Run, RunData, RunInfo, RunInputs, RunOutputs, Tag};
use base64::Engine;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::experiments::{parse_experiment_id, ViewType};
use super::search_sql::{self, bind_all, Bind, SqlFragment};
use super::{decode_offset_token, now_ms, placeholders, Dialect, Error, Result, Store};
use crate::search::{RunClause, RunOrder};

/// MLflow stores +-inf as the largest finite doubles; clients and filters rely on that.
pub const MAX_DOUBLE: f64 = f64::MAX;

/// A metric point ready to store: value finite or NaN, timestamp and step resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMetric {
    /// Metric name.
    pub key: String,
    /// Value; infinities are clamped to +-f64::MAX before storing.
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Step.
    pub step: i64,
    /// Optional dataset name.
    pub dataset_name: Option<String>,
    /// Optional dataset digest.
    pub dataset_digest: Option<String>,
    /// Optional logged model.
    pub model_id: Option<String>,
}

/// Fields of a new run.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Owning experiment ("0" when absent).
    pub experiment_id: String,
    /// Who starts it.
    pub user_id: String,
    /// Display name; generated when absent.
    pub run_name: Option<String>,
    /// Start in ms; now when absent.
    pub start_time: Option<i64>,
    /// Initial tags.
    pub tags: Vec<(String, String)>,
}

/// One span of a downsampled metric history: the points whose step (or timestamp) falls in
/// `[origin + bucket * width, origin + (bucket + 1) * width)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvelopeBucket {
    /// `(x - origin) / width`.
    pub bucket: i64,
    /// First and last step (or timestamp) in the span.
    pub x_min: i64,
    pub x_max: i64,
    /// Lowest and highest value in the span.
    pub min: f64,
    pub max: f64,
}

/// Points per block of [`MetricBlock`]; migration 0009 numbers the points it found with the same.
pub const POINTS_PER_BLOCK: i64 = 256;

/// The summary of [`POINTS_PER_BLOCK`] consecutive points of one metric in logging order (the
/// last block of a metric may hold fewer), kept as points are logged, so that a chart of a
/// million-point history reads 3,907 blocks instead of the points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricBlock {
    /// Points in the block, NaN included.
    pub points: i64,
    /// Points that are not NaN: `values` means something only when this is above 0.
    pub value_points: i64,
    /// Lowest and highest step.
    pub steps: (i64, i64),
    /// Earliest and latest timestamp.
    pub timestamps: (i64, i64),
    /// Lowest and highest value, NaN left out.
    pub values: (f64, f64),
}

impl MetricBlock {
    /// A block of no points: every fold starts here.
    const EMPTY: MetricBlock =
        MetricBlock { points: 0, value_points: 0, steps: (i64::MAX, i64::MIN), timestamps: (i64::MAX, i64::MIN), values: (MAX_DOUBLE, -MAX_DOUBLE) };

    fn add(&mut self, m: &NewMetric) {
        self.points += 1;
        self.steps = (self.steps.0.min(m.step), self.steps.1.max(m.step));
        self.timestamps = (self.timestamps.0.min(m.timestamp), self.timestamps.1.max(m.timestamp));
        let (value, is_nan) = stored_value(m.value);
        if is_nan == 0 {
            self.value_points += 1;
            self.values = (self.values.0.min(value), self.values.1.max(value));
        }
    }
}

/// One page of runs.
#[derive(Debug)]
pub struct RunPage {
    /// The runs of the page, fully hydrated.
    pub runs: Vec<Run>,
    /// Token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// One page of a metric's history.
#[derive(Debug)]
pub struct HistoryPage {
    /// Points in (timestamp, step) order.
    pub metrics: Vec<Metric>,
    /// Token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

const RUN_COLUMNS: &str = "r.run_uuid, r.experiment_id, r.run_name, r.user_id, r.status, r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage";

/// The columns of [`RUN_COLUMNS`] as read.
type RunInfoRow = (String, i64, String, String, String, i64, Option<i64>, String, String);

fn run_info_from_row((id, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri, lifecycle_stage): RunInfoRow) -> RunInfo {
    RunInfo {
        run_uuid: id.clone(),
        run_id: id,
        experiment_id: experiment_id.to_string(),
        run_name,
        user_id,
        status,
        start_time,
        end_time,
        artifact_uri,
        lifecycle_stage,
    }
}

/// The run statuses MLflow knows.
pub const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// A readable, random run name such as `brave-otter-417`, as MLflow generates when none is given.
fn generate_run_name() -> String {
    use rand::Rng;
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "clever", "bold", "bright", "gentle", "keen", "lively", "merry", "nimble", "quiet", "rare", "swift", "tidy", "vivid", "wise",
    ];
    const NOUNS: [&str; 16] = [
        "otter", "heron", "lynx", "crane", "finch", "gull", "hare", "ibis", "koi", "mole", "newt", "owl", "panda", "robin", "seal", "wren",
    ];
    let mut rng = rand::rng();
    format!(
        "{}-{}-{}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        NOUNS[rng.random_range(0..NOUNS.len())],
        rng.random_range(0..1000)
    )
}

impl Store {
    /// Creates a run in an active experiment.
    pub async fn create_run(&self, new: NewRun) -> Result<Run> {
        let exp = self.get_experiment(&new.experiment_id).await?;
        if exp.lifecycle_stage != "active" {
            return Err(Error::Invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is {}.",
                exp.experiment_id, exp.lifecycle_stage
            )));
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let tag_name = new.tags.iter().find(|(k, _)| k == "mlflow.runName").map(|(_, v)| v.clone());
        let run_name = new.run_name.filter(|n| !n.is_empty()).or(tag_name).unwrap_or_else(generate_run_name);
        let mut tags: BTreeMap<String, String> = new.tags.into_iter().collect();
        tags.insert("mlflow.runName".into(), run_name.clone());
        let artifact_uri = format!("{}/{run_id}/artifacts", exp.artifact_location.trim_end_matches('/'));
        let start_time = new.start_time.unwrap_or_else(now_ms);
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "insert into run (run_uuid, experiment_id, run_name, user_id, status, start_time, artifact_uri, lifecycle_stage) values ($1, $2, $3, $4, 'RUNNING', $5, $6, 'active')",
        )
        .bind(&run_id)
        .bind(parse_experiment_id(&exp.experiment_id)?)
        .bind(&run_name)
        .bind(&new.user_id)
        .bind(start_time)
        .bind(&artifact_uri)
        .execute(&mut *tx)
        .await?;
        upsert_tags(&mut tx, self.dialect, &run_id, tags.iter()).await?;
        tx.commit().await?;
        self.last_blocks.new_run(&run_id);
        self.get_run(&run_id).await
    }

    /// A run's metadata alone.
    pub async fn get_run_info(&self, run_id: &str) -> Result<RunInfo> {
        let sql = format!("select {RUN_COLUMNS} from run r where r.run_uuid = $1");
        let row: Option<RunInfoRow> = self.fetch_rows(sql, vec![Bind::Text(run_id.to_owned())]).await?.pop();
        row.map(run_info_from_row).ok_or_else(|| run_not_found(run_id))
    }

    /// A run with its params, tags, latest metrics, inputs and outputs.
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let info = self.get_run_info(run_id).await?;
        let mut runs = self.hydrate(vec![info]).await?;
        Ok(runs.remove(0))
    }

    /// Loads data, inputs and outputs of many runs with one query per table.
    async fn hydrate(&self, infos: Vec<RunInfo>) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = infos
            .into_iter()
            .map(|info| Run { info, data: RunData::default(), inputs: RunInputs::default(), outputs: RunOutputs::default() })
            .collect();
        if runs.is_empty() {
            return Ok(runs);
        }
        let index: BTreeMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.info.run_id.clone(), i)).collect();
        let all_ids: Vec<&String> = index.keys().collect();
        // SQLite allows 32,766 parameters a statement; a page may hold 50,000 runs.
        for ids in all_ids.chunks(HYDRATE_IDS_PER_QUERY) {
            let list = self.in_list(ids.len());
            let params_sql = format!("select run_uuid, key, value from param where run_uuid in ({list}) order by key");
            let tags_sql = format!("select run_uuid, key, value from tag where run_uuid in ({list}) order by key");
            let metrics_sql = format!("select run_uuid, key, value, is_nan, timestamp, step from latest_metric where run_uuid in ({list}) order by key");
            let inputs_sql = format!(
                "select i.run_uuid, i.tags_json, d.name, d.digest, d.source_type, d.source, d.schema, d.profile from run_input i join dataset d on d.dataset_uuid = i.dataset_uuid where i.run_uuid in ({list}) order by d.name, d.digest"
            );
            let outputs_sql = format!("select run_uuid, model_id, step from run_output where run_uuid in ({list}) order by step, model_id");
            let binds: Vec<Bind> = ids.iter().map(|id| Bind::Text((*id).clone())).collect();
            let params: Vec<(String, String, String)> = self.fetch_rows(params_sql, binds.clone()).await?;
            for (run, key, value) in params {
                runs[index[&run]].data.params.push(Tag { key, value });
            }
            let tags: Vec<(String, String, String)> = self.fetch_rows(tags_sql, binds.clone()).await?;
            for (run, key, value) in tags {
                runs[index[&run]].data.tags.push(Tag { key, value });
            }
            let metrics: Vec<(String, String, f64, i64, i64, i64)> = self.fetch_rows(metrics_sql, binds.clone()).await?;
            for (run, key, value, is_nan, timestamp, step) in metrics {
                let value = if is_nan != 0 { f64::NAN } else { value };
                runs[index[&run]].data.metrics.push(Metric { key, value, timestamp, step, dataset_name: None, dataset_digest: None, model_id: None, run_id: None });
            }
            type InputRow = (String, String, String, String, String, String, Option<String>, Option<String>);
            let inputs: Vec<InputRow> = self.fetch_rows(inputs_sql, binds.clone()).await?;
            for (run, tags_json, name, digest, source_type, source, schema, profile) in inputs {
                let tags: Vec<Tag> = serde_json::from_str(&tags_json).unwrap_or_default();
                runs[index[&run]].inputs.dataset_inputs.push(DatasetInput { tags, dataset: Dataset { name, digest, source_type, source, schema, profile } });
            }
            let outputs: Vec<(String, String, i64)> = self.fetch_rows(outputs_sql, binds).await?;
            for (run, model_id, step) in outputs {
                runs[index[&run]].outputs.model_outputs.push(ModelOutput { model_id: Some(model_id), step: Some(step) });
            }
        }
        Ok(runs)
    }

    /// Updates status, end time and name of a run.
    pub async fn update_run(&self, run_id: &str, status: Option<&str>, end_time: Option<i64>, run_name: Option<&str>) -> Result<RunInfo> {
        let info = self.get_run_info(run_id).await?;
        check_active(&info)?;
        let mut tx = self.write.begin().await?;
        sqlx::query("update run set status = coalesce($1, status), end_time = coalesce($2, end_time), run_name = coalesce($3, run_name) where run_uuid = $4")
            .bind(status)
            .bind(end_time)
            .bind(run_name)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        if let Some(name) = run_name {
            upsert_tags(&mut tx, self.dialect, run_id, [(&"mlflow.runName".to_owned(), &name.to_owned())].into_iter()).await?;
        }
        tx.commit().await?;
        self.get_run_info(run_id).await
    }

    /// Marks a run deleted or active again.
    pub async fn set_run_lifecycle(&self, run_id: &str, stage: &str) -> Result<()> {
        self.get_run_info(run_id).await?;
        let deleted_time = if stage == "deleted" { Some(now_ms()) } else { None };
        sqlx::query("update run set lifecycle_stage = $1, deleted_time = $2 where run_uuid = $3")
            .bind(stage)
            .bind(deleted_time)
            .bind(run_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Logs metrics, params and tags in one transaction: all of them or none.
    ///
    /// Params are immutable: re-logging the same value is a no-op, another value is refused.
    /// The latest-metric table is updated in the same transaction, keeping MLflow's rule for
    /// "latest": the highest (step, timestamp, value).
    ///
    /// On SQLite, a request of metric points alone joins the group commit (`group_commit`).
    pub async fn log_batch(&self, run_id: &str, metrics: &[NewMetric], params: &[(String, String)], tags: &[(String, String)]) -> Result<()> {
        if let Some(group_commit) = self.group_commit.as_ref().filter(|_| params.is_empty() && tags.is_empty() && !metrics.is_empty()) {
            return group_commit.log(run_id, metrics.to_vec()).await;
        }
        let info = self.get_run_info(run_id).await?;
        check_active(&info)?;
        let mut tx = self.write.begin().await?;
        if !params.is_empty() {
            insert_params(&mut tx, self.dialect, run_id, params).await?;
        }
        if !tags.is_empty() {
            upsert_tags(&mut tx, self.dialect, run_id, tags.iter().map(|(k, v)| (k, v))).await?;
            if let Some((_, name)) = tags.iter().rev().find(|(k, _)| k == "mlflow.runName") {
                sqlx::query("update run set run_name = $1 where run_uuid = $2").bind(name).bind(run_id).execute(&mut *tx).await?;
            }
        }
        if !metrics.is_empty() {
            insert_metrics(&mut tx, self.dialect, &self.last_blocks, &[(run_id, metrics)]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a run tag.
    pub async fn delete_tag(&self, run_id: &str, key: &str) -> Result<()> {
        let info = self.get_run_info(run_id).await?;
        check_active(&info)?;
        let res = sqlx::query("delete from tag where run_uuid = $1 and key = $2").bind(run_id).bind(key).execute(&self.write).await?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound(format!("No tag with name: {key} in run with id {run_id}")));
        }
        Ok(())
    }

    /// A page of one metric's history in (timestamp, step) order.
    ///
    /// Paging is keyset paging on (timestamp, step, metric_id): a page costs the same however deep
    /// it is, and the token stays valid while points are appended.
    /// An unknown run has no history, like an unknown key: MLflow answers both with `{}`.
    pub async fn metric_history(&self, run_id: &str, key: &str, max_results: Option<i64>, page_token: Option<&str>) -> Result<HistoryPage> {
        let after = decode_history_token(page_token)?;
        let limit = max_results.unwrap_or(i64::MAX / 2);
        let mut sql = String::from("select value, is_nan, timestamp, step, metric_id from metric where run_uuid = $1 and key = $2");
        let mut binds = vec![Bind::Text(run_id.to_owned()), Bind::Text(key.to_owned())];
        if let Some((ts, step, id)) = after {
            sql.push_str(" and (timestamp, step, metric_id) > ($3, $4, $5)");
            binds.extend([Bind::Int(ts), Bind::Int(step), Bind::Int(id)]);
        }
        sql.push_str(&format!(" order by timestamp, step, metric_id limit {}", limit.saturating_add(1)));
        let rows: Vec<(f64, i64, i64, i64, i64)> = self.fetch_rows(sql, binds).await?;
        let mut metrics = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for &(value, is_nan, timestamp, step, metric_id) in rows.iter().take(limit as usize) {
            metrics.push(Metric {
                key: key.to_owned(),
                value: if is_nan != 0 { f64::NAN } else { value },
                timestamp,
                step,
                dataset_name: None,
                dataset_digest: None,
                model_id: None,
                run_id: None,
            });
            last = Some((timestamp, step, metric_id));
        }
        let next_page_token = if rows.len() as i64 > limit { last.map(encode_history_token) } else { None };
        Ok(HistoryPage { metrics, next_page_token })
    }

    /// The blocks of a metric in logging order (see [`MetricBlock`]); none for an unknown run or key.
    pub async fn metric_blocks(&self, run_id: &str, key: &str) -> Result<Vec<MetricBlock>> {
        let rows = sqlx::query(
            "select points, value_points, step_min, step_max, timestamp_min, timestamp_max, value_min, value_max \
             from metric_block where run_uuid = $1 and key = $2 order by block",
        )
        .bind(run_id)
        .bind(key)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MetricBlock {
                    points: r.try_get(0)?,
                    value_points: r.try_get(1)?,
                    steps: (r.try_get(2)?, r.try_get(3)?),
                    timestamps: (r.try_get(4)?, r.try_get(5)?),
                    values: (r.try_get(6)?, r.try_get(7)?),
                })
            })
            .collect()
    }

    /// The points of a metric reduced to the lowest and highest value of each span
    /// `bucket = (x - origin) / width` of step (or time, `by_time`): min-max downsampling, which
    /// keeps every spike. NaN points are left out. This reads every point; charts use it when the
    /// blocks are too coarse or out of order for the chart (see `ui::pages::chart_points`).
    pub async fn metric_envelope(&self, run_id: &str, key: &str, by_time: bool, (origin, width): (i64, i64)) -> Result<Vec<EnvelopeBucket>> {
        let x = if by_time { "timestamp" } else { "step" };
        let rows = sqlx::query(&format!(
            "select ({x} - $3) / $4 as bucket, min({x}), max({x}), min(value), max(value) from metric \
             where run_uuid = $1 and key = $2 and is_nan = 0 group by bucket"
        ))
        .bind(run_id)
        .bind(key)
        .bind(origin)
        .bind(width.max(1))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok(EnvelopeBucket { bucket: r.try_get(0)?, x_min: r.try_get(1)?, x_max: r.try_get(2)?, min: r.try_get(3)?, max: r.try_get(4)? }))
            .collect()
    }

    /// Searches runs of some experiments with a parsed filter and order.
    pub async fn search_runs(
        &self,
        experiment_ids: &[String],
        filter: &[RunClause],
        order: &[RunOrder],
        view: ViewType,
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<RunPage> {
        let offset = decode_offset_token(page_token)?;
        let ids = experiment_ids.iter().map(|id| parse_experiment_id(id)).collect::<Result<Vec<_>>>()?;
        if ids.is_empty() {
            return Ok(RunPage { runs: Vec::new(), next_page_token: None });
        }
        let where_frag = search_sql::run_filter_sql(filter, self.dialect, 1 + ids.len());
        let order_frag = search_sql::run_order_sql(order, self.dialect, 1 + ids.len() + where_frag.binds.len());
        let sql = format!(
            "select {RUN_COLUMNS} from run r where r.experiment_id in ({}){}{} order by {} limit {} offset {}",
            placeholders(1, ids.len()),
            view.sql("r"),
            where_frag.sql,
            order_frag.sql,
            max_results + 1,
            offset
        );
        let mut binds: Vec<Bind> = ids.iter().map(|id| Bind::Int(*id)).collect();
        binds.extend(where_frag.binds);
        binds.extend(order_frag.binds);
        let rows: Vec<RunInfoRow> = self.fetch_rows(sql, binds).await?;
        let mut infos: Vec<RunInfo> = rows.into_iter().map(run_info_from_row).collect();
        let next_page_token = super::next_offset_token(&mut infos, max_results, offset);
        Ok(RunPage { runs: self.hydrate(infos).await?, next_page_token })
    }

    /// Records datasets (deduplicated per experiment by name and digest) as inputs of a run.
    pub async fn log_inputs(&self, run_id: &str, inputs: &[DatasetInput]) -> Result<()> {
        let info = self.get_run_info(run_id).await?;
        check_active(&info)?;
        let experiment_id = parse_experiment_id(&info.experiment_id)?;
        let mut tx = self.write.begin().await?;
        for input in inputs {
            let d = &input.dataset;
            let new_uuid = uuid::Uuid::new_v4().simple().to_string();
            sqlx::query(
                "insert into dataset (dataset_uuid, experiment_id, name, digest, source_type, source, schema, profile) values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (experiment_id, name, digest) do nothing",
            )
            .bind(&new_uuid)
            .bind(experiment_id)
            .bind(&d.name)
            .bind(&d.digest)
            .bind(&d.source_type)
            .bind(&d.source)
            .bind(&d.schema)
            .bind(&d.profile)
            .execute(&mut *tx)
            .await?;
            let dataset_uuid: String = sqlx::query_scalar("select dataset_uuid from dataset where experiment_id = $1 and name = $2 and digest = $3")
                .bind(experiment_id)
                .bind(&d.name)
                .bind(&d.digest)
                .fetch_one(&mut *tx)
                .await?;
            let tags_json = serde_json::to_string(&input.tags).unwrap_or_else(|_| "[]".into());
            sqlx::query("insert into run_input (run_uuid, dataset_uuid, tags_json) values ($1, $2, $3) on conflict (run_uuid, dataset_uuid) do update set tags_json = excluded.tags_json")
                .bind(run_id)
                .bind(&dataset_uuid)
                .bind(&tags_json)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records logged models as outputs of a run.
    pub async fn log_outputs(&self, run_id: &str, models: &[(String, i64)]) -> Result<()> {
        let info = self.get_run_info(run_id).await?;
        check_active(&info)?;
        let mut tx = self.write.begin().await?;
        for (model_id, step) in models {
            sqlx::query("insert into run_output (run_uuid, model_id, step) values ($1, $2, $3) on conflict (run_uuid, model_id) do update set step = excluded.step")
                .bind(run_id)
                .bind(model_id)
                .bind(*step)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn check_active(info: &RunInfo) -> Result<()> {
    check_active_stage(&info.run_id, &info.lifecycle_stage)
}

/// Only an active run takes new data.
pub(super) fn check_active_stage(run_id: &str, lifecycle_stage: &str) -> Result<()> {
    if lifecycle_stage != "active" {
        return Err(Error::Invalid(format!("The run {run_id} must be in the 'active' state. Current state is {lifecycle_stage}.")));
    }
    Ok(())
}

/// MLflow's words for an unknown run.
pub(super) fn run_not_found(run_id: &str) -> Error {
    Error::NotFound(format!("Run with id={run_id} not found"))
}

/// Clamps infinities to the largest finite doubles and splits NaN into (0, is_nan), MLflow's layout.
fn stored_value(v: f64) -> (f64, i64) {
    if v.is_nan() {
        (0.0, 1)
    } else {
        (v.clamp(-MAX_DOUBLE, MAX_DOUBLE), 0)
    }
}

/// Sets tags on a run, in one statement per [`KEY_VALUE_ROWS_PER_INSERT`] tags.
pub(super) async fn upsert_tags<'a>(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    run_id: &str,
    tags: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<()> {
    for statement in tag_upserts(dialect, run_id, tags) {
        bind_all(sqlx::query(&statement.sql), &statement.binds).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The statements that set tags on a run. A key given twice keeps its last value, as if the
/// tags were set one after another (Postgres refuses a statement that updates one row twice, so
/// the repeats are dropped first).
pub(super) fn tag_upserts<'a>(dialect: Dialect, run_id: &str, tags: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<SqlFragment> {
    let mut latest: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in tags {
        latest.insert(k, v);
    }
    key_value_rows(dialect, "insert into tag (run_uuid, key, value) values {} on conflict (run_uuid, key) do update set value = excluded.value", run_id, latest)
}

/// The statements that log the params of a run created in the same transaction, which has none
/// yet: plain inserts (a repeated key fails the transaction).
pub(super) fn new_run_param_inserts(dialect: Dialect, run_id: &str, params: &[(String, String)]) -> Vec<SqlFragment> {
    key_value_rows(dialect, "insert into param (run_uuid, key, value) values {}", run_id, params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// `template` with its `{}` replaced by rows of (run, key, value) placeholders, one statement per
/// [`KEY_VALUE_ROWS_PER_INSERT`] pairs.
fn key_value_rows<'a>(dialect: Dialect, template: &str, run_id: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<SqlFragment> {
    let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    pairs
        .chunks(KEY_VALUE_ROWS_PER_INSERT)
        .map(|chunk| SqlFragment {
            sql: template.replace("{}", &row_placeholders(dialect, chunk.len(), 3)),
            binds: chunk.iter().flat_map(|(k, v)| [Bind::Text(run_id.to_owned()), Bind::Text((*k).to_owned()), Bind::Text((*v).to_owned())]).collect(),
        })
        .collect()
}

/// Logs params on a run. A param already logged with the same value is kept (re-logging is a
/// no-op, as in MLflow); one already logged with another value is refused and nothing changes.
pub(super) async fn insert_params(tx: &mut Transaction<'static, Any>, dialect: Dialect, run_id: &str, params: &[(String, String)]) -> Result<()> {
    // Within one batch the same key must carry the same value.
    let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in params {
        if let Some(prev) = wanted.insert(k, v) {
            if prev != v {
                return Err(Error::Invalid(format!(
                    "Duplicate parameter keys have been submitted: key '{k}' with values '{prev}' and '{v}'."
                )));
            }
        }
    }
    // Insert-or-keep, then compare what was kept: a select-then-insert would let two writers of
    // the same key (async logging, client retries) both see nothing and one fail on the primary
    // key. The statement returns the keys it inserted; only the others are read back.
    let wanted: Vec<(&str, &str)> = wanted.into_iter().collect();
    for chunk in wanted.chunks(KEY_VALUE_ROWS_PER_INSERT) {
        let sql = format!(
            "insert into param (run_uuid, key, value) values {} on conflict (run_uuid, key) do nothing returning key",
            row_placeholders(dialect, chunk.len(), 3)
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for (k, v) in chunk {
            query = query.bind(run_id).bind(*k).bind(*v);
        }
        let inserted: BTreeSet<String> = query.fetch_all(&mut **tx).await?.into_iter().collect();
        for (k, v) in chunk.iter().filter(|(k, _)| !inserted.contains(*k)) {
            let old: String = sqlx::query_scalar("select value from param where run_uuid = $1 and key = $2").bind(run_id).bind(*k).fetch_one(&mut **tx).await?;
            if old != *v {
                return Err(Error::Invalid(format!(
                    "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{v}'."
                )));
            }
        }
    }
    Ok(())
}

/// Rows per multi-row INSERT of tags or params: MLflow's log-batch carries at most 100 of each.
const KEY_VALUE_ROWS_PER_INSERT: usize = 100;

/// Run ids per hydration query, below SQLite's limit on parameters.
const HYDRATE_IDS_PER_QUERY: usize = 10_000;

/// Rows per multi-row INSERT: 9 placeholders each stays far below both databases' limits.
const METRIC_ROWS_PER_INSERT: usize = 500;

/// `count` rows of `width` placeholders each: `(?, ?), (?, ?)` on SQLite, `($1, $2), ($3, $4)`
/// on Postgres.
///
/// SQLite gets anonymous `?` because it binds a numbered `$n` by looking its name up in a list,
/// so a statement with thousands of `$n` costs time quadratic in their number (it was 80% of a
/// 1000-metric log-batch); `?` is bound by position at no cost.
fn row_placeholders(dialect: Dialect, count: usize, width: usize) -> String {
    let mut sql = String::with_capacity(count * width * 5);
    let mut n = 0;
    for row in 0..count {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            n += 1;
            match dialect {
                Dialect::Sqlite => sql.push('?'),
                Dialect::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Metric points of one run: what a request logs.
pub(super) type RunPoints<'a> = (&'a str, &'a [NewMetric]);

/// The points of `batches`, each with its run.
pub(super) fn points_of<'a>(batches: &[RunPoints<'a>]) -> Vec<(&'a str, &'a NewMetric)> {
    batches.iter().flat_map(|(run_id, metrics)| metrics.iter().map(move |m| (*run_id, m))).collect()
}

/// Stores metric points of one or more runs (a request, or the requests a group commit folds
/// together), with their latest-metric rows and chart blocks, in the caller's transaction.
///
/// The statements come from [`point_statements`], [`last_block_queries`] and
/// [`block_statements`]; the group commit on SQLite runs the same ones through rusqlite
/// (`native::NativeWriter::insert_metrics`).
pub(super) async fn insert_metrics(tx: &mut Transaction<'static, Any>, dialect: Dialect, last_blocks: &LastBlocks, batches: &[RunPoints<'_>]) -> Result<()> {
    for statement in metric_statements(tx, dialect, last_blocks, batches).await? {
        bind_all(sqlx::query(&statement.sql), &statement.binds).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The statements that store `batches`: the points, their latest-metric rows and their blocks.
/// The last blocks that `last_blocks` does not know are read through `conn` first; the
/// statements write nothing until they run.
pub(super) async fn metric_statements(conn: &mut AnyConnection, dialect: Dialect, last_blocks: &LastBlocks, batches: &[RunPoints<'_>]) -> Result<Vec<SqlFragment>> {
    let points = points_of(batches);
    let mut looked_up = HashMap::new();
    for (run_id, query) in last_block_queries(last_blocks, &points) {
        for row in bind_all(sqlx::query(&query.sql), &query.binds).fetch_all(&mut *conn).await? {
            looked_up.insert((run_id.to_owned(), row.try_get(0)?), (row.try_get(1)?, row.try_get(2)?));
        }
    }
    let mut statements = point_statements(dialect, &points);
    statements.extend(block_statements(dialect, last_blocks, &points, &looked_up));
    Ok(statements)
}

/// The inserts of `points` and the upserts of their runs' latest-metric rows.
pub(super) fn point_statements(dialect: Dialect, points: &[(&str, &NewMetric)]) -> Vec<SqlFragment> {
    let mut statements = Vec::new();
    let text = |s: &str| Bind::Text(s.to_owned());
    let nullable = |s: &Option<String>| s.as_deref().map_or(Bind::NullText, text);
    for chunk in points.chunks(METRIC_ROWS_PER_INSERT) {
        let sql = format!(
            "insert into metric (run_uuid, key, value, is_nan, timestamp, step, dataset_name, dataset_digest, model_id) values {}",
            row_placeholders(dialect, chunk.len(), 9)
        );
        let mut binds = Vec::with_capacity(chunk.len() * 9);
        for (run_id, m) in chunk {
            let (value, is_nan) = stored_value(m.value);
            binds.extend([text(run_id), text(&m.key), Bind::Float(value), Bind::Int(is_nan), Bind::Int(m.timestamp), Bind::Int(m.step)]);
            binds.extend([nullable(&m.dataset_name), nullable(&m.dataset_digest), nullable(&m.model_id)]);
        }
        statements.push(SqlFragment { sql, binds });
    }
    // One upsert per (run, key): the points' own latest per key first (a statement may not
    // update the same row twice on Postgres), then compared with the stored latest in SQL.
    let mut latest: BTreeMap<(&str, &str), &NewMetric> = BTreeMap::new();
    for &(run_id, m) in points {
        let replace = match latest.get(&(run_id, m.key.as_str())) {
            None => true,
            Some(cur) => latest_order(m) > latest_order(cur),
        };
        if replace {
            latest.insert((run_id, &m.key), m);
        }
    }
    let latest: Vec<(&str, &NewMetric)> = latest.into_iter().map(|((run_id, _), m)| (run_id, m)).collect();
    for chunk in latest.chunks(METRIC_ROWS_PER_INSERT) {
        let sql = format!(
            "insert into latest_metric (run_uuid, key, value, is_nan, timestamp, step) values {} \
             on conflict (run_uuid, key) do update set value = excluded.value, is_nan = excluded.is_nan, timestamp = excluded.timestamp, step = excluded.step \
             where (excluded.step, excluded.timestamp, excluded.value) >= (latest_metric.step, latest_metric.timestamp, latest_metric.value)",
            row_placeholders(dialect, chunk.len(), 6)
        );
        let mut binds = Vec::with_capacity(chunk.len() * 6);
        for (run_id, m) in chunk {
            let (value, is_nan) = stored_value(m.value);
            binds.extend([text(run_id), text(&m.key), Bind::Float(value), Bind::Int(is_nan), Bind::Int(m.timestamp), Bind::Int(m.step)]);
        }
        statements.push(SqlFragment { sql, binds });
    }
    statements
}

/// Where each metric's last block stands as this process last wrote it: `(run, key)` ->
/// (block number, points in it). It saves a read on every write. When it is off (another replica
/// wrote the key too, or a transaction rolled back), a block ends up with more or fewer than
/// [`POINTS_PER_BLOCK`] points, which is still a correct summary, so it is never checked.
#[derive(Debug, Default, Clone)]
pub(super) struct LastBlocks(Arc<Mutex<KnownBlocks>>);

#[derive(Debug, Default)]
struct KnownBlocks {
    /// The last block of each metric this process wrote.
    last: HashMap<RunKey, (i64, i64)>,
    /// Runs this process created: none of their metrics has a block yet until `last` says so,
    /// so the first write of each key needs no read (on Postgres a round trip).
    new_runs: HashSet<String>,
}

/// `(run id, metric key)`.
type RunKey = (String, String);

/// Metrics (and new runs) [`LastBlocks`] remembers; past that it starts over, and the next write
/// of each key reads its last block again.
const LAST_BLOCKS_KEPT: usize = 100_000;

impl LastBlocks {
    fn get(&self, run_id: &str, key: &str) -> Option<(i64, i64)> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known.last.get(&(run_id.to_owned(), key.to_owned())).copied().or_else(|| known.new_runs.contains(run_id).then_some((0, 0)))
    }

    /// Remembers that `run_id` was just created, so it has no block yet.
    pub(super) fn new_run(&self, run_id: &str) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if known.new_runs.len() >= LAST_BLOCKS_KEPT {
            known.new_runs.clear();
        }
        known.new_runs.insert(run_id.to_owned());
    }

    fn set(&self, run_id: &str, key: &str, last: (i64, i64)) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let blocks = &mut known.last;
        if blocks.len() >= LAST_BLOCKS_KEPT {
            blocks.clear();
        }
        blocks.insert((run_id.to_owned(), key.to_owned()), last);
    }
}

/// Queries for the last block of each (run, key) of `points` that [`LastBlocks`] does not
/// remember, with the run each is about; their rows are `(key, block, points)`.
pub(super) fn last_block_queries<'a>(cache: &LastBlocks, points: &[(&'a str, &NewMetric)]) -> Vec<(&'a str, SqlFragment)> {
    let mut unknown: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for &(run_id, m) in points {
        if cache.get(run_id, &m.key).is_none() {
            unknown.entry(run_id).or_default().insert(&m.key);
        }
    }
    let mut queries = Vec::new();
    for (run_id, keys) in unknown {
        let keys: Vec<&str> = keys.into_iter().collect();
        for chunk in keys.chunks(METRIC_ROWS_PER_INSERT) {
            let sql = format!(
                "select b.key, b.block, b.points from metric_block b where b.run_uuid = $1 and b.key in ({}) \
                 and b.block = (select max(m.block) from metric_block m where m.run_uuid = b.run_uuid and m.key = b.key)",
                placeholders(2, chunk.len())
            );
            let binds = std::iter::once(run_id).chain(chunk.iter().copied()).map(|s| Bind::Text(s.to_owned())).collect();
            queries.push((run_id, SqlFragment { sql, binds }));
        }
    }
    queries
}

/// Folds `points` into their metrics' blocks: each key's points, in the order given, fill its
/// last block up to [`POINTS_PER_BLOCK`], then open the next. A key's last block is the one
/// [`LastBlocks`] remembers, else the one `looked_up` (by [`last_block_queries`]) found, else
/// none yet. Returns the block upserts and remembers where each key's last block now stands.
///
/// Two transactions logging the same key at once may both fill the same last block; the upsert
/// then merges them into one block of more points, which stays a correct summary.
pub(super) fn block_statements(dialect: Dialect, cache: &LastBlocks, points: &[(&str, &NewMetric)], looked_up: &HashMap<(String, String), (i64, i64)>) -> Vec<SqlFragment> {
    let mut points_by_key: BTreeMap<(&str, &str), Vec<&NewMetric>> = BTreeMap::new();
    for &(run_id, m) in points {
        points_by_key.entry((run_id, &m.key)).or_default().push(m);
    }
    let mut blocks: Vec<(&str, &str, i64, MetricBlock)> = Vec::new();
    for ((run_id, key), points) in points_by_key {
        let last = cache.get(run_id, key).or_else(|| looked_up.get(&(run_id.to_owned(), key.to_owned())).copied());
        let (mut number, mut filled) = last.unwrap_or((0, 0));
        let mut block = MetricBlock::EMPTY;
        for m in points {
            if filled >= POINTS_PER_BLOCK {
                if block.points > 0 {
                    blocks.push((run_id, key, number, block));
                }
                (number, filled, block) = (number + 1, 0, MetricBlock::EMPTY);
            }
            filled += 1;
            block.add(m);
        }
        blocks.push((run_id, key, number, block));
        cache.set(run_id, key, (number, filled));
    }
    // A statement updates each (key, block) once, as Postgres requires: the fold above made them unique.
    let smaller = |col: &str| format!("{col} = case when excluded.{col} < metric_block.{col} then excluded.{col} else metric_block.{col} end");
    let larger = |col: &str| format!("{col} = case when excluded.{col} > metric_block.{col} then excluded.{col} else metric_block.{col} end");
    let merge = [
        "points = metric_block.points + excluded.points".to_string(),
        "value_points = metric_block.value_points + excluded.value_points".to_string(),
        smaller("step_min"),
        larger("step_max"),
        smaller("timestamp_min"),
        larger("timestamp_max"),
        smaller("value_min"),
        larger("value_max"),
    ]
    .join(", ");
    let mut statements = Vec::new();
    for chunk in blocks.chunks(METRIC_ROWS_PER_INSERT) {
        let sql = format!(
            "insert into metric_block (run_uuid, key, block, points, value_points, step_min, step_max, timestamp_min, timestamp_max, value_min, value_max) \
             values {} on conflict (run_uuid, key, block) do update set {merge}",
            row_placeholders(dialect, chunk.len(), 11)
        );
        let mut binds = Vec::with_capacity(chunk.len() * 11);
        for (run_id, key, number, b) in chunk {
            binds.extend([Bind::Text((*run_id).to_owned()), Bind::Text((*key).to_owned()), Bind::Int(*number), Bind::Int(b.points), Bind::Int(b.value_points)]);
            binds.extend([Bind::Int(b.steps.0), Bind::Int(b.steps.1), Bind::Int(b.timestamps.0), Bind::Int(b.timestamps.1)]);
            binds.extend([Bind::Float(b.values.0), Bind::Float(b.values.1)]);
        }
        statements.push(SqlFragment { sql, binds });
    }
    statements
}

/// MLflow's order for "latest": step, then timestamp, then value (NaN counts as 0, as stored).
fn latest_order(m: &NewMetric) -> (i64, i64, f64) {
    (m.step, m.timestamp, stored_value(m.value).0)
}

fn encode_history_token((ts, step, id): (i64, i64, i64)) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{ts}:{step}:{id}"))
}

fn decode_history_token(token: Option<&str>) -> Result<Option<(i64, i64, i64)>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(None) };
    let invalid = || Error::Invalid(format!("Invalid page token '{token}'"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let parts: Vec<i64> = text.split(':').map(|p| p.parse::<i64>()).collect::<std::result::Result<_, _>>().map_err(|_| invalid())?;
    match parts[..] {
        [ts, step, id] => Ok(Some((ts, step, id))),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::*;

    #[test]
    fn row_placeholders_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(row_placeholders(Dialect::Sqlite, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(row_placeholders(Dialect::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}

#[cfg(test)]
mod block_tests {
    use super::super::BackendUri;
    use super::*;

    /// The blocks of `points` (one key, in logging order) as the definition says: consecutive
    /// runs of [`POINTS_PER_BLOCK`] points, folded one by one.
    fn expected_blocks(points: &[&NewMetric]) -> Vec<MetricBlock> {
        points
            .chunks(POINTS_PER_BLOCK as usize)
            .map(|chunk| {
                let mut b = MetricBlock::EMPTY;
                chunk.iter().for_each(|m| b.add(m));
                b
            })
            .collect()
    }

    /// Blocks kept while logging equal the definition for every key, however the points were
    /// split into batches and interleaved with other keys; NaN points count but carry no value,
    /// infinities are the clamped doubles; and migration 0009's backfill rebuilds the same blocks
    /// from the points alone.
    #[tokio::test]
    async fn blocks_are_256_points_in_logging_order_and_the_migration_rebuilds_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&BackendUri::Sqlite(dir.path().join("t.db"))).await.unwrap();
        let run = store.create_run(NewRun { experiment_id: "0".into(), ..Default::default() }).await.unwrap().info.run_id;
        let mut logged: Vec<NewMetric> = Vec::new();
        let mut step = 0;
        for batch_size in [1, 255, 300, 1000, 7, 256, 513] {
            let batch: Vec<NewMetric> = (0..batch_size)
                .map(|i| {
                    step += 1;
                    let key = ["a", "b", "nan"][i % 3];
                    let value = match (key, step % 50) {
                        ("nan", _) | (_, 0) => f64::NAN,
                        (_, 7) => f64::INFINITY,
                        _ => ((step * 37) % 101) as f64 - 50.0,
                    };
                    // Steps go back now and then: blocks follow logging order, not step order.
                    NewMetric { key: key.into(), value, timestamp: 1_000 + step as i64, step: (step as i64) % 400, dataset_name: None, dataset_digest: None, model_id: None }
                })
                .collect();
            store.log_batch(&run, &batch, &[], &[]).await.unwrap();
            logged.extend(batch);
        }
        let expected: Vec<(&str, Vec<MetricBlock>)> = ["a", "b", "nan"]
            .into_iter()
            .map(|key| (key, expected_blocks(&logged.iter().filter(|m| m.key == key).collect::<Vec<_>>())))
            .collect();
        assert!(expected.iter().all(|(_, blocks)| blocks.len() == 4 && blocks[3].points < POINTS_PER_BLOCK), "{expected:?}");
        assert!(expected[2].1.iter().all(|b| b.value_points == 0), "the NaN key has no values");
        assert!(expected[0].1.iter().any(|b| b.values.1 == MAX_DOUBLE), "an infinity is kept as the largest double");
        for (key, blocks) in &expected {
            assert_eq!(&store.metric_blocks(&run, key).await.unwrap(), blocks, "{key}");
        }

        let migration = include_str!("../../../migrations/sqlite/0009_metric_blocks.sql");
        let backfill = &migration[migration.find("insert into metric_block").unwrap()..];
        sqlx::query("delete from metric_block").execute(&store.write).await.unwrap();
        sqlx::query(backfill).execute(&store.write).await.unwrap();
        for (key, blocks) in &expected {
            assert_eq!(&store.metric_blocks(&run, key).await.unwrap(), blocks, "{key}, rebuilt by the migration");
        }
    }

    /// A run this process created has no block yet: its first points are folded into block 0
    /// without reading for a last block (on Postgres a round trip), and from then on the block
    /// as written is what is remembered.
    #[test]
    fn a_new_runs_first_points_need_no_read() {
        let cache = LastBlocks::default();
        let point = NewMetric { key: "loss".into(), value: 1.0, timestamp: 1, step: 1, dataset_name: None, dataset_digest: None, model_id: None };
        let points = [("run", &point), ("other", &point)];
        assert_eq!(last_block_queries(&cache, &points).len(), 2, "runs it did not create are read");
        cache.new_run("run");
        let reads = last_block_queries(&cache, &points);
        assert_eq!(reads.iter().map(|(run, _)| *run).collect::<Vec<_>>(), ["other"]);
        let upserts = block_statements(Dialect::Sqlite, &cache, &points[..1], &HashMap::new());
        assert_eq!(upserts[0].binds[2], Bind::Int(0), "block 0");
        assert_eq!((cache.get("run", "loss"), cache.get("other", "loss")), (Some((0, 1)), None));
    }

    /// Two processes writing the same metric (two replicas on one database) each remember the
    /// last block as they wrote it, so blocks may end up bigger than 256 points and overlap;
    /// they still summarize every point once.
    #[tokio::test]
    async fn blocks_stay_correct_when_two_processes_write_one_metric() {
        let dir = tempfile::tempdir().unwrap();
        let uri = BackendUri::Sqlite(dir.path().join("t.db"));
        let (one, two) = (Store::open(&uri).await.unwrap(), Store::open(&uri).await.unwrap());
        let run = one.create_run(NewRun { experiment_id: "0".into(), ..Default::default() }).await.unwrap().info.run_id;
        let point = |step: i64| NewMetric { key: "loss".into(), value: step as f64, timestamp: step, step, dataset_name: None, dataset_digest: None, model_id: None };
        for batch in 0..40 {
            let points: Vec<NewMetric> = (batch * 50..(batch + 1) * 50).map(point).collect();
            [&one, &two][batch as usize % 2].log_batch(&run, &points, &[], &[]).await.unwrap();
        }
        let blocks = one.metric_blocks(&run, "loss").await.unwrap();
        assert_eq!(blocks.iter().map(|b| b.points).sum::<i64>(), 2000);
        assert_eq!(blocks.iter().map(|b| b.value_points).sum::<i64>(), 2000);
        assert!(blocks.iter().all(|b| b.points <= 2 * POINTS_PER_BLOCK && b.values == (b.steps.0 as f64, b.steps.1 as f64)), "{blocks:?}");
        // Each process fills the block it remembers, so neighbours overlap, but never go back.
        assert!(blocks.windows(2).all(|w| w[0].steps.0 < w[1].steps.0 && w[0].steps.1 < w[1].steps.1), "{blocks:?}");
    }
}
