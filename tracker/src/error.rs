//! The tracker's one error type and the one place where errors become HTTP statuses.
//!
//! Every handler returns [`Result`]; [`Error::into_response`] writes MLflow's
//! `{"error_code", "message"}` body with the status the mlflow client expects for that code
//! (`exceptions.py::ERROR_CODE_TO_HTTP_STATUS`). Internal details of 5xx errors go to the log,
//! never into the body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is missing or has a bad value: 400 `INVALID_PARAMETER_VALUE`.
    #[error("{0}")]
    InvalidParameter(String),
    /// The request itself is malformed (bad JSON, wrong content type): 400 `BAD_REQUEST`.
    #[error("{0}")]
    BadRequest(String),
    /// The entity exists already: 400 `RESOURCE_ALREADY_EXISTS`.
    #[error("{0}")]
    AlreadyExists(String),
    /// The entity does not exist: 404 `RESOURCE_DOES_NOT_EXIST`.
    #[error("{0}")]
    NotFound(String),
    /// No such route: 404 `ENDPOINT_NOT_FOUND`.
    #[error("{0}")]
    EndpointNotFound(String),
    /// No or bad credentials: 401 `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),
    /// Credentials without the needed scope: 403 `PERMISSION_DENIED`.
    #[error("{0}")]
    PermissionDenied(String),
    /// A conflicting concurrent change, such as a stale lease: 409 `RESOURCE_CONFLICT`.
    #[error("{0}")]
    Conflict(String),
    /// A well-formed request refused by the state it would change, such as a promotion that a
    /// gate rule refuses: 412 `PRECONDITION_FAILED`. Nothing was changed.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The database is momentarily unavailable (pool exhausted, locked): 503, which the client retries.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: 500 `INTERNAL_ERROR`, details logged only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Result with the tracker's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The MLflow error code and HTTP status of this error: the only such mapping in the crate.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Error::AlreadyExists(_) => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            Error::EndpointNotFound(_) => (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "RESOURCE_CONFLICT"),
            Error::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    /// A missing required field, worded as MLflow words it.
    pub fn missing(field: &str) -> Self {
        Error::InvalidParameter(format!(
            "Missing value for required parameter '{field}'. See the API docs for more information about request parameters."
        ))
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NotFound(m) => Error::NotFound(m),
            store::Error::AlreadyExists(m) => Error::AlreadyExists(m),
            store::Error::Invalid(m) => Error::InvalidParameter(m),
            store::Error::Conflict(m) => Error::Conflict(m),
            e if e.is_transient() => {
                // Logged, because a steady stream of these means the database is undersized.
                tracing::warn!(error = %e, "database momentarily unavailable; answered 503");
                Error::Unavailable("database busy, retry".into())
            }
            store::Error::Db(e) => Error::Internal(e.into()),
            store::Error::Sqlite(e) => Error::Internal(e.into()),
        }
    }
}

impl From<crate::artifacts::Error> for Error {
    fn from(e: crate::artifacts::Error) -> Self {
        match e {
            crate::artifacts::Error::InvalidPath(m) => Error::InvalidParameter(m),
            crate::artifacts::Error::NotFound(p) => Error::NotFound(format!("File not found: {p}")),
            crate::artifacts::Error::Store(e) => Error::Internal(e.into()),
            crate::artifacts::Error::Body(m) => Error::BadRequest(m),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() && !matches!(self, Error::Unavailable(_)) {
            tracing::error!(error = ?self, "request failed");
            "internal error; see the server log".to_owned()
        } else {
            self.to_string()
        };
        let body = api::ErrorBody { error_code: code.to_owned(), message };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Workers and the mlflow client back off and retry a 503; one second is a hint.
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
