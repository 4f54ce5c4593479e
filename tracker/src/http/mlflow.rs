//! The MLflow tracking API under `/api/2.0/mlflow`: experiments, runs, metrics, params, tags,
//! inputs, outputs and logged models. Handlers check fields with MLflow's messages, call the
//! store, and shape responses as the mlflow client parses them. No SQL here; see `store`.

use axum::extract::{Path, State};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{with_page_token, MlflowRequest};
use crate::error::{Error, Result};
use crate::search;
use crate::store::experiments::ViewType;
use crate::store::logged_models::{parse_logged_model_filter, LOGGED_MODEL_STATUSES};
use crate::store::runs::{NewMetric, NewRun, RUN_STATUSES};
use crate::AppState;

/// MLflow's limits for one log-batch call (`utils/validation.py`).
pub const MAX_BATCH_METRICS: usize = 1000;
/// Params in one log-batch call.
pub const MAX_BATCH_PARAMS: usize = 100;
/// Tags in one log-batch call.
pub const MAX_BATCH_TAGS: usize = 100;
/// Metrics, params and tags together in one log-batch call.
pub const MAX_BATCH_ENTITIES: usize = 1000;
/// Longest metric, param or tag key.
pub const MAX_KEY_LENGTH: usize = 250;
/// Longest param value.
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// Longest tag value.
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
/// Largest page of runs a search may ask for.
pub const MAX_SEARCH_RUNS: i64 = 50_000;

type JsonResult = Result<Json<Value>>;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/2.0/mlflow/experiments/create", post(create_experiment))
        .route("/2.0/mlflow/experiments/get", get(get_experiment))
        .route("/2.0/mlflow/experiments/get-by-name", get(get_experiment_by_name))
        .route("/2.0/mlflow/experiments/search", post(search_experiments).get(search_experiments))
        .route("/2.0/mlflow/experiments/list", get(search_experiments))
        .route("/2.0/mlflow/experiments/update", post(update_experiment))
        .route("/2.0/mlflow/experiments/delete", post(delete_experiment))
        .route("/2.0/mlflow/experiments/restore", post(restore_experiment))
        .route("/2.0/mlflow/experiments/set-experiment-tag", post(set_experiment_tag))
        .route("/2.0/mlflow/experiments/delete-experiment-tag", post(delete_experiment_tag).delete(delete_experiment_tag))
        .route("/2.0/mlflow/runs/create", post(create_run))
        .route("/2.0/mlflow/runs/get", get(get_run))
        .route("/2.0/mlflow/runs/update", post(update_run))
        .route("/2.0/mlflow/runs/delete", post(delete_run))
        .route("/2.0/mlflow/runs/restore", post(restore_run))
        .route("/2.0/mlflow/runs/search", post(search_runs).get(search_runs))
        .route("/2.0/mlflow/runs/log-metric", post(log_metric))
        .route("/2.0/mlflow/runs/log-parameter", post(log_param))
        .route("/2.0/mlflow/runs/set-tag", post(set_tag))
        .route("/2.0/mlflow/runs/delete-tag", post(delete_tag))
        .route("/2.0/mlflow/runs/log-batch", post(log_batch))
        .route("/2.0/mlflow/runs/log-inputs", post(log_inputs))
        .route("/2.0/mlflow/runs/outputs", post(log_outputs))
        .route("/2.0/mlflow/metrics/get-history", get(get_metric_history))
        .route("/2.0/mlflow/logged-models", post(create_logged_model))
        .route("/2.0/mlflow/logged-models/search", post(search_logged_models))
        .route("/2.0/mlflow/logged-models/{model_id}", get(get_logged_model).patch(finalize_logged_model).delete(delete_logged_model))
        .route("/2.0/mlflow/logged-models/{model_id}/tags", patch(set_logged_model_tags))
        .route("/2.0/mlflow/logged-models/{model_id}/tags/{key}", delete(delete_logged_model_tag))
        .route("/3.0/mlflow/server-info", get(server_info))
}

pub(super) fn required<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str> {
    v.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| Error::missing(field))
}

