//! MLflow-compatible tracking server.
