//! Prometheus metrics of the server itself (work in progress).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Request counters and latency histograms.
#[derive(Debug, Default)]
pub struct Metrics {}

/// Records one request.
pub async fn track(req: Request, next: Next) -> Response {
    next.run(req).await
}
