//! Logged models (MLflow 3): `mlflow.<flavor>.log_model` creates one, uploads its files under its
//! own artifact root, then marks it ready.

use api::mlflow::{LoggedModel, LoggedModelData, LoggedModelInfo, Metric, Tag};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::experiments::parse_experiment_id;
use super::{decode_offset_token, now_ms, placeholders, Error, Result, Store};

/// The logged-model statuses MLflow knows.
pub const LOGGED_MODEL_STATUSES: [&str; 3] = ["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"];

/// One condition of a logged-model search: `attribute = 'value'` or `!=`.
///
/// The client itself only sends `name = '<x>'`; equality on the identifying attributes covers
/// what users write by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedModelCondition {
    /// A column: name, model_id, model_type, status or source_run_id.
    pub column: &'static str,
    /// `=` or `!=`.
    pub negated: bool,
    /// The value compared with.
    pub value: String,
}

/// Parses `name = 'x' AND status != 'y'` style logged-model filters.
pub fn parse_logged_model_filter(filter: &str) -> Result<Vec<LoggedModelCondition>> {
    let mut out = Vec::new();
    if filter.trim().is_empty() {
        return Ok(out);
    }
    let invalid = |m: String| Error::Invalid(format!("Invalid logged model filter '{filter}': {m}"));
    // Split on AND outside quotes.
    let mut clauses = Vec::new();
    let (mut cur, mut quote) = (String::new(), None::<char>);
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if (c == 'a' || c == 'A') && chars[i..].iter().take(3).collect::<String>().eq_ignore_ascii_case("and")
                && i > 0 && chars[i - 1].is_whitespace() && chars.get(i + 3).is_some_and(|c| c.is_whitespace()) =>
            {
                clauses.push(std::mem::take(&mut cur));
                i += 3;
                continue;
            }
            None => {}
        }
        cur.push(c);
        i += 1;
    }
    clauses.push(cur);
    for clause in clauses {
        let clause = clause.trim();
        let (lhs, negated, rhs) = if let Some((l, r)) = clause.split_once("!=") {
            (l, true, r)
        } else if let Some((l, r)) = clause.split_once('=') {
            (l, false, r)
        } else {
            return Err(invalid(format!("expected `attribute = 'value'` in '{clause}'")));
        };
        let attr = lhs.trim().trim_start_matches("attributes.").trim_matches('`');
        let column = match attr {
            "name" => "name",
            "model_id" => "model_id",
            "model_type" => "model_type",
            "status" => "status",
            "source_run_id" => "source_run_id",
            other => return Err(invalid(format!("unsupported attribute '{other}'"))),
        };
        let rhs = rhs.trim();
        let value = rhs
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| rhs.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
            .ok_or_else(|| invalid(format!("expected a quoted value in '{clause}'")))?;
        out.push(LoggedModelCondition { column, negated, value: value.to_owned() });
    }
    Ok(out)
}

const COLUMNS: &str = "model_id, experiment_id, name, artifact_location, status, source_run_id, model_type, creation_timestamp_ms, last_updated_timestamp_ms";

fn info_from_row(row: &AnyRow) -> Result<LoggedModelInfo> {
    Ok(LoggedModelInfo {
        model_id: row.try_get(0)?,
        experiment_id: row.try_get::<i64, _>(1)?.to_string(),
        name: row.try_get(2)?,
        artifact_uri: row.try_get(3)?,
        status: row.try_get(4)?,
        source_run_id: row.try_get(5)?,
        model_type: row.try_get::<Option<String>, _>(6)?.unwrap_or_default(),
        creation_timestamp_ms: row.try_get(7)?,
        last_updated_timestamp_ms: row.try_get(8)?,
        tags: Vec::new(),
    })
}