/// The run id of a request: `run_id` or its legacy twin `run_uuid`, which must agree.
fn run_id(req: &api::mlflow::Request) -> Result<&str> {
    match (req.run_id.as_deref().filter(|s| !s.is_empty()), req.run_uuid.as_deref().filter(|s| !s.is_empty())) {
        (Some(a), Some(b)) if a != b => Err(Error::InvalidParameter(format!("run_id '{a}' and run_uuid '{b}' differ"))),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(Error::missing("run_id")),
    }
}

/// Checks a metric, param or tag key as MLflow does: bounded length, no traversal, a safe alphabet.
pub(super) fn validate_key(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::missing("key"));
    }
    if key.len() > MAX_KEY_LENGTH {
        return Err(Error::InvalidParameter(format!("{kind} name '{key}' exceeds the maximum length of {MAX_KEY_LENGTH}")));
    }
    let ok_chars = key.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':'));
    let traversal = key.starts_with('/') || key.split('/').any(|s| s == ".." || s == ".");
    if !ok_chars || traversal {
        return Err(Error::InvalidParameter(format!(
            "Invalid {kind} name: '{key}'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colons (:) and slashes (/), and may not be a relative path."
        )));
    }
    Ok(())
}

/// Cuts a param or tag value to `max` characters, as MLflow's server does by default
/// (`MLFLOW_TRUNCATE_LONG_VALUES`): training code that logs a long config keeps working.
pub(super) fn truncate_value(mut value: String, max: usize) -> String {
    if let Some((cut, _)) = value.char_indices().nth(max) {
        value.truncate(cut);
    }
    value
}

/// A `value` field of log-parameter/set-tag: a string (numbers are written out, as protobuf does).
pub(super) fn string_value(v: &Option<Value>) -> Result<String> {
    match v {
        None | Some(Value::Null) => Err(Error::missing("value")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(other) => Err(Error::InvalidParameter(format!("Invalid value {other} for parameter 'value' supplied"))),
    }
}

pub(super) fn key_values(list: &Option<Vec<api::mlflow::KeyValue>>, kind: &str, max_value: usize) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for kv in list.iter().flatten() {
        let key = required(&kv.key, "key")?;
        validate_key(kind, key)?;
        let value = truncate_value(kv.value.clone().unwrap_or_default(), max_value);
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

pub(super) fn page_size(req: &api::mlflow::Request, default: i64, max: i64) -> Result<i64> {
    match req.max_results {
        None => Ok(default),
        Some(n) if n >= 1 && n <= max => Ok(n),
        Some(n) => Err(Error::InvalidParameter(format!("Invalid value {n} for parameter 'max_results' supplied: it must be between 1 and {max}"))),
    }
}

pub(super) fn search_error(e: search::SearchError) -> Error {
    Error::InvalidParameter(e.to_string())
}

/// Longest experiment name MLflow accepts.
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;

fn experiment_name<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str> {
    let name = required(v, field)?;
    if name.chars().count() > MAX_EXPERIMENT_NAME_LENGTH {
        return Err(Error::InvalidParameter(format!("Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters")));
    }
    Ok(name)
}

async fn create_experiment(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = experiment_name(&req.name, "name")?;
    let tags = key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?;
    let id = app.store.create_experiment(name, req.artifact_location.as_deref(), &tags).await?;
    Ok(Json(json!({ "experiment_id": id })))
}

async fn get_experiment(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = required(&req.experiment_id, "experiment_id")?;
    Ok(Json(json!({ "experiment": app.store.get_experiment(id).await? })))
}

async fn get_experiment_by_name(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let name = required(&req.experiment_name, "experiment_name")?;
    Ok(Json(json!({ "experiment": app.store.get_experiment_by_name(name).await? })))
}

async fn search_experiments(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let filter = search::parse_experiment_filter(req.filter.as_deref().unwrap_or("")).map_err(search_error)?;
    let order = search::parse_experiment_order_by(&req.order_by).map_err(search_error)?;
    let view = ViewType::parse(req.view_type.as_deref()).map_err(Error::InvalidParameter)?;
    let max = page_size(&req, 1000, 50_000)?;
    let page = app.store.search_experiments(&filter, &order, view, max, req.page_token.as_deref()).await?;
    Ok(Json(with_page_token(json!({ "experiments": page.experiments }), page.next_page_token)))
}

async fn update_experiment(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = required(&req.experiment_id, "experiment_id")?;
    if req.new_name.as_deref().is_some_and(|n| !n.is_empty()) {
        let name = experiment_name(&req.new_name, "new_name")?;
        app.store.rename_experiment(id, name).await?;
    } else {
        app.store.get_experiment(id).await?;
    }
    Ok(Json(json!({})))
}

async fn delete_experiment(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.set_experiment_lifecycle(required(&req.experiment_id, "experiment_id")?, "deleted").await?;
    Ok(Json(json!({})))
}

async fn restore_experiment(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.set_experiment_lifecycle(required(&req.experiment_id, "experiment_id")?, "active").await?;
    Ok(Json(json!({})))
}

async fn set_experiment_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = required(&req.experiment_id, "experiment_id")?;
    let key = required(&req.key, "key")?;
    validate_key("Tag", key)?;
    let value = truncate_value(string_value(&req.value)?, MAX_TAG_VALUE_LENGTH);
    app.store.set_experiment_tag(id, key, &value).await?;
    Ok(Json(json!({})))
}

async fn delete_experiment_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.delete_experiment_tag(required(&req.experiment_id, "experiment_id")?, required(&req.key, "key")?).await?;
    Ok(Json(json!({})))
}

