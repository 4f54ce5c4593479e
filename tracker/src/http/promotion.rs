//! Gated promotion under `/api/tracker/models/...`: the rules stored with a registered model and
//! `promote`, which points an alias at a version only when every rule passes. A refused
//! promotion answers 412 `PRECONDITION_FAILED` naming the rule, and changes nothing. No SQL here;
//! see `store::promotion`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::mlflow::required;
use super::registry::alias_name;
use super::{with_page_token, Actor, Body, QueryFields};
use crate::error::{Error, Result};
use crate::store::audit::ChangeBy;
use crate::store::promotion::Promotion;
use crate::AppState;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/tracker/models/promote", post(promote))
        .route("/tracker/models/rules/set", post(set_rules))
        .route("/tracker/models/rules/get", get(get_rules))
        .route("/tracker/models/audit", get(list_audit))
}

/// `POST /tracker/models/promote`.
#[derive(Debug, Deserialize)]
pub struct PromoteRequest {
    pub name: Option<String>,
    pub version: Option<String>,
    pub alias: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /tracker/models/rules/set`.
#[derive(Debug, Deserialize)]
pub struct SetRulesRequest {
    pub name: Option<String>,
    pub rules: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct NameQuery {
    name: Option<String>,
}

/// The message of a refused promotion: which rule failed and what it saw.
pub fn refusal_message(name: &str, version: &str, alias: &str, rule: &str, detail: &str) -> String {
    format!("Promotion of model '{name}' version {version} to alias '{alias}' refused by rule '{rule}': {detail}")
}

async fn promote(State(app): State<AppState>, Actor(actor): Actor, Body(req): Body<PromoteRequest>) -> Result<Json<Value>> {
    let name = required(&req.name, "name")?;
    let version = required(&req.version, "version")?;
    let alias = alias_name(&req.alias)?;
    match app.store.promote(name, version, alias, &ChangeBy::new(actor, req.reason.as_deref())).await? {
        Promotion::Refused { failed, .. } => Err(Error::PreconditionFailed(refusal_message(name, version, alias, &failed.rule, &failed.detail))),
        Promotion::Promoted { model_version, previous_version, checks } => {
            app.webhooks.wake();
            Ok(Json(json!({
            "model_version": model_version,
            "alias": alias,
            "previous_version": previous_version.map(|v| v.to_string()),
            "checks": checks,
            })))
        }
    }
}

async fn set_rules(State(app): State<AppState>, Body(req): Body<SetRulesRequest>) -> Result<Json<Value>> {
    let name = required(&req.name, "name")?;
    let rules = req.rules.as_ref().ok_or_else(|| Error::missing("rules"))?;
    let rules = app.store.set_promotion_rules(name, rules).await?;
    Ok(Json(json!({ "name": name, "rules": rules })))
}

async fn get_rules(State(app): State<AppState>, QueryFields(q): QueryFields<NameQuery>) -> Result<Json<Value>> {
    let name = required(&q.name, "name")?;
    let rules = app.store.get_promotion_rules(name).await?;
    Ok(Json(json!({ "name": name, "rules": rules })))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    name: Option<String>,
    max_results: Option<String>,
    page_token: Option<String>,
}

/// Most audit entries in one page, and the default.
const MAX_AUDIT_PAGE: i64 = 1000;
const DEFAULT_AUDIT_PAGE: i64 = 100;

/// `GET /tracker/models/audit?name=&max_results=&page_token=`: newest first; every model's
/// entries when `name` is absent.
async fn list_audit(State(app): State<AppState>, QueryFields(q): QueryFields<AuditQuery>) -> Result<Json<Value>> {
    let max = match q.max_results.as_deref().filter(|m| !m.is_empty()) {
        None => DEFAULT_AUDIT_PAGE,
        Some(m) => m
            .parse::<i64>()
            .ok()
            .filter(|m| (1..=MAX_AUDIT_PAGE).contains(m))
            .ok_or_else(|| Error::InvalidParameter(format!("max_results must be between 1 and {MAX_AUDIT_PAGE}, got '{m}'")))?,
    };
    let name = q.name.as_deref().filter(|n| !n.is_empty());
    let page = app.store.list_audit(name, max, q.page_token.as_deref()).await?;
    Ok(Json(with_page_token(json!({ "entries": page.items }), page.next_page_token)))
}
