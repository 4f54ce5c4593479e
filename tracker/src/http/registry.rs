//! The MLflow model registry API (work in progress).

use axum::Router;

use crate::AppState;

/// Routes of this module, relative to `/api`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
}