impl Store {
    /// Creates a pending logged model in an experiment.
    pub async fn create_logged_model(
        &self,
        experiment_id: &str,
        name: Option<&str>,
        source_run_id: Option<&str>,
        model_type: Option<&str>,
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<LoggedModel> {
        let exp = self.get_experiment(experiment_id).await?;
        if let Some(run) = source_run_id.filter(|r| !r.is_empty()) {
            self.get_run_info(run).await?;
        }
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let name = name.filter(|n| !n.is_empty()).map(str::to_owned).unwrap_or_else(|| model_id.clone());
        let location = format!("{}/models/{model_id}/artifacts", exp.artifact_location.trim_end_matches('/'));
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        sqlx::query(&format!("insert into logged_model ({COLUMNS}) values ($1, $2, $3, $4, 'LOGGED_MODEL_PENDING', $5, $6, $7, $7)"))
            .bind(&model_id)
            .bind(parse_experiment_id(experiment_id)?)
            .bind(&name)
            .bind(&location)
            .bind(source_run_id.filter(|r| !r.is_empty()))
            .bind(model_type.unwrap_or(""))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for (k, v) in params {
            sqlx::query("insert into logged_model_param (model_id, key, value) values ($1, $2, $3) on conflict (model_id, key) do update set value = excluded.value")
                .bind(&model_id).bind(k).bind(v).execute(&mut *tx).await?;
        }
        for (k, v) in tags {
            sqlx::query("insert into logged_model_tag (model_id, key, value) values ($1, $2, $3) on conflict (model_id, key) do update set value = excluded.value")
                .bind(&model_id).bind(k).bind(v).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.get_logged_model(&model_id).await
    }

    /// A logged model with tags, params and the metrics logged against it.
    pub async fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel> {
        let row = sqlx::query(&format!("select {COLUMNS} from logged_model where model_id = $1 and lifecycle_stage = 'active'"))
            .bind(model_id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Logged model with ID '{model_id}' not found.")))?;
        let info = info_from_row(&row)?;
        Ok(self.hydrate_logged_models(vec![info]).await?.remove(0))
    }

    async fn hydrate_logged_models(&self, infos: Vec<LoggedModelInfo>) -> Result<Vec<LoggedModel>> {
        let mut models: Vec<LoggedModel> = infos.into_iter().map(|info| LoggedModel { info, data: LoggedModelData::default() }).collect();
        if models.is_empty() {
            return Ok(models);
        }
        let ids: Vec<String> = models.iter().map(|m| m.info.model_id.clone()).collect();
        let list = self.in_list(ids.len());
        let position = |id: &str| models.iter().position(|m| m.info.model_id == id);
        let mut found = Vec::new();
        for (table, is_tag) in [("logged_model_tag", true), ("logged_model_param", false)] {
            let sql = format!("select model_id, key, value from {table} where model_id in ({list}) order by key");
            let mut q = sqlx::query(&sql);
            for id in &ids {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.read).await? {
                let id: String = row.try_get(0)?;
                found.push((id, is_tag, Tag { key: row.try_get(1)?, value: row.try_get(2)? }));
            }
        }
        let mut metric_rows = Vec::new();
        let sql = format!("select model_id, key, value, is_nan, timestamp, step, run_uuid, dataset_name, dataset_digest from metric where model_id in ({list}) order by key, timestamp, step");
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        for row in q.fetch_all(&self.read).await? {
            let is_nan: i64 = row.try_get(3)?;
            let id: String = row.try_get(0)?;
            metric_rows.push((
                id.clone(),
                Metric {
                    key: row.try_get(1)?,
                    value: if is_nan != 0 { f64::NAN } else { row.try_get(2)? },
                    timestamp: row.try_get(4)?,
                    step: row.try_get(5)?,
                    run_id: Some(row.try_get(6)?),
                    dataset_name: row.try_get(7)?,
                    dataset_digest: row.try_get(8)?,
                    model_id: Some(id),
                },
            ));
        }
        let mut placed: Vec<(usize, bool, Tag)> = found.into_iter().filter_map(|(id, t, tag)| position(&id).map(|i| (i, t, tag))).collect();
        let metrics: Vec<(usize, Metric)> = metric_rows.into_iter().filter_map(|(id, m)| position(&id).map(|i| (i, m))).collect();
        for (i, is_tag, tag) in placed.drain(..) {
            if is_tag {
                models[i].info.tags.push(tag);
            } else {
                models[i].data.params.push(tag);
            }
        }
        for (i, m) in metrics {
            models[i].data.metrics.push(m);
        }
        Ok(models)
    }

    /// Sets a logged model's status (finalize).
    pub async fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<LoggedModel> {
        self.get_logged_model(model_id).await?;
        sqlx::query("update logged_model set status = $1, last_updated_timestamp_ms = $2 where model_id = $3")
            .bind(status)
            .bind(now_ms())
            .bind(model_id)
            .execute(&self.write)
            .await?;
        self.get_logged_model(model_id).await
    }

    /// Sets tags on a logged model.
    pub async fn set_logged_model_tags(&self, model_id: &str, tags: &[(String, String)]) -> Result<()> {
        self.get_logged_model(model_id).await?;
        let mut tx = self.write.begin().await?;
        for (k, v) in tags {
            sqlx::query("insert into logged_model_tag (model_id, key, value) values ($1, $2, $3) on conflict (model_id, key) do update set value = excluded.value")
                .bind(model_id).bind(k).bind(v).execute(&mut *tx).await?;
        }
        sqlx::query("update logged_model set last_updated_timestamp_ms = $1 where model_id = $2").bind(now_ms()).bind(model_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes one tag of a logged model.
    pub async fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<()> {
        self.get_logged_model(model_id).await?;
        let res = sqlx::query("delete from logged_model_tag where model_id = $1 and key = $2").bind(model_id).bind(key).execute(&self.write).await?;
        if res.rows_affected() == 0 {
            return Err(Error::NotFound(format!("No tag with key '{key}' on logged model '{model_id}'")));
        }
        Ok(())
    }

    /// Marks a logged model deleted.
    pub async fn delete_logged_model(&self, model_id: &str) -> Result<()> {
        self.get_logged_model(model_id).await?;
        sqlx::query("update logged_model set lifecycle_stage = 'deleted', last_updated_timestamp_ms = $1 where model_id = $2")
            .bind(now_ms())
            .bind(model_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Searches logged models of some experiments, newest first.
    pub async fn search_logged_models(
        &self,
        experiment_ids: &[String],
        filter: &[LoggedModelCondition],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<(Vec<LoggedModel>, Option<String>)> {
        let offset = decode_offset_token(page_token)?;
        let ids = experiment_ids.iter().map(|id| parse_experiment_id(id)).collect::<Result<Vec<_>>>()?;
        if ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut sql = format!("select {COLUMNS} from logged_model where lifecycle_stage = 'active' and experiment_id in ({})", placeholders(1, ids.len()));
        for (i, c) in filter.iter().enumerate() {
            sql.push_str(&format!(" and {} {} ${}", c.column, if c.negated { "!=" } else { "=" }, ids.len() + 1 + i));
        }
        sql.push_str(&format!(" order by creation_timestamp_ms desc, model_id limit {} offset {offset}", max_results + 1));
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(*id);
        }
        for c in filter {
            q = q.bind(&c.value);
        }
        let rows = q.fetch_all(&self.read).await?;
        let mut infos = rows.iter().map(info_from_row).collect::<Result<Vec<_>>>()?;
        let next = super::next_offset_token(&mut infos, max_results, offset);
        Ok((self.hydrate_logged_models(infos).await?, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_model_filters_parse() {
        let f = parse_logged_model_filter("name = 'a and b' AND status != \"LOGGED_MODEL_READY\"").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], LoggedModelCondition { column: "name", negated: false, value: "a and b".into() });
        assert!(f[1].negated);
        assert!(parse_logged_model_filter("metrics.x > 1").is_err());
        assert!(parse_logged_model_filter("name = unquoted").is_err());
        assert!(parse_logged_model_filter("").unwrap().is_empty());
    }
}
