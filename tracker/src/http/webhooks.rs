//! Webhook management under `/api/tracker/webhooks/...` (admin scope): create, list, delete, and
//! the deliveries of a webhook with every attempt. Delivery itself is `crate::webhooks`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::mlflow::required;
use super::{Actor, Body, QueryFields};
use crate::error::{Error, Result};
use crate::AppState;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/tracker/webhooks/create", post(create))
        .route("/tracker/webhooks/list", get(list))
        .route("/tracker/webhooks/delete", post(delete))
        .route("/tracker/webhooks/deliveries", get(deliveries))
}

/// `POST /tracker/webhooks/create`.
#[derive(Debug, Deserialize)]
pub struct CreateWebhook {
    /// The registered model to follow; absent or empty for every model.
    pub name: Option<String>,
    pub url: Option<String>,
    /// The HMAC-SHA256 key the bodies are signed with.
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ById {
    id: Option<String>,
    max_results: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ByName {
    name: Option<String>,
}

/// Longest webhook URL accepted.
const MAX_URL_LENGTH: usize = 2048;
/// Most deliveries in one answer, and the default.
const MAX_DELIVERIES: i64 = 1000;
const DEFAULT_DELIVERIES: i64 = 100;

async fn create(State(app): State<AppState>, Actor(actor): Actor, Body(req): Body<CreateWebhook>) -> Result<Json<Value>> {
    let url = required(&req.url, "url")?.trim();
    if url.len() > MAX_URL_LENGTH {
        return Err(Error::InvalidParameter(format!("Webhook url exceeds the maximum length of {MAX_URL_LENGTH}")));
    }
    crate::webhooks::validate_url(url).map_err(Error::InvalidParameter)?;
    let secret = required(&req.secret, "secret")?;
    let name = req.name.as_deref().filter(|n| !n.is_empty());
    let hook = app.store.create_webhook(name, url, secret, &actor).await?;
    Ok(Json(json!({ "webhook": hook })))
}

async fn list(State(app): State<AppState>, QueryFields(q): QueryFields<ByName>) -> Result<Json<Value>> {
    let hooks = app.store.list_webhooks(q.name.as_deref().filter(|n| !n.is_empty())).await?;
    Ok(Json(json!({ "webhooks": hooks })))
}

async fn delete(State(app): State<AppState>, Body(req): Body<ById>) -> Result<Json<Value>> {
    app.store.delete_webhook(required(&req.id, "id")?).await?;
    Ok(Json(json!({})))
}

async fn deliveries(State(app): State<AppState>, QueryFields(q): QueryFields<ById>) -> Result<Json<Value>> {
    let id = required(&q.id, "id")?;
    let max = match q.max_results.as_deref().filter(|m| !m.is_empty()) {
        None => DEFAULT_DELIVERIES,
        Some(m) => m
            .parse::<i64>()
            .ok()
            .filter(|m| (1..=MAX_DELIVERIES).contains(m))
            .ok_or_else(|| Error::InvalidParameter(format!("max_results must be between 1 and {MAX_DELIVERIES}, got '{m}'")))?,
    };
    Ok(Json(json!({ "deliveries": app.store.list_deliveries(id, max).await? })))
}
