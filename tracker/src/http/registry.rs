//! The MLflow model registry API under `/api/2.0/mlflow`: registered models, model versions,
//! tags, aliases, legacy stages and download URIs. No SQL here; see `store::registry`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::mlflow::{key_values, page_size, required, search_error, string_value, truncate_value, validate_key, MAX_TAG_VALUE_LENGTH};
use super::{with_page_token, Actor, MlflowRequest};
use crate::error::{Error, Result};
use crate::search::{self, RegistryEntity};
use crate::store::audit::ChangeBy;
use crate::store::registry::{validate_version_source, NewModelVersion};
use crate::AppState;

type JsonResult = Result<Json<Value>>;

/// Longest alias name.
pub const MAX_ALIAS_LENGTH: usize = 255;
/// Longest registered model name.
pub const MAX_MODEL_NAME_LENGTH: usize = 256;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/2.0/mlflow/registered-models/create", post(create_registered_model))
        .route("/2.0/mlflow/registered-models/get", get(get_registered_model))
        .route("/2.0/mlflow/registered-models/rename", post(rename_registered_model))
        .route("/2.0/mlflow/registered-models/update", axum::routing::patch(update_registered_model))
        .route("/2.0/mlflow/registered-models/delete", axum::routing::delete(delete_registered_model))
        .route("/2.0/mlflow/registered-models/search", get(search_registered_models).post(search_registered_models))
        .route("/2.0/mlflow/registered-models/set-tag", post(set_registered_model_tag))
        .route("/2.0/mlflow/registered-models/delete-tag", axum::routing::delete(delete_registered_model_tag))
        .route(
            "/2.0/mlflow/registered-models/alias",
            post(set_registered_model_alias).get(get_model_version_by_alias).delete(delete_registered_model_alias),
        )
        .route("/2.0/mlflow/registered-models/get-latest-versions", post(get_latest_versions).get(get_latest_versions))
        .route("/2.0/mlflow/model-versions/create", post(create_model_version))
        .route("/2.0/mlflow/model-versions/get", get(get_model_version))
        .route("/2.0/mlflow/model-versions/update", axum::routing::patch(update_model_version))
        .route("/2.0/mlflow/model-versions/delete", axum::routing::delete(delete_model_version))
        .route("/2.0/mlflow/model-versions/search", get(search_model_versions).post(search_model_versions))
        .route("/2.0/mlflow/model-versions/transition-stage", post(transition_model_version_stage))
        .route("/2.0/mlflow/model-versions/get-download-uri", get(get_model_version_download_uri))
        .route("/2.0/mlflow/model-versions/set-tag", post(set_model_version_tag))
        .route("/2.0/mlflow/model-versions/delete-tag", axum::routing::delete(delete_model_version_tag))
}

/// A registered model name: present and of bounded length.
fn model_name<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str> {
    let name = required(v, field)?;
    if name.len() > MAX_MODEL_NAME_LENGTH {
        return Err(Error::InvalidParameter(format!("Registered model name exceeds the maximum length of {MAX_MODEL_NAME_LENGTH}")));
    }
    Ok(name)
}

/// An alias name as MLflow accepts it: letters, digits, `_` and `-`, not `latest`, and not of the
/// form `v<digits>`, which would be read as a version.
pub fn alias_name(v: &Option<String>) -> Result<&str> {
    let alias = required(v, "alias")?;
    let valid_chars = alias.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let looks_like_version = alias.len() > 1 && alias[..1].eq_ignore_ascii_case("v") && alias[1..].chars().all(|c| c.is_ascii_digit());
    if !valid_chars || alias.len() > MAX_ALIAS_LENGTH {
        return Err(Error::InvalidParameter(format!(
            "Invalid alias name: '{alias}'. Aliases may only contain alphanumerics, underscores (_) and dashes (-), up to {MAX_ALIAS_LENGTH} characters."
        )));
    }
    if alias.eq_ignore_ascii_case("latest") || looks_like_version {
        return Err(Error::InvalidParameter(format!("'{alias}' alias name (case insensitive) is reserved.")));
    }
    Ok(alias)
}

fn tag_pair(req: &api::mlflow::Request) -> Result<(&str, String)> {
    let key = required(&req.key, "key")?;
    validate_key("Tag", key)?;
    let value = truncate_value(string_value(&req.value)?, MAX_TAG_VALUE_LENGTH);
    Ok((key, value))
}

async fn create_registered_model(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = model_name(&req.name, "name")?;
    let tags = key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?;
    let model = app.store.create_registered_model(name, req.description.as_deref(), &tags).await?;
    Ok(Json(json!({ "registered_model": model })))
}

async fn get_registered_model(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let model = app.store.get_registered_model(required(&req.name, "name")?).await?;
    Ok(Json(json!({ "registered_model": model })))
}

async fn rename_registered_model(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = required(&req.name, "name")?;
    let new_name = model_name(&req.new_name, "new_name")?;
    let model = app.store.rename_registered_model(name, new_name).await?;
    Ok(Json(json!({ "registered_model": model })))
}

async fn update_registered_model(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = required(&req.name, "name")?;
    let model = match req.description.as_deref() {
        Some(d) => app.store.update_registered_model(name, d).await?,
        None => app.store.get_registered_model(name).await?,
    };
    Ok(Json(json!({ "registered_model": model })))
}

