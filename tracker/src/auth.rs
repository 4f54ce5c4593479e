//! Authentication and scopes (work in progress: every request is allowed).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Authentication settings and token verification.
#[derive(Debug, Clone, Default)]
pub struct Auth {}

/// Checks credentials and the scope a route needs before the handler runs.
pub async fn authorize(State(_app): State<AppState>, req: Request, next: Next) -> Response {
    next.run(req).await
}
