//! Wire types shared by the tracker, the worker and users' Rust code.
//!
//! Only `serde` types live here: no IO, no HTTP. [`mlflow`] mirrors the MLflow REST protocol
//! (field names and shapes as the unmodified `mlflow` client sends and expects them); [`studies`]
//! holds the tracker's own study and worker-protocol endpoints.

pub mod mlflow;
pub mod studies;

use serde::{Deserialize, Serialize};

/// The error body of every failed request: MLflow's `{"error_code", "message"}` shape, which the
/// mlflow client turns into a `RestException` keyed on `error_code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// An MLflow error code such as `RESOURCE_DOES_NOT_EXIST`.
    pub error_code: String,
    /// A human-readable message; names the offending field where there is one.
    pub message: String,
}
