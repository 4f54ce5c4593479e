//! HTTP routes. Each submodule owns its `router()`; this module joins them, adds the shared
//! extractor for MLflow requests and the fallback for unknown endpoints.

pub mod admin;
pub mod artifacts;
mod history_json;
pub mod mlflow;
pub mod promotion;
pub mod registry;
pub mod studies;
pub mod webhooks;

use axum::extract::{FromRequest, Request};
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;

use crate::error::Error;
use crate::AppState;

/// Largest JSON request body accepted. MLflow caps log-batch at 1 MB; other requests are smaller.
/// Artifact uploads stream and are not limited by this.
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// The version `/version` reports: the MLflow protocol version this server speaks.
pub const MLFLOW_COMPAT_VERSION: &str = "3.17.2";

/// The whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new().merge(mlflow::router()).merge(registry::router()).merge(artifacts::router()).merge(admin::router()).merge(studies::router()).merge(promotion::router()).merge(webhooks::router());
    Router::new()
        // The mlflow client uses /api; MLflow's own web UI uses the /ajax-api mirror.
        .nest("/api", api.clone())
        .nest("/ajax-api", api)
        .route("/health", get(|| async { "OK" }))
        .route("/version", get(|| async { MLFLOW_COMPAT_VERSION }))
        .route("/metrics", get(crate::observability::metrics_endpoint))
        .merge(crate::ui::router())
        // Runs after routing, so it can name the matched route for the metrics.
        .route_layer(axum::middleware::from_fn(crate::observability::record_route))
        .fallback(endpoint_not_found)
        // Layers run bottom-up: metrics see every request, including refused ones.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::authorize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::observability::track))
        .with_state(state)
}

async fn endpoint_not_found(method: Method, uri: axum::http::Uri) -> impl IntoResponse {
    Error::EndpointNotFound(format!("No endpoint {method} {}", uri.path()))
}

/// An MLflow request: the JSON body of a POST/PATCH/DELETE, or the query string of a GET, read into
/// one [`api::mlflow::Request`]. Malformed input becomes an MLflow error body, never a 5xx.
pub struct MlflowRequest(pub api::mlflow::Request);

impl<S: Send + Sync> FromRequest<S> for MlflowRequest {
    type Rejection = Error;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Error> {
        let query = req.uri().query().unwrap_or("").to_owned();
        let value = if req.method() == Method::GET || req.method() == Method::HEAD {
            query_to_json(&query)
        } else {
            let body = read_body(req).await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                // A DELETE may carry its fields in the query string instead of a body.
                query_to_json(&query)
            } else {
                parse_json(&body)?
            }
        };
        decode_object(value).map(MlflowRequest)
    }
}

/// A JSON body decoded into `T` (the tracker's own endpoints), with MLflow error bodies for
/// malformed or mistyped input.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Error> {
        let body = read_body(req).await?;
        decode_object(parse_json(&body)?).map(Body)
    }
}

/// The query string of a GET decoded into `T` (the tracker's own endpoints), with MLflow error
/// bodies for mistyped input.
pub struct QueryFields<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for QueryFields<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Error> {
        let value = query_to_json(parts.uri.query().unwrap_or(""));
        serde_json::from_value(value).map(QueryFields).map_err(|e| Error::InvalidParameter(format!("Invalid value in request: {e}")))
    }
}

/// The request body, up to [`MAX_JSON_BODY`] bytes.
async fn read_body(req: Request) -> Result<bytes::Bytes, Error> {
    Ok(http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|_| Error::InvalidParameter(format!("Request body exceeds the limit of {MAX_JSON_BODY} bytes")))?
        .to_bytes())
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("Malformed JSON in request body: {e}")))
}

/// A JSON object decoded into `T`; anything but an object is a malformed request.
fn decode_object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    if !value.is_object() {
        return Err(Error::BadRequest("The request body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| Error::InvalidParameter(format!("Invalid value in request: {e}")))
}

/// Who makes a change, for the registry audit log: the token's name when authentication is on,
/// `anonymous` otherwise.
pub struct Actor(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let name = parts.extensions.get::<crate::auth::Principal>().map_or_else(|| "anonymous".to_owned(), |p| p.name.clone());
        Ok(Actor(name))
    }
}

/// Adds `next_page_token` to a search response when there is a next page.
pub(crate) fn with_page_token(mut body: serde_json::Value, token: Option<String>) -> serde_json::Value {
    if let Some(t) = token {
        body["next_page_token"] = serde_json::Value::String(t);
    }
    body
}

/// A query string as a JSON object: every value a string, a repeated key a list of strings.
pub fn query_to_json(query: &str) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = serde_json::Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            None => {
                map.insert(k.into_owned(), v);
            }
            Some(serde_json::Value::Array(list)) => list.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, v]);
            }
        }
    }
    serde_json::Value::Object(map)
}
