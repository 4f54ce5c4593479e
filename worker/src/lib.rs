//! The training worker, and the typed client of the tracker that it and users' Rust training code
//! use.
//!
//! [`client`] speaks the tracker's MLflow REST API (the same protocol as the Python `mlflow`
//! client): experiments, runs, metrics, params, tags and streamed artifacts.

pub mod client;

pub use client::{metric, tag, ClientError, Credentials, RetryPolicy, RunStatus, TrackerClient};
