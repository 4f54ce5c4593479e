//! The model registry: registered models, versions, tags, aliases and legacy stages.
//!
//! Every change runs in one transaction, so a refused request changes nothing. Search results are
//! hydrated with tags, aliases and latest versions in a fixed number of queries per page, never
//! one query per entity.

use std::collections::HashMap;

use api::mlflow::{ModelVersion, RegisteredModel, RegisteredModelAlias, Tag};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Action, Change, ChangeBy};
use super::search_sql::{bind_all, registry_filter_sql, registry_order_sql};
use super::{decode_offset_token, is_unique_violation, next_offset_token, now_ms, Error, Result, Store};
use crate::search::{RegistryClause, RegistryEntity, RegistryOrder};

/// The legacy stages, in MLflow's spelling.
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

/// A stage name in MLflow's canonical spelling; the client sends any case.
pub fn canonical_stage(stage: &str) -> Result<&'static str> {
    STAGES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(stage.trim()))
        .copied()
        .ok_or_else(|| Error::Invalid(format!("Invalid Model Version stage: {stage}. Value must be one of {}.", STAGES.join(", "))))
}

/// What a new model version is made of.
#[derive(Debug, Default, Clone)]
pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    pub run_id: Option<String>,
    pub run_link: Option<String>,
    pub description: Option<String>,
    pub model_id: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// One page of registry search results.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

const MODEL_COLUMNS: &str = "rm.name, rm.creation_timestamp, rm.last_updated_timestamp, rm.description, rm.user_id";
const VERSION_COLUMNS: &str = "mv.name, mv.version, mv.creation_timestamp, mv.last_updated_timestamp, mv.user_id, mv.current_stage, \
     mv.description, mv.source, mv.run_id, mv.status, mv.run_link, mv.model_id";

fn model_from_row(row: &AnyRow) -> Result<RegisteredModel> {
    Ok(RegisteredModel {
        name: row.try_get(0)?,
        creation_timestamp: row.try_get(1)?,
        last_updated_timestamp: row.try_get(2)?,
        description: row.try_get(3)?,
        user_id: row.try_get(4)?,
        latest_versions: Vec::new(),
        tags: Vec::new(),
        aliases: Vec::new(),
    })
}

fn version_from_row(row: &AnyRow) -> Result<ModelVersion> {
    Ok(ModelVersion {
        name: row.try_get(0)?,
        version: row.try_get::<i64, _>(1)?.to_string(),
        creation_timestamp: row.try_get(2)?,
        last_updated_timestamp: row.try_get(3)?,
        user_id: row.try_get(4)?,
        current_stage: row.try_get(5)?,
        description: row.try_get(6)?,
        source: row.try_get(7)?,
        run_id: row.try_get(8)?,
        status: row.try_get(9)?,
        run_link: row.try_get(10)?,
        tags: Vec::new(),
        aliases: Vec::new(),
        model_id: row.try_get(11)?,
    })
}

fn model_not_found(name: &str) -> Error {
    Error::NotFound(format!("Registered Model with name={name} not found"))
}

fn version_not_found(name: &str, version: &str) -> Error {
    Error::NotFound(format!("Model Version (name={name}, version={version}) not found"))
}

/// A version number as the registry stores it; anything that is not a positive integer cannot exist.
pub fn parse_version(name: &str, version: &str) -> Result<i64> {
    match version.trim().parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(Error::Invalid(format!("Parameter 'version' must be a positive integer, got '{version}' (model '{name}')"))),
    }
}

