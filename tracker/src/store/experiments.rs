//! Experiments and their tags.

use api::mlflow::{Experiment, Tag};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::search_sql::{self, bind_all};
use super::{decode_offset_token, is_unique_violation, now_ms, Error, Result, Store};
use crate::search::{ExperimentClause, ExperimentOrder};

/// Which lifecycle stages a search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewType {
    /// `active` only (the default).
    ActiveOnly,
    /// `deleted` only.
    DeletedOnly,
    /// Both.
    All,
}

impl ViewType {
    /// Parses MLflow's enum names; absent means ACTIVE_ONLY.
    pub fn parse(s: Option<&str>) -> std::result::Result<Self, String> {
        match s.unwrap_or("ACTIVE_ONLY") {
            "ACTIVE_ONLY" | "" | "1" => Ok(ViewType::ActiveOnly),
            "DELETED_ONLY" | "2" => Ok(ViewType::DeletedOnly),
            "ALL" | "3" => Ok(ViewType::All),
            other => Err(format!("Invalid view type '{other}': expected ACTIVE_ONLY, DELETED_ONLY or ALL")),
        }
    }

    /// A SQL condition on `lifecycle_stage` of the aliased table.
    pub(crate) fn sql(self, alias: &str) -> String {
        match self {
            ViewType::ActiveOnly => format!(" and {alias}.lifecycle_stage = 'active'"),
            ViewType::DeletedOnly => format!(" and {alias}.lifecycle_stage = 'deleted'"),
            ViewType::All => String::new(),
        }
    }
}

