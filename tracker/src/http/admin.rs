//! Token administration over REST for `admin` tokens: list and revoke. Creating a token is done
//! with `tracker token create` on the server's machine, so a secret never crosses the network
//! in a response.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::mlflow::required;
use super::MlflowRequest;
use crate::error::Result;
use crate::AppState;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/tracker/tokens", get(list_tokens)).route("/tracker/tokens/revoke", post(revoke_token))
}

async fn list_tokens(State(app): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(json!({ "tokens": app.store.list_tokens().await? })))
}

/// Revokes the tokens with the given id or name (`{"name": "..."}`).
async fn revoke_token(State(app): State<AppState>, MlflowRequest(req): MlflowRequest) -> Result<Json<Value>> {
    let revoked = app.store.revoke_tokens(required(&req.name, "name")?).await?;
    Ok(Json(json!({ "revoked": revoked })))
}