impl Store {
    /// Creates a registered model with its tags.
    pub async fn create_registered_model(&self, name: &str, description: Option<&str>, tags: &[(String, String)]) -> Result<RegisteredModel> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "insert into registered_model (name, creation_timestamp, last_updated_timestamp, description) values ($1, $2, $2, $3)",
        )
        .bind(name)
        .bind(now)
        .bind(description.unwrap_or(""))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(format!("Registered Model (name={name}) already exists.")));
            }
            Err(e) => return Err(e.into()),
        }
        for (k, v) in tags {
            upsert_model_tag(&mut tx, name, k, v).await?;
        }
        tx.commit().await?;
        self.get_registered_model(name).await
    }

    /// A registered model with its tags, aliases and the latest version of each stage.
    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        let row = sqlx::query(&format!("select {MODEL_COLUMNS} from registered_model rm where rm.name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| model_not_found(name))?;
        let mut models = vec![model_from_row(&row)?];
        self.hydrate_models(&mut models).await?;
        Ok(models.pop().expect("one model"))
    }

    /// Renames a registered model and everything that refers to it by name.
    pub async fn rename_registered_model(&self, name: &str, new_name: &str) -> Result<RegisteredModel> {
        let mut tx = self.write.begin().await?;
        let exists = sqlx::query("select 1 from registered_model where name = $1").bind(name).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(model_not_found(name));
        }
        let taken = sqlx::query("select 1 from registered_model where name = $1").bind(new_name).fetch_optional(&mut *tx).await?;
        if taken.is_some() {
            return Err(Error::AlreadyExists(format!("Registered Model (name={new_name}) already exists.")));
        }
        sqlx::query("update registered_model set name = $1, last_updated_timestamp = $2 where name = $3")
            .bind(new_name)
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for table in ["registered_model_tag", "model_version", "model_version_tag", "registered_model_alias", "registered_model_promotion_rules", "webhook"] {
            sqlx::query(&format!("update {table} set name = $1 where name = $2")).bind(new_name).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.get_registered_model(new_name).await
    }

    /// Sets a registered model's description.
    pub async fn update_registered_model(&self, name: &str, description: &str) -> Result<RegisteredModel> {
        let done = sqlx::query("update registered_model set description = $1, last_updated_timestamp = $2 where name = $3")
            .bind(description)
            .bind(now_ms())
            .bind(name)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(model_not_found(name));
        }
        self.get_registered_model(name).await
    }

    /// Deletes a registered model with all its versions, tags and aliases.
    pub async fn delete_registered_model(&self, name: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("delete from registered_model where name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(model_not_found(name));
        }
        // The model's own webhooks go with it; what they had pending will never be sent.
        sqlx::query("update webhook_delivery set state = 'cancelled', updated_at = $1 where state = 'pending' and webhook_id in (select id from webhook where name = $2)")
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for table in ["registered_model_tag", "model_version", "model_version_tag", "registered_model_alias", "registered_model_promotion_rules", "webhook"] {
            sqlx::query(&format!("delete from {table} where name = $1")).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or overwrites) a tag of a registered model.
    pub async fn set_registered_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        ensure_model(&mut tx, name).await?;
        upsert_model_tag(&mut tx, name, key, value).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a tag of a registered model; the tag must exist.
    pub async fn delete_registered_model_tag(&self, name: &str, key: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        ensure_model(&mut tx, name).await?;
        let done = sqlx::query("delete from registered_model_tag where name = $1 and key = $2").bind(name).bind(key).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("No tag with name: {key} in registered model '{name}'")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Searches registered models, hydrated with tags, aliases and latest versions.
    pub async fn search_registered_models(
        &self,
        clauses: &[RegistryClause],
        orders: &[RegistryOrder],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<Page<RegisteredModel>> {
        let offset = decode_offset_token(page_token)?;
        let filter = registry_filter_sql(clauses, RegistryEntity::RegisteredModel, self.dialect, 1);
        let next = filter.binds.len() + 1;
        let sql = format!(
            "select {MODEL_COLUMNS} from registered_model rm where 1 = 1{} order by {} limit ${next} offset ${}",
            filter.sql,
            registry_order_sql(orders, RegistryEntity::RegisteredModel),
            next + 1
        );
        // One extra row tells whether another page exists.
        let rows = bind_all(sqlx::query(&sql), &filter.binds).bind(max_results + 1).bind(offset).fetch_all(&self.read).await?;
        let mut models = rows.iter().map(model_from_row).collect::<Result<Vec<_>>>()?;
        let next_page_token = next_offset_token(&mut models, max_results, offset);
        self.hydrate_models(&mut models).await?;
        Ok(Page { items: models, next_page_token })
    }

    /// Creates the next version of a registered model, READY at once. A `runs:/<run>/<path>`
    /// source naming a logged model of that run, or a `models:/m-...` source, records the logged
    /// model's id and its source run.
    pub async fn create_model_version(&self, new: NewModelVersion) -> Result<ModelVersion> {
        let now = now_ms();
        let (model_id, logged_run) = self.logged_model_of_source(&new.source, new.model_id.as_deref()).await?;
        let run_id = new.run_id.clone().filter(|r| !r.is_empty()).or(logged_run).unwrap_or_default();
        let mut tx = self.write.begin().await?;
        let row = sqlx::query("update registered_model set last_version = last_version + 1, last_updated_timestamp = $1 where name = $2 returning last_version")
            .bind(now)
            .bind(&new.name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| model_not_found(&new.name))?;
        let version: i64 = row.try_get(0)?;
        sqlx::query(
            "insert into model_version (name, version, creation_timestamp, last_updated_timestamp, description, source, run_id, run_link, model_id) \
             values ($1, $2, $3, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.name)
        .bind(version)
        .bind(now)
        .bind(new.description.as_deref().unwrap_or(""))
        .bind(&new.source)
        .bind(&run_id)
        .bind(new.run_link.as_deref().unwrap_or(""))
        .bind(model_id.as_deref().unwrap_or(""))
        .execute(&mut *tx)
        .await?;
        for (k, v) in &new.tags {
            upsert_version_tag(&mut tx, &new.name, version, k, v).await?;
        }
        tx.commit().await?;
        self.get_model_version(&new.name, &version.to_string()).await
    }

    /// A version with its tags and aliases.
    pub async fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        let number = parse_version(name, version)?;
        let row = sqlx::query(&format!("select {VERSION_COLUMNS} from model_version mv where mv.name = $1 and mv.version = $2"))
            .bind(name)
            .bind(number)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| version_not_found(name, version))?;
        let mut versions = vec![version_from_row(&row)?];
        self.hydrate_versions(&mut versions).await?;
        Ok(versions.pop().expect("one version"))
    }

    /// Sets a version's description.
    pub async fn update_model_version(&self, name: &str, version: &str, description: &str) -> Result<ModelVersion> {
        let number = parse_version(name, version)?;
        let done = sqlx::query("update model_version set description = $1, last_updated_timestamp = $2 where name = $3 and version = $4")
            .bind(description)
            .bind(now_ms())
            .bind(name)
            .bind(number)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(version_not_found(name, version));
        }
        self.get_model_version(name, version).await
    }

    /// Deletes a version, its tags and the aliases that pointed at it. Its number is not reused.
    pub async fn delete_model_version(&self, name: &str, version: &str) -> Result<()> {
        let number = parse_version(name, version)?;
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("delete from model_version where name = $1 and version = $2").bind(name).bind(number).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(version_not_found(name, version));
        }
        for table in ["model_version_tag", "registered_model_alias"] {
            sqlx::query(&format!("delete from {table} where name = $1 and version = $2")).bind(name).bind(number).execute(&mut *tx).await?;
        }
        sqlx::query("update registered_model set last_updated_timestamp = $1 where name = $2").bind(now_ms()).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a version to a legacy stage; with `archive_existing`, the other versions in a
    /// Staging or Production target stage move to Archived in the same transaction.
    pub async fn transition_model_version_stage(&self, name: &str, version: &str, stage: &str, archive_existing: bool, by: &ChangeBy) -> Result<ModelVersion> {
        let number = parse_version(name, version)?;
        let stage = canonical_stage(stage)?;
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let before = sqlx::query("select current_stage from model_version where name = $1 and version = $2").bind(name).bind(number).fetch_optional(&mut *tx).await?;
        let from_stage: String = match before {
            Some(row) => row.try_get(0)?,
            None => return Err(version_not_found(name, version)),
        };
        let done = sqlx::query("update model_version set current_stage = $1, last_updated_timestamp = $2 where name = $3 and version = $4")
            .bind(stage)
            .bind(now)
            .bind(name)
            .bind(number)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(version_not_found(name, version));
        }
        record(&mut tx, name, Action::TransitionStage, Change { version: number, from_stage: &from_stage, to_stage: stage, ..Default::default() }, by).await?;
        if archive_existing && matches!(stage, "Staging" | "Production") {
            let archived = sqlx::query("select version from model_version where name = $1 and current_stage = $2 and version <> $3 order by version")
                .bind(name)
                .bind(stage)
                .bind(number)
                .fetch_all(&mut *tx)
                .await?;
            for row in archived {
                let other: i64 = row.try_get(0)?;
                record(&mut tx, name, Action::ArchiveExisting, Change { version: other, from_stage: stage, to_stage: "Archived", ..Default::default() }, by).await?;
            }
            sqlx::query("update model_version set current_stage = 'Archived', last_updated_timestamp = $1 where name = $2 and current_stage = $3 and version <> $4")
                .bind(now)
                .bind(name)
                .bind(stage)
                .bind(number)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("update registered_model set last_updated_timestamp = $1 where name = $2").bind(now).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        self.get_model_version(name, version).await
    }

    /// The newest version in each of `stages` (every stage when empty), ordered by stage.
    pub async fn get_latest_versions(&self, name: &str, stages: &[String]) -> Result<Vec<ModelVersion>> {
        let wanted = stages.iter().map(|s| canonical_stage(s)).collect::<Result<Vec<_>>>()?;
        let model = self.get_registered_model(name).await?;
        Ok(model.latest_versions.into_iter().filter(|v| wanted.is_empty() || wanted.contains(&v.current_stage.as_str())).collect())
    }

    /// Searches model versions, hydrated with tags and aliases.
    pub async fn search_model_versions(
        &self,
        clauses: &[RegistryClause],
        orders: &[RegistryOrder],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<Page<ModelVersion>> {
        let offset = decode_offset_token(page_token)?;
        let filter = registry_filter_sql(clauses, RegistryEntity::ModelVersion, self.dialect, 1);
        let next = filter.binds.len() + 1;
        let sql = format!(
            "select {VERSION_COLUMNS} from model_version mv where 1 = 1{} order by {} limit ${next} offset ${}",
            filter.sql,
            registry_order_sql(orders, RegistryEntity::ModelVersion),
            next + 1
        );
        let rows = bind_all(sqlx::query(&sql), &filter.binds).bind(max_results + 1).bind(offset).fetch_all(&self.read).await?;
        let mut versions = rows.iter().map(version_from_row).collect::<Result<Vec<_>>>()?;
        let next_page_token = next_offset_token(&mut versions, max_results, offset);
        self.hydrate_versions(&mut versions).await?;
        Ok(Page { items: versions, next_page_token })
    }

    /// The oldest version of model `name` carrying the tag `key = value`, if any.
    pub async fn find_model_version_by_tag(&self, name: &str, key: &str, value: &str) -> Result<Option<ModelVersion>> {
        let row = sqlx::query("select version from model_version_tag where name = $1 and key = $2 and value = $3 order by version limit 1")
            .bind(name)
            .bind(key)
            .bind(value)
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(row) => {
                let version: i64 = row.try_get(0)?;
                Ok(Some(self.get_model_version(name, &version.to_string()).await?))
            }
            None => Ok(None),
        }
    }

    /// Sets (or overwrites) a tag of a version.
    pub async fn set_model_version_tag(&self, name: &str, version: &str, key: &str, value: &str) -> Result<()> {
        let number = parse_version(name, version)?;
        let mut tx = self.write.begin().await?;
        ensure_version(&mut tx, name, number, version).await?;
        upsert_version_tag(&mut tx, name, number, key, value).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a tag of a version; the tag must exist.
    pub async fn delete_model_version_tag(&self, name: &str, version: &str, key: &str) -> Result<()> {
        let number = parse_version(name, version)?;
        let mut tx = self.write.begin().await?;
        ensure_version(&mut tx, name, number, version).await?;
        let done = sqlx::query("delete from model_version_tag where name = $1 and version = $2 and key = $3")
            .bind(name)
            .bind(number)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("No tag with name: {key} in model version (name={name}, version={version})")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points `alias` at a version, moving it if it pointed elsewhere.
    pub async fn set_registered_model_alias(&self, name: &str, alias: &str, version: &str, by: &ChangeBy) -> Result<()> {
        let number = parse_version(name, version)?;
        let mut tx = self.write.begin().await?;
        ensure_version(&mut tx, name, number, version).await?;
        let holder = alias_holder(&mut tx, name, alias).await?;
        put_alias(&mut tx, name, alias, number).await?;
        record(&mut tx, name, Action::SetAlias, Change { alias, from_version: holder, to_version: Some(number), ..Default::default() }, by).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes an alias; the model must exist, a missing alias is not an error (as in MLflow).
    pub async fn delete_registered_model_alias(&self, name: &str, alias: &str, by: &ChangeBy) -> Result<()> {
        let mut tx = self.write.begin().await?;
        ensure_model(&mut tx, name).await?;
        let holder = alias_holder(&mut tx, name, alias).await?;
        sqlx::query("delete from registered_model_alias where name = $1 and alias = $2").bind(name).bind(alias).execute(&mut *tx).await?;
        if holder.is_some() {
            record(&mut tx, name, Action::DeleteAlias, Change { alias, from_version: holder, to_version: None, ..Default::default() }, by).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The version an alias points at; the reserved alias `latest` is the newest version.
    pub async fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let sql = if alias.eq_ignore_ascii_case("latest") {
            "select max(version) from model_version where name = $1 having max(version) is not null"
        } else {
            "select version from registered_model_alias where name = $1 and alias = $2"
        };
        let mut query = sqlx::query(sql).bind(name);
        if !alias.eq_ignore_ascii_case("latest") {
            query = query.bind(alias);
        }
        let row = query
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Registered model alias {alias} not found.")))?;
        let version: i64 = row.try_get(0)?;
        self.get_model_version(name, &version.to_string()).await
    }

    /// Where a version's files are, as an artifact URI the client can download from. A version
    /// copied from another (`models:/NAME/VERSION`) resolves to where that one's files are.
    pub async fn get_model_version_download_uri(&self, name: &str, version: &str) -> Result<String> {
        let mut current = (name.to_owned(), version.to_owned());
        // Bounded: copies of copies resolve, a cycle cannot loop forever.
        for _ in 0..8 {
            let uri = self.direct_download_uri(&current.0, &current.1).await?;
            match split_models_uri(&uri) {
                Some((n, v)) => current = (n.to_owned(), v.to_owned()),
                None => return Ok(uri),
            }
        }
        Err(Error::Invalid(format!("Model version source of {name} v{version} refers to other versions too deeply")))
    }

    async fn direct_download_uri(&self, name: &str, version: &str) -> Result<String> {
        let mv = self.get_model_version(name, version).await?;
        if !mv.model_id.is_empty() {
            if let Some(row) = sqlx::query("select artifact_location from logged_model where model_id = $1").bind(&mv.model_id).fetch_optional(&self.read).await? {
                return Ok(row.try_get(0)?);
            }
        }
        if let Some((run_id, path)) = split_runs_uri(&mv.source) {
            let row = sqlx::query("select artifact_uri from run where run_uuid = $1").bind(run_id).fetch_optional(&self.read).await?;
            if let Some(row) = row {
                let root: String = row.try_get(0)?;
                return Ok(if path.is_empty() { root } else { format!("{}/{path}", root.trim_end_matches('/')) });
            }
        }
        Ok(mv.source)
    }

    /// The logged model a version source refers to, and that model's source run.
    async fn logged_model_of_source(&self, source: &str, explicit_model_id: Option<&str>) -> Result<(Option<String>, Option<String>)> {
        let by_id = "select model_id, source_run_id from logged_model where model_id = $1";
        let explicit = explicit_model_id.filter(|m| !m.is_empty());
        let logged_id = source.strip_prefix("models:/").filter(|rest| rest.starts_with("m-") && !rest.contains('/'));
        let row = if let Some(id) = explicit.or(logged_id) {
            sqlx::query(by_id).bind(id).fetch_optional(&self.read).await?
        } else if let Some((run_id, path)) = split_runs_uri(source) {
            // MLflow 3 logs `runs:/<run>/<name>` models as logged models named <name> of that run.
            sqlx::query("select model_id, source_run_id from logged_model where source_run_id = $1 and name = $2 order by creation_timestamp_ms desc limit 1")
                .bind(run_id)
                .bind(path)
                .fetch_optional(&self.read)
                .await?
        } else {
            None
        };
        match row {
            Some(row) => Ok((Some(row.try_get(0)?), row.try_get::<Option<String>, _>(1)?)),
            None => Ok((explicit_model_id.filter(|m| !m.is_empty()).map(str::to_owned), None)),
        }
    }

    /// Fills tags, aliases and latest versions of `models` with three queries.
    async fn hydrate_models(&self, models: &mut [RegisteredModel]) -> Result<()> {
        if models.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let list = self.in_list(names.len());
        let mut tags: HashMap<String, Vec<Tag>> = HashMap::new();
        let sql = format!("select name, key, value from registered_model_tag where name in ({list}) order by name, key");
        for row in bind_names(sqlx::query(&sql), &names).fetch_all(&self.read).await? {
            tags.entry(row.try_get(0)?).or_default().push(Tag { key: row.try_get(1)?, value: row.try_get(2)? });
        }
        let mut aliases: HashMap<String, Vec<RegisteredModelAlias>> = HashMap::new();
        let sql = format!("select name, alias, version from registered_model_alias where name in ({list}) order by name, alias");
        for row in bind_names(sqlx::query(&sql), &names).fetch_all(&self.read).await? {
            let version: i64 = row.try_get(2)?;
            aliases.entry(row.try_get(0)?).or_default().push(RegisteredModelAlias { alias: row.try_get(1)?, version: version.to_string() });
        }
        // The newest version of each (model, stage) pair.
        let sql = format!(
            "select {VERSION_COLUMNS} from model_version mv where mv.name in ({list}) and mv.version = \
             (select max(v2.version) from model_version v2 where v2.name = mv.name and v2.current_stage = mv.current_stage) \
             order by mv.name, mv.current_stage"
        );
        let mut latest: HashMap<String, Vec<ModelVersion>> = HashMap::new();
        for row in bind_names(sqlx::query(&sql), &names).fetch_all(&self.read).await? {
            let v = version_from_row(&row)?;
            latest.entry(v.name.clone()).or_default().push(v);
        }
        for m in models.iter_mut() {
            m.tags = tags.remove(&m.name).unwrap_or_default();
            m.aliases = aliases.remove(&m.name).unwrap_or_default();
            m.latest_versions = latest.remove(&m.name).unwrap_or_default();
            m.latest_versions.sort_by_key(|v| STAGES.iter().position(|s| *s == v.current_stage));
            let by_version: Vec<(String, String)> = m.aliases.iter().map(|a| (a.version.clone(), a.alias.clone())).collect();
            for v in m.latest_versions.iter_mut() {
                v.aliases = by_version.iter().filter(|(ver, _)| *ver == v.version).map(|(_, a)| a.clone()).collect();
            }
        }
        Ok(())
    }

    /// Fills tags and aliases of `versions` with two queries.
    async fn hydrate_versions(&self, versions: &mut [ModelVersion]) -> Result<()> {
        if versions.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let list = self.in_list(names.len());
        let mut tags: HashMap<(String, i64), Vec<Tag>> = HashMap::new();
        let sql = format!("select name, version, key, value from model_version_tag where name in ({list}) order by name, version, key");
        for row in bind_names(sqlx::query(&sql), &names).fetch_all(&self.read).await? {
            tags.entry((row.try_get(0)?, row.try_get(1)?)).or_default().push(Tag { key: row.try_get(2)?, value: row.try_get(3)? });
        }
        let mut aliases: HashMap<(String, i64), Vec<String>> = HashMap::new();
        let sql = format!("select name, version, alias from registered_model_alias where name in ({list}) order by name, alias");
        for row in bind_names(sqlx::query(&sql), &names).fetch_all(&self.read).await? {
            aliases.entry((row.try_get(0)?, row.try_get(1)?)).or_default().push(row.try_get(2)?);
        }
        for v in versions.iter_mut() {
            let key = (v.name.clone(), v.version.parse::<i64>().unwrap_or_default());
            v.tags = tags.remove(&key).unwrap_or_default();
            v.aliases = aliases.remove(&key).unwrap_or_default();
        }
        Ok(())
    }
}

/// Splits `models:/<name>/<version>` (a registered version, not a logged model `models:/m-...`).
fn split_models_uri(source: &str) -> Option<(&str, &str)> {
    let (name, version) = source.strip_prefix("models:/")?.rsplit_once('/')?;
    (!name.is_empty() && version.parse::<i64>().is_ok()).then_some((name, version))
}

/// Checks a new version's source as MLflow's server does: a `runs:/` source must name the
/// version's run, a `models:/m-...` source its logged model, and no source may be a local path
/// or climb out of its folder with `..`.
pub fn validate_version_source(source: &str, run_id: Option<&str>, model_id: Option<&str>) -> Result<()> {
    let invalid = |why: &str| Err(Error::Invalid(format!("Invalid model version source: '{source}'. {why}")));
    if source.split(['/', '\\']).any(|part| part == "..") || source.contains("%2e%2e") || source.contains("%2E%2E") {
        return invalid("A source may not contain '..'.");
    }
    let run_id = run_id.filter(|r| !r.is_empty());
    let model_id = model_id.filter(|m| !m.is_empty());
    if let Some((run, _)) = split_runs_uri(source) {
        if run_id != Some(run) {
            return invalid("A runs:/ source needs the request's run_id to name the same run.");
        }
        return Ok(());
    }
    if let Some(id) = source.strip_prefix("models:/").filter(|rest| rest.starts_with("m-") && !rest.contains('/')) {
        if model_id != Some(id) {
            return invalid("A models:/m-... source needs the request's model_id to name the same logged model.");
        }
        return Ok(());
    }
    let has_scheme = source.split_once("://").is_some_and(|(scheme, _)| !scheme.is_empty() && scheme != "file")
        || source.starts_with("models:/")
        || source.starts_with("mlflow-artifacts:/");
    if !has_scheme {
        return invalid("Local paths are not accepted as sources; log the model to the run or upload it as an artifact.");
    }
    Ok(())
}

/// Splits `runs:/<run_id>/<path>` into its parts.
fn split_runs_uri(source: &str) -> Option<(&str, &str)> {
    let rest = source.strip_prefix("runs:/")?;
    let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
    (!run_id.is_empty()).then_some((run_id, path.trim_matches('/')))
}

fn bind_names<'q>(mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>, names: &[&str]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for n in names {
        q = q.bind(n.to_string());
    }
    q
}

/// The version an alias points at now, inside a transaction.
pub(super) async fn alias_holder(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, alias: &str) -> Result<Option<i64>> {
    let row = sqlx::query("select version from registered_model_alias where name = $1 and alias = $2").bind(name).bind(alias).fetch_optional(&mut **tx).await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// Points an alias at an existing version and touches the model.
pub(super) async fn put_alias(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, alias: &str, number: i64) -> Result<()> {
    sqlx::query("insert into registered_model_alias (name, alias, version) values ($1, $2, $3) on conflict (name, alias) do update set version = excluded.version")
        .bind(name)
        .bind(alias)
        .bind(number)
        .execute(&mut **tx)
        .await?;
    sqlx::query("update registered_model set last_updated_timestamp = $1 where name = $2").bind(now_ms()).bind(name).execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn ensure_model(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str) -> Result<()> {
    let found = sqlx::query("select 1 from registered_model where name = $1").bind(name).fetch_optional(&mut **tx).await?;
    found.map(|_| ()).ok_or_else(|| model_not_found(name))
}

pub(super) async fn ensure_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, number: i64, version: &str) -> Result<()> {
    ensure_model(tx, name).await?;
    let found = sqlx::query("select 1 from model_version where name = $1 and version = $2").bind(name).bind(number).fetch_optional(&mut **tx).await?;
    found.map(|_| ()).ok_or_else(|| version_not_found(name, version))
}

async fn upsert_model_tag(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, key: &str, value: &str) -> Result<()> {
    sqlx::query("insert into registered_model_tag (name, key, value) values ($1, $2, $3) on conflict (name, key) do update set value = excluded.value")
        .bind(name)
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_version_tag(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, version: i64, key: &str, value: &str) -> Result<()> {
    sqlx::query(
        "insert into model_version_tag (name, version, key, value) values ($1, $2, $3, $4) on conflict (name, version, key) do update set value = excluded.value",
    )
    .bind(name)
    .bind(version)
    .bind(key)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_canonicalised_and_checked() {
        assert_eq!(canonical_stage("production").unwrap(), "Production");
        assert_eq!(canonical_stage(" none ").unwrap(), "None");
        assert!(canonical_stage("Deployed").unwrap_err().to_string().contains("Staging"));
    }

    #[test]
    fn runs_uris_split_into_run_and_path() {
        assert_eq!(split_runs_uri("runs:/abc/model"), Some(("abc", "model")));
        assert_eq!(split_runs_uri("runs:/abc/a/b/"), Some(("abc", "a/b")));
        assert_eq!(split_runs_uri("runs:/abc"), Some(("abc", "")));
        assert_eq!(split_runs_uri("s3://b/k"), None);
    }

    #[test]
    fn version_sources_must_match_their_run_or_model_and_stay_remote() {
        assert!(validate_version_source("runs:/r1/model", Some("r1"), None).is_ok());
        assert!(validate_version_source("runs:/r1/model", Some("r2"), None).is_err());
        assert!(validate_version_source("runs:/r1/model", None, None).is_err());
        assert!(validate_version_source("models:/m-a", None, Some("m-a")).is_ok());
        assert!(validate_version_source("models:/m-a", None, Some("m-b")).is_err());
        assert!(validate_version_source("models:/m-a", None, None).is_err());
        assert!(validate_version_source("models:/other/3", None, None).is_ok());
        assert!(validate_version_source("s3://bucket/adapter", None, None).is_ok());
        assert!(validate_version_source("mlflow-artifacts:/1/r/artifacts/model", None, None).is_ok());
        assert!(validate_version_source("mlflow-artifacts:/1/r/artifacts/../../../x", None, None).is_err());
        assert!(validate_version_source("/etc/passwd", None, None).is_err());
        assert!(validate_version_source("file:///etc/passwd", None, None).is_err());
        assert_eq!(split_models_uri("models:/src/1"), Some(("src", "1")));
        assert_eq!(split_models_uri("models:/m-abc"), None);
    }

    #[test]
    fn versions_must_be_positive_integers() {
        assert_eq!(parse_version("m", "3").unwrap(), 3);
        assert!(parse_version("m", "0").is_err());
        assert!(parse_version("m", "x").is_err());
    }
}