async fn create_run(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let tags = key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?;
    let user_id = req
        .user_id
        .clone()
        .or_else(|| tags.iter().find(|(k, _)| k == "mlflow.user").map(|(_, v)| v.clone()))
        .unwrap_or_default();
    let run = app
        .store
        .create_run(NewRun {
            experiment_id: req.experiment_id.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "0".into()),
            user_id,
            run_name: req.run_name.clone(),
            start_time: req.start_time,
            tags,
        })
        .await?;
    Ok(Json(json!({ "run": run })))
}

async fn get_run(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    Ok(Json(json!({ "run": app.store.get_run(run_id(&req)?).await? })))
}

async fn update_run(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = run_id(&req)?;
    if let Some(status) = req.status.as_deref() {
        if !RUN_STATUSES.contains(&status) {
            return Err(Error::InvalidParameter(format!("Invalid value '{status}' for parameter 'status': expected one of {RUN_STATUSES:?}")));
        }
    }
    let info = app.store.update_run(id, req.status.as_deref(), req.end_time, req.run_name.as_deref().filter(|n| !n.is_empty())).await?;
    Ok(Json(json!({ "run_info": info })))
}

async fn delete_run(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.set_run_lifecycle(run_id(&req)?, "deleted").await?;
    Ok(Json(json!({})))
}

async fn restore_run(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.set_run_lifecycle(run_id(&req)?, "active").await?;
    Ok(Json(json!({})))
}

async fn search_runs(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> Result<axum::response::Response> {
    let filter = search::parse_run_filter(req.filter.as_deref().unwrap_or("")).map_err(search_error)?;
    let order = search::parse_run_order_by(&req.order_by).map_err(search_error)?;
    let view = ViewType::parse(req.run_view_type.as_deref()).map_err(Error::InvalidParameter)?;
    let max = page_size(&req, 1000, MAX_SEARCH_RUNS)?;
    let page = app.store.search_runs(&req.experiment_ids, &filter, &order, view, max, req.page_token.as_deref()).await?;
    // Serialized straight from the runs, as the history is: a page of 1,000 runs is 1.8 MB.
    #[derive(serde::Serialize)]
    struct Runs<'a> {
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        runs: &'a [api::mlflow::Run],
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }
    let body = serde_json::to_vec(&Runs { runs: &page.runs, next_page_token: page.next_page_token }).map_err(|e| Error::Internal(e.into()))?;
    Ok(json_body(body))
}