async fn delete_registered_model(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.delete_registered_model(required(&req.name, "name")?).await?;
    Ok(Json(json!({})))
}

async fn search_registered_models(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let filter_text = req.filter.as_deref().or(req.filter_string.as_deref()).unwrap_or("");
    let filter = search::parse_registry_filter(filter_text, RegistryEntity::RegisteredModel).map_err(search_error)?;
    let order = search::parse_registry_order_by(&req.order_by, RegistryEntity::RegisteredModel).map_err(search_error)?;
    let max = page_size(&req, 100, 1000)?;
    let page = app.store.search_registered_models(&filter, &order, max, req.page_token.as_deref()).await?;
    Ok(Json(with_page_token(json!({ "registered_models": page.items }), page.next_page_token)))
}

async fn set_registered_model_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = required(&req.name, "name")?;
    let (key, value) = tag_pair(&req)?;
    app.store.set_registered_model_tag(name, key, &value).await?;
    Ok(Json(json!({})))
}

async fn delete_registered_model_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.delete_registered_model_tag(required(&req.name, "name")?, required(&req.key, "key")?).await?;
    Ok(Json(json!({})))
}

async fn set_registered_model_alias(State(app): State<AppState>, Actor(actor): Actor, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = required(&req.name, "name")?;
    let alias = alias_name(&req.alias)?;
    let version = required(&req.version, "version")?;
    app.store.set_registered_model_alias(name, alias, version, &ChangeBy::new(actor, None)).await?;
    app.webhooks.wake();
    Ok(Json(json!({})))
}

async fn delete_registered_model_alias(State(app): State<AppState>, Actor(actor): Actor, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.delete_registered_model_alias(required(&req.name, "name")?, required(&req.alias, "alias")?, &ChangeBy::new(actor, None)).await?;
    app.webhooks.wake();
    Ok(Json(json!({})))
}

async fn get_model_version_by_alias(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let version = app.store.get_model_version_by_alias(required(&req.name, "name")?, required(&req.alias, "alias")?).await?;
    Ok(Json(json!({ "model_version": version })))
}

async fn get_latest_versions(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let versions = app.store.get_latest_versions(required(&req.name, "name")?, &req.stages).await?;
    Ok(Json(json!({ "model_versions": versions })))
}

async fn create_model_version(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let source = required(&req.source, "source")?;
    validate_version_source(source, req.run_id.as_deref(), req.model_id.as_deref())?;
    let new = NewModelVersion {
        name: required(&req.name, "name")?.to_owned(),
        source: source.to_owned(),
        run_id: req.run_id.clone(),
        run_link: req.run_link.clone(),
        description: req.description.clone(),
        model_id: req.model_id.clone(),
        tags: key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?,
    };
    let version = app.store.create_model_version(new).await?;
    Ok(Json(json!({ "model_version": version })))
}

async fn get_model_version(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let version = app.store.get_model_version(required(&req.name, "name")?, required(&req.version, "version")?).await?;
    Ok(Json(json!({ "model_version": version })))
}

async fn update_model_version(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let (name, version) = (required(&req.name, "name")?, required(&req.version, "version")?);
    let mv = match req.description.as_deref() {
        Some(d) => app.store.update_model_version(name, version, d).await?,
        None => app.store.get_model_version(name, version).await?,
    };
    Ok(Json(json!({ "model_version": mv })))
}

async fn delete_model_version(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.delete_model_version(required(&req.name, "name")?, required(&req.version, "version")?).await?;
    Ok(Json(json!({})))
}

async fn search_model_versions(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let filter_text = req.filter.as_deref().or(req.filter_string.as_deref()).unwrap_or("");
    let filter = search::parse_registry_filter(filter_text, RegistryEntity::ModelVersion).map_err(search_error)?;
    let order = search::parse_registry_order_by(&req.order_by, RegistryEntity::ModelVersion).map_err(search_error)?;
    let max = page_size(&req, 10_000, 200_000)?;
    let page = app.store.search_model_versions(&filter, &order, max, req.page_token.as_deref()).await?;
    Ok(Json(with_page_token(json!({ "model_versions": page.items }), page.next_page_token)))
}

async fn transition_model_version_stage(State(app): State<AppState>, Actor(actor): Actor, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let (name, version) = (required(&req.name, "name")?, required(&req.version, "version")?);
    let stage = required(&req.stage, "stage")?;
    let archive = req.archive_existing_versions.unwrap_or(false);
    let mv = app.store.transition_model_version_stage(name, version, stage, archive, &ChangeBy::new(actor, None)).await?;
    app.webhooks.wake();
    Ok(Json(json!({ "model_version": mv })))
}

async fn get_model_version_download_uri(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let uri = app.store.get_model_version_download_uri(required(&req.name, "name")?, required(&req.version, "version")?).await?;
    Ok(Json(json!({ "artifact_uri": uri })))
}

async fn set_model_version_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let (name, version) = (required(&req.name, "name")?, required(&req.version, "version")?);
    let (key, value) = tag_pair(&req)?;
    app.store.set_model_version_tag(name, version, key, &value).await?;
    Ok(Json(json!({})))
}

async fn delete_model_version_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let (name, version) = (required(&req.name, "name")?, required(&req.version, "version")?);
    app.store.delete_model_version_tag(name, version, required(&req.key, "key")?).await?;
    Ok(Json(json!({})))
}
