//! The training worker, and the typed client of the tracker that it and users' Rust training code
//! use.
//!
//! [`client`] speaks the tracker's MLflow REST API (the same protocol as the Python `mlflow`
//! client): experiments, runs, metrics, params, tags and streamed artifacts; and the tracker's own
//! study and worker-lease endpoints (`/api/tracker/...`).
//!
//! [`agent`] is the worker agent behind the `worker` binary: it leases trials of studies from the
//! tracker and runs them through a [`agent::Trainer`] (the exec trainer runs a command).
//!
//! [`serve`] answers generation requests with a registered model version and follows its alias.

pub mod agent;
pub mod client;
pub mod data;
pub mod lm;
pub mod serve;

pub use client::{metric, tag, ClientError, Credentials, RetryPolicy, RunStatus, StudyDetail, TrackerClient};