/// A response of JSON bytes already written, for the bodies too large to go through a
/// `serde_json::Value` tree.
fn json_body(body: Vec<u8>) -> axum::response::Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn new_metric(
    key: Option<&str>,
    value: Option<f64>,
    timestamp: Option<i64>,
    step: Option<i64>,
    dataset: (Option<String>, Option<String>),
    model_id: Option<String>,
) -> Result<NewMetric> {
    let key = key.filter(|k| !k.is_empty()).ok_or_else(|| Error::missing("key"))?;
    validate_key("Metric", key)?;
    let value = value.ok_or_else(|| Error::missing("value"))?;
    let timestamp = timestamp.ok_or_else(|| Error::missing("timestamp"))?;
    Ok(NewMetric {
        key: key.to_owned(),
        value,
        timestamp,
        step: step.unwrap_or(0),
        dataset_name: dataset.0,
        dataset_digest: dataset.1,
        model_id,
    })
}

async fn log_metric(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = run_id(&req)?;
    let value = match &req.value {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => Some(
            api::mlflow::flex::parse_f64(s).ok_or_else(|| Error::InvalidParameter(format!("Invalid value \"{s}\" for parameter 'value' supplied")))?,
        ),
        Some(other) => return Err(Error::InvalidParameter(format!("Invalid value {other} for parameter 'value' supplied"))),
    };
    let metric = new_metric(
        req.key.as_deref(),
        value,
        req.timestamp,
        req.step,
        (req.dataset_name.clone(), req.dataset_digest.clone()),
        req.model_id.clone(),
    )?;
    app.store.log_batch(id, &[metric], &[], &[]).await?;
    Ok(Json(json!({})))
}

async fn log_param(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = run_id(&req)?;
    let key = required(&req.key, "key")?;
    validate_key("Param", key)?;
    let value = truncate_value(string_value(&req.value)?, MAX_PARAM_VALUE_LENGTH);
    app.store.log_batch(id, &[], &[(key.to_owned(), value)], &[]).await?;
    Ok(Json(json!({})))
}

async fn set_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = run_id(&req)?;
    let key = required(&req.key, "key")?;
    validate_key("Tag", key)?;
    let value = truncate_value(string_value(&req.value)?, MAX_TAG_VALUE_LENGTH);
    app.store.log_batch(id, &[], &[], &[(key.to_owned(), value)]).await?;
    Ok(Json(json!({})))
}

async fn delete_tag(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    app.store.delete_tag(run_id(&req)?, required(&req.key, "key")?).await?;
    Ok(Json(json!({})))
}

async fn log_batch(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = run_id(&req)?;
    let (n_metrics, n_params, n_tags) = (
        req.metrics.as_ref().map_or(0, Vec::len),
        req.params.as_ref().map_or(0, Vec::len),
        req.tags.as_ref().map_or(0, Vec::len),
    );
    let too_many = |what: &str, n: usize, max: usize| {
        Error::InvalidParameter(format!("A batch logging request can contain at most {max} {what}. Got {n} {what}. Please split up {what} across multiple requests and try again."))
    };
    if n_metrics > MAX_BATCH_METRICS {
        return Err(too_many("metrics", n_metrics, MAX_BATCH_METRICS));
    }
    if n_params > MAX_BATCH_PARAMS {
        return Err(too_many("params", n_params, MAX_BATCH_PARAMS));
    }
    if n_tags > MAX_BATCH_TAGS {
        return Err(too_many("tags", n_tags, MAX_BATCH_TAGS));
    }
    if n_metrics + n_params + n_tags > MAX_BATCH_ENTITIES {
        return Err(too_many("metrics, params, and tags", n_metrics + n_params + n_tags, MAX_BATCH_ENTITIES));
    }
    let metrics = req
        .metrics
        .iter()
        .flatten()
        .map(|m| new_metric(m.key.as_deref(), m.value, m.timestamp, m.step, (m.dataset_name.clone(), m.dataset_digest.clone()), m.model_id.clone()))
        .collect::<Result<Vec<_>>>()?;
    let params = key_values(&req.params, "Param", MAX_PARAM_VALUE_LENGTH)?;
    let tags = key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?;
    app.store.log_batch(id, &metrics, &params, &tags).await?;
    Ok(Json(json!({})))
}

