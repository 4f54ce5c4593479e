//! MLflow-compatible tracking server and model registry.
//!
//! `router` builds the whole HTTP surface over an [`AppState`]; `serve` runs it on a listener the
//! caller bound, so tests bind `127.0.0.1:0`. SQL lives only in [`store`]; errors become HTTP
//! statuses only in [`error`].

pub mod app;
pub mod artifacts;
pub mod auth;
pub mod backup;
pub mod error;
pub mod http;
pub mod observability;
pub mod promotion;
pub mod search;
pub mod store;
pub mod studies;
pub mod ui;
pub mod webhooks;

use std::future::Future;

pub use app::AppState;
pub use error::{Error, Result};

/// The full router: MLflow REST API, artifact proxy, health and version.
pub fn router(state: AppState) -> axum::Router {
    http::router(state)
}

/// Serves `router` on an already-bound listener until `shutdown` resolves, with TCP_NODELAY on
/// every connection (without it, keep-alive clients stall 40 ms per request on delayed ACKs).
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("could not set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