/// One page of experiments.
#[derive(Debug)]
pub struct ExperimentPage {
    /// The experiments of this page.
    pub experiments: Vec<Experiment>,
    /// Token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

const EXPERIMENT_COLUMNS: &str = "e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.creation_time, e.last_update_time";

fn experiment_from_row(row: &AnyRow) -> Result<Experiment> {
    Ok(Experiment {
        experiment_id: row.try_get::<i64, _>(0)?.to_string(),
        name: row.try_get(1)?,
        artifact_location: row.try_get(2)?,
        lifecycle_stage: row.try_get(3)?,
        creation_time: row.try_get(4)?,
        last_update_time: row.try_get(5)?,
        tags: Vec::new(),
    })
}

/// Parses an experiment id; ids are integers, anything else cannot exist.
pub(crate) fn parse_experiment_id(id: &str) -> Result<i64> {
    id.trim()
        .parse::<i64>()
        .map_err(|_| Error::Invalid(format!("Invalid value '{id}' for parameter 'experiment_id' supplied: experiment ids are integers")))
}

impl Store {
    /// Creates an experiment; its artifact location defaults to `mlflow-artifacts:/<id>`.
    pub async fn create_experiment(&self, name: &str, artifact_location: Option<&str>, tags: &[(String, String)]) -> Result<String> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "insert into experiment (name, artifact_location, lifecycle_stage, creation_time, last_update_time) values ($1, '', 'active', $2, $2) returning experiment_id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get(0)?,
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(format!("Experiment(name={name}) already exists.")));
            }
            Err(e) => return Err(e.into()),
        };
        let location = match artifact_location.filter(|l| !l.is_empty()) {
            Some(l) => l.to_owned(),
            None => format!("mlflow-artifacts:/{id}"),
        };
        sqlx::query("update experiment set artifact_location = $1 where experiment_id = $2").bind(&location).bind(id).execute(&mut *tx).await?;
        for (k, v) in tags {
            sqlx::query("insert into experiment_tag (experiment_id, key, value) values ($1, $2, $3) on conflict (experiment_id, key) do update set value = excluded.value")
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id.to_string())
    }

    /// An experiment by id, with its tags.
    pub async fn get_experiment(&self, id: &str) -> Result<Experiment> {
        let not_found = || Error::NotFound(format!("No Experiment with id={id} exists"));
        let Ok(numeric) = id.trim().parse::<i64>() else { return Err(not_found()) };
        let row = sqlx::query(&format!("select {EXPERIMENT_COLUMNS} from experiment e where e.experiment_id = $1"))
            .bind(numeric)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(not_found)?;
        let mut exp = experiment_from_row(&row)?;
        self.attach_experiment_tags(std::slice::from_mut(&mut exp)).await?;
        Ok(exp)
    }

    /// An experiment by name, with its tags.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        let row = sqlx::query(&format!("select {EXPERIMENT_COLUMNS} from experiment e where e.name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Could not find experiment with name '{name}'")))?;
        let mut exp = experiment_from_row(&row)?;
        self.attach_experiment_tags(std::slice::from_mut(&mut exp)).await?;
        Ok(exp)
    }

    async fn attach_experiment_tags(&self, exps: &mut [Experiment]) -> Result<()> {
        if exps.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = exps.iter().filter_map(|e| e.experiment_id.parse().ok()).collect();
        let sql = format!(
            "select experiment_id, key, value from experiment_tag where experiment_id in ({}) order by experiment_id, key",
            self.in_list(ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&self.read).await? {
            let id: i64 = row.try_get(0)?;
            let id = id.to_string();
            if let Some(e) = exps.iter_mut().find(|e| e.experiment_id == id) {
                e.tags.push(Tag { key: row.try_get(1)?, value: row.try_get(2)? });
            }
        }
        Ok(())
    }

    /// Searches experiments with a parsed filter and order, one page at a time.
    pub async fn search_experiments(
        &self,
        filter: &[ExperimentClause],
        order: &[ExperimentOrder],
        view: ViewType,
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<ExperimentPage> {
        let offset = decode_offset_token(page_token)?;
        let where_frag = search_sql::experiment_filter_sql(filter, self.dialect, 1);
        let order_frag = search_sql::experiment_order_sql(order, self.dialect, 1 + where_frag.binds.len());
        let sql = format!(
            "select {EXPERIMENT_COLUMNS} from experiment e where 1 = 1{}{} order by {} limit {} offset {}",
            view.sql("e"),
            where_frag.sql,
            order_frag.sql,
            max_results + 1,
            offset
        );
        let q = bind_all(sqlx::query(&sql), &where_frag.binds);
        let q = bind_all(q, &order_frag.binds);
        let rows = q.fetch_all(&self.read).await?;
        let mut experiments = rows.iter().map(experiment_from_row).collect::<Result<Vec<_>>>()?;
        let next_page_token = super::next_offset_token(&mut experiments, max_results, offset);
        self.attach_experiment_tags(&mut experiments).await?;
        Ok(ExperimentPage { experiments, next_page_token })
    }

    /// Renames an experiment.
    pub async fn rename_experiment(&self, id: &str, new_name: &str) -> Result<()> {
        let exp = self.get_experiment(id).await?;
        if exp.lifecycle_stage != "active" {
            return Err(Error::Invalid(format!("Cannot rename a non-active experiment {id}.")));
        }
        let res = sqlx::query("update experiment set name = $1, last_update_time = $2 where experiment_id = $3")
            .bind(new_name)
            .bind(now_ms())
            .bind(parse_experiment_id(id)?)
            .execute(&self.write)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(format!("Experiment(name={new_name}) already exists."))),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks an experiment and its runs deleted (restorable), as MLflow does.
    pub async fn set_experiment_lifecycle(&self, id: &str, stage: &str) -> Result<()> {
        let exp = self.get_experiment(id).await?;
        if id.trim() == "0" && stage == "deleted" {
            return Err(Error::Invalid("Cannot delete the default experiment '0'.".into()));
        }
        let expected = if stage == "deleted" { "active" } else { "deleted" };
        if exp.lifecycle_stage != expected {
            return Err(Error::Invalid(format!("Cannot {} experiment {id}: it is '{}'.", if stage == "deleted" { "delete" } else { "restore" }, exp.lifecycle_stage)));
        }
        let numeric = parse_experiment_id(id)?;
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        sqlx::query("update experiment set lifecycle_stage = $1, last_update_time = $2 where experiment_id = $3")
            .bind(stage)
            .bind(now)
            .bind(numeric)
            .execute(&mut *tx)
            .await?;
        let deleted_time = if stage == "deleted" { Some(now) } else { None };
        sqlx::query("update run set lifecycle_stage = $1, deleted_time = $2 where experiment_id = $3")
            .bind(stage)
            .bind(deleted_time)
            .bind(numeric)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or replaces) an experiment tag.
    pub async fn set_experiment_tag(&self, id: &str, key: &str, value: &str) -> Result<()> {
        let exp = self.get_experiment(id).await?;
        if exp.lifecycle_stage != "active" {
            return Err(Error::Invalid(format!("The experiment {id} must be in the 'active' state. Current state is {}.", exp.lifecycle_stage)));
        }
        sqlx::query("insert into experiment_tag (experiment_id, key, value) values ($1, $2, $3) on conflict (experiment_id, key) do update set value = excluded.value")
            .bind(parse_experiment_id(id)?)
            .bind(key)
            .bind(value)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Deletes an experiment tag.
    pub async fn delete_experiment_tag(&self, id: &str, key: &str) -> Result<()> {
        self.get_experiment(id).await?;
        let res = sqlx::query("delete from experiment_tag where experiment_id = $1 and key = $2")
            .bind(parse_experiment_id(id)?)
            .bind(key)
            .execute(&self.write)
            .await?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound(format!("No tag with name: {key} in experiment with id {id}")));
        }
        Ok(())
    }
}