async fn log_inputs(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = required(&req.run_id, "run_id")?;
    let datasets = req.datasets.clone().unwrap_or_default();
    for d in &datasets {
        if d.dataset.name.is_empty() || d.dataset.digest.is_empty() {
            return Err(Error::InvalidParameter("Each dataset input needs a dataset with a 'name' and a 'digest'".into()));
        }
    }
    app.store.log_inputs(id, &datasets).await?;
    Ok(Json(json!({})))
}

async fn log_outputs(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let id = required(&req.run_id, "run_id")?;
    let models = req
        .models
        .iter()
        .flatten()
        .map(|m| Ok((required(&m.model_id, "model_id")?.to_owned(), m.step.unwrap_or(0))))
        .collect::<Result<Vec<_>>>()?;
    app.store.log_outputs(id, &models).await?;
    Ok(Json(json!({})))
}

async fn get_metric_history(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> Result<axum::response::Response> {
    let id = run_id(&req)?;
    let key = required(&req.metric_key, "metric_key")?;
    if let Some(n) = req.max_results {
        if n < 1 {
            return Err(Error::InvalidParameter(format!("Invalid value {n} for parameter 'max_results' supplied")));
        }
    }
    let page = app.store.metric_history(id, key, req.max_results, req.page_token.as_deref()).await?;
    Ok(json_body(super::history_json::history_body(&page.metrics, page.next_page_token.as_deref())))
}

use axum::response::IntoResponse;

async fn create_logged_model(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let experiment_id = required(&req.experiment_id, "experiment_id")?;
    let params = key_values(&req.params, "Param", MAX_PARAM_VALUE_LENGTH)?;
    let tags = key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?;
    let model = app
        .store
        .create_logged_model(experiment_id, req.name.as_deref(), req.source_run_id.as_deref(), req.model_type.as_deref(), &params, &tags)
        .await?;
    Ok(Json(json!({ "model": model })))
}

async fn get_logged_model(State(app): State<AppState>, Path(model_id): Path<String>) -> JsonResult {
    Ok(Json(json!({ "model": app.store.get_logged_model(&model_id).await? })))
}

async fn finalize_logged_model(State(app): State<AppState>, Path(model_id): Path<String>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let status = required(&req.status, "status")?;
    if !LOGGED_MODEL_STATUSES.contains(&status) {
        return Err(Error::InvalidParameter(format!("Invalid value '{status}' for parameter 'status': expected one of {LOGGED_MODEL_STATUSES:?}")));
    }
    Ok(Json(json!({ "model": app.store.finalize_logged_model(&model_id, status).await? })))
}

async fn delete_logged_model(State(app): State<AppState>, Path(model_id): Path<String>) -> JsonResult {
    app.store.delete_logged_model(&model_id).await?;
    Ok(Json(json!({})))
}

async fn set_logged_model_tags(State(app): State<AppState>, Path(model_id): Path<String>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let tags = key_values(&req.tags, "Tag", MAX_TAG_VALUE_LENGTH)?;
    app.store.set_logged_model_tags(&model_id, &tags).await?;
    Ok(Json(json!({})))
}

async fn delete_logged_model_tag(State(app): State<AppState>, Path((model_id, key)): Path<(String, String)>) -> JsonResult {
    app.store.delete_logged_model_tag(&model_id, &key).await?;
    Ok(Json(json!({})))
}

async fn search_logged_models(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> JsonResult {
    let filter = parse_logged_model_filter(req.filter.as_deref().unwrap_or(""))?;
    let max = page_size(&req, 100, 50_000)?;
    let (models, next) = app.store.search_logged_models(&req.experiment_ids, &filter, max, req.page_token.as_deref()).await?;
    let mut body = json!({});
    if !models.is_empty() {
        body["models"] = json!(models);
    }
    Ok(Json(with_page_token(body, next)))
}

async fn server_info(State(app): State<AppState>) -> Json<Value> {
    let store_type = match app.store.dialect() {
        crate::store::Dialect::Sqlite | crate::store::Dialect::Postgres => "SqlStore",
    };
    // Multipart and presigned transfers are off: uploads and downloads stream through the proxy.
    Json(json!({
        "store_type": store_type,
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {}
    }))
}
