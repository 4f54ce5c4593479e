//! Study administration and the worker lease protocol under `/api/tracker/...` (see
//! `api::studies` for the bodies). No decisions here: `crate::studies` makes them.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use api::studies::{CompleteRequest, FailRequest, HeartbeatRequest, LeaseRequest, RegisterWorker, ReleaseRequest, ReportRequest, StudySpec};

use super::{Body, QueryFields};
use crate::error::{Error, Result};
use crate::studies::Studies;
use crate::AppState;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/tracker/studies/create", post(create_study))
        .route("/tracker/studies/list", get(list_studies))
        .route("/tracker/studies/get", get(get_study))
        .route("/tracker/studies/pause", post(pause_study))
        .route("/tracker/studies/resume", post(resume_study))
        .route("/tracker/studies/stop", post(stop_study))
        .route("/tracker/studies/{study}/trials/{number}/report", post(report))
        .route("/tracker/studies/{study}/trials/{number}/complete", post(complete))
        .route("/tracker/studies/{study}/trials/{number}/fail", post(fail))
        .route("/tracker/studies/{study}/trials/{number}/release", post(release))
        .route("/tracker/workers/register", post(register))
        .route("/tracker/workers/lease", post(lease))
        .route("/tracker/workers/heartbeat", post(heartbeat))
        .route("/tracker/workers/list", get(list_workers))
        .route("/tracker/workers/resume", post(resume_worker))
        .route("/tracker/workers/drain", post(drain_worker))
}

fn studies(app: &AppState) -> Studies<'_> {
    Studies::new(&app.store, app.lease_timing)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateStudy {
    spec: StudySpec,
}

async fn create_study(State(app): State<AppState>, Body(req): Body<CreateStudy>) -> Result<Json<Value>> {
    Ok(Json(json!({ "study": studies(&app).create(req.spec).await? })))
}

async fn list_studies(State(app): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(json!({ "studies": studies(&app).list().await? })))
}

#[derive(Deserialize)]
struct ByName {
    name: Option<String>,
}

fn name_of(q: ByName) -> Result<String> {
    q.name.filter(|n| !n.is_empty()).ok_or_else(|| Error::missing("name"))
}

async fn get_study(State(app): State<AppState>, QueryFields(q): QueryFields<ByName>) -> Result<Json<Value>> {
    let (study, trials) = studies(&app).get(&name_of(q)?).await?;
    Ok(Json(json!({ "study": study, "trials": trials })))
}

async fn control(app: AppState, q: ByName, action: &str) -> Result<Json<Value>> {
    Ok(Json(json!({ "study": studies(&app).control(&name_of(q)?, action).await? })))
}

async fn pause_study(State(app): State<AppState>, Body(q): Body<ByName>) -> Result<Json<Value>> {
    control(app, q, "pause").await
}

async fn resume_study(State(app): State<AppState>, Body(q): Body<ByName>) -> Result<Json<Value>> {
    control(app, q, "resume").await
}

async fn stop_study(State(app): State<AppState>, Body(q): Body<ByName>) -> Result<Json<Value>> {
    control(app, q, "stop").await
}

/// The `{study}/trials/{number}` segments, or the extractor's complaint (e.g. bad percent-encoding).
type PathResult = std::result::Result<Path<(String, String)>, axum::extract::rejection::PathRejection>;

/// The study and trial number of a trial call; a malformed path is the client's error, not a 5xx.
fn trial_path(path: PathResult) -> Result<(String, u64)> {
    let Path((study, raw)) = path.map_err(|e| Error::InvalidParameter(format!("Invalid trial path: {e}")))?;
    let n = raw.parse().map_err(|_| Error::InvalidParameter(format!("Trial number must be a non-negative integer, got '{raw}'")))?;
    Ok((study, n))
}

async fn report(State(app): State<AppState>, path: PathResult, Body(req): Body<ReportRequest>) -> Result<Json<Value>> {
    let (study, n) = trial_path(path)?;
    Ok(Json(json!(studies(&app).report(&study, n, req).await?)))
}

async fn complete(State(app): State<AppState>, path: PathResult, Body(req): Body<CompleteRequest>) -> Result<Json<Value>> {
    let (study, n) = trial_path(path)?;
    Ok(Json(json!(studies(&app).complete(&study, n, req).await?)))
}

async fn fail(State(app): State<AppState>, path: PathResult, Body(req): Body<FailRequest>) -> Result<Json<Value>> {
    let (study, n) = trial_path(path)?;
    Ok(Json(json!(studies(&app).fail(&study, n, req).await?)))
}

async fn release(State(app): State<AppState>, path: PathResult, Body(req): Body<ReleaseRequest>) -> Result<Json<Value>> {
    let (study, n) = trial_path(path)?;
    Ok(Json(json!(studies(&app).release(&study, n, req).await?)))
}

async fn register(State(app): State<AppState>, Body(req): Body<RegisterWorker>) -> Result<Json<Value>> {
    Ok(Json(json!(studies(&app).register(req).await?)))
}

async fn lease(State(app): State<AppState>, Body(req): Body<LeaseRequest>) -> Result<Json<Value>> {
    Ok(Json(json!(studies(&app).lease(req).await?)))
}

async fn heartbeat(State(app): State<AppState>, Body(req): Body<HeartbeatRequest>) -> Result<Json<Value>> {
    Ok(Json(json!(studies(&app).heartbeat(req).await?)))
}

async fn list_workers(State(app): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(json!({ "workers": studies(&app).workers().await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByWorker {
    worker_id: String,
}

async fn resume_worker(State(app): State<AppState>, Body(req): Body<ByWorker>) -> Result<Json<Value>> {
    Ok(Json(json!({ "worker": studies(&app).resume_worker(&req.worker_id).await? })))
}

async fn drain_worker(State(app): State<AppState>, Body(req): Body<ByWorker>) -> Result<Json<Value>> {
    Ok(Json(json!({ "worker": studies(&app).drain_worker(&req.worker_id).await? })))
}
