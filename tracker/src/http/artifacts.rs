//! The artifact proxy under `/api/2.0/mlflow-artifacts/artifacts`: streaming upload, download,
//! listing and delete, over [`crate::artifacts::Artifacts`].

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::artifacts::ArtifactPath;
use crate::error::Result;
use crate::AppState;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/2.0/mlflow-artifacts/artifacts", get(list_artifacts))
        .route("/2.0/mlflow-artifacts/artifacts/{*path}", get(download_artifact).put(upload_artifact).delete(delete_artifact))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list_artifacts(State(app): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<serde_json::Value>> {
    let path = ArtifactPath::parse(q.path.as_deref().unwrap_or(""))?;
    let files = app.artifacts.list(&path).await?;
    if files.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "files": files })))
}

async fn download_artifact(State(app): State<AppState>, Path(path): Path<String>) -> Result<Response> {
    let path = ArtifactPath::parse(&path)?;
    let (size, stream) = app.artifacts.get(&path).await?;
    let content_type = content_type_of(path.as_path().as_ref());
    Ok(([(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_LENGTH, size.to_string())], Body::from_stream(stream)).into_response())
}

async fn upload_artifact(State(app): State<AppState>, Path(path): Path<String>, body: Body) -> Result<Json<serde_json::Value>> {
    let path = ArtifactPath::parse(&path)?;
    app.artifacts.put_stream(&path, body.into_data_stream()).await?;
    Ok(Json(json!({})))
}

async fn delete_artifact(State(app): State<AppState>, Path(path): Path<String>) -> Result<Json<serde_json::Value>> {
    let path = ArtifactPath::parse(&path)?;
    app.artifacts.delete(&path).await?;
    Ok(Json(json!({})))
}

/// A content type from the file extension, for browsers and previews; clients ignore it.
fn content_type_of(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" | "yaml" | "yml" | "py" | "csv" | "toml" => "text/plain; charset=utf-8",
        "json" | "jsonl" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "html" | "htm" => "text/plain; charset=utf-8", // never render uploaded HTML in our origin
        _ => "application/octet-stream",
    }
}
