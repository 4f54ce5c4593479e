//! The web UI: server-rendered HTML (askama templates in `ui-templates/`) with SVG charts drawn by
//! plotters ([`charts`]). Every page reads without JavaScript; the study page refreshes itself
//! with `?live=1`, and promotion is a plain form.
//!
//! ```text
//! GET  /                         experiments, studies, registered models
//! GET  /experiments/{id}         runs: columns, sort, MLflow filter, paging, select to compare
//! GET  /runs/{id}                params, tags, metrics with charts, artifacts, dataset inputs
//! GET  /compare?runs=A&runs=B    overlaid curves, param differences, scatter, parallel coordinates
//! GET  /studies/{name}           trials, best so far, ASHA rungs, param importance, workers
//! GET  /models/{name}            versions, aliases, rules, audit log; POST promotes
//! GET  /charts/...               the SVG charts the pages embed
//! ```
//!
//! No SQL here: pages read through the store and the studies service like the REST API does.

pub mod charts;
mod pages;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// Routes of the UI, at the root of the server.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/experiments/{id}", get(pages::experiment))
        .route("/runs/{id}", get(pages::run))
        .route("/compare", get(pages::compare))
        .route("/studies/{name}", get(pages::study))
        .route("/models/{name}", get(pages::model).post(pages::promote))
        .route("/charts/runs/{id}", get(pages::run_chart))
        .route("/charts/compare", get(pages::compare_chart))
        .route("/charts/scatter", get(pages::scatter_chart))
        .route("/charts/parallel", get(pages::parallel_chart))
        .route("/charts/studies/{name}/best", get(pages::study_best_chart))
        .route("/charts/studies/{name}/curves", get(pages::study_curves_chart))
}

/// A page that could not be shown: an HTML page that says why, with the matching status.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError { status, message: message.into() }
    }
}

impl From<crate::Error> for PageError {
    fn from(e: crate::Error) -> Self {
        let (status, _) = e.status_and_code();
        let message = if status.is_server_error() { "The server could not read its store; see its log.".to_owned() } else { e.to_string() };
        if status.is_server_error() {
            tracing::error!(error = %e, "UI page failed");
        }
        PageError { status, message }
    }
}

impl From<crate::store::Error> for PageError {
    fn from(e: crate::store::Error) -> Self {
        crate::Error::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = pages::ErrorPage { status: self.status.as_u16(), reason: self.status.canonical_reason().unwrap_or("Error").to_owned(), message: self.message };
        (self.status, render(&page)).into_response()
    }
}

/// Renders a template; a template that fails to render is a bug, answered with a plain 500.
fn render<T: askama::Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a UI template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// An SVG response that browsers may cache briefly.
fn svg(body: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"), (axum::http::header::CACHE_CONTROL, "max-age=5")], body).into_response()
}
