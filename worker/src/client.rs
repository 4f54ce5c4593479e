//! A typed async client of the tracker's MLflow REST API, for the worker agent and for users' Rust
//! training code.
//!
//! It speaks the protocol the Python `mlflow` client speaks (`/api/2.0/mlflow/...` and the
//! artifact proxy under `/api/2.0/mlflow-artifacts/artifacts/...`), so it also works against a
//! stock MLflow server started with `--serve-artifacts`. Responses decode into the [`api::mlflow`]
//! types; every failure is one [`ClientError`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), worker::ClientError> {
//! use worker::{RunStatus, TrackerClient};
//!
//! let client = TrackerClient::from_env()?; // MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, ...
//! let exp = client.get_or_create_experiment("lora-sweep").await?;
//! let run = client.create_run(&exp.experiment_id, Some("trial-7"), [("study", "s1")]).await?;
//! let run_id = &run.info.run_id;
//! client.log_params(run_id, [("lr", "3e-4"), ("rank", "8")]).await?;
//! for step in 0..100 {
//!     client.log_metric(run_id, "loss", 1.0 / (step + 1) as f64, step).await?;
//! }
//! client.upload_artifact(run_id, "adapter.safetensors".as_ref(), "checkpoints/adapter.safetensors").await?;
//! client.set_terminated(run_id, RunStatus::Finished).await?;
//! # Ok(()) }
//! ```
//!
//! Retries are deliberately narrow: a request is repeated only when the connection could not be
//! established (the request never reached the server) or when the server answered 503 or 429 (it
//! refused the request without acting on it). Everything else, including a connection dropped
//! mid-request, is returned to the caller, because repeating a half-applied `log-batch` could
//! duplicate metric points.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mlflow::{Experiment, FileInfo, Metric, ModelVersion, Run, RunInfo, Tag};
use api::studies::{
    CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseRequest, LeaseResponse, RegisterWorker, RegisterWorkerResponse,
    ReleaseRequest, ReportRequest, ReportResponse, StudyInfo, TrialInfo,
};
use api::ErrorBody;
use reqwest::{header, Body, RequestBuilder, Response, StatusCode, Url};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The most metrics one `runs/log-batch` call may carry (MLflow's `MAX_METRICS_PER_BATCH`).
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// The most params and tags, together, one `runs/log-batch` call carries. The server accepts 100
/// of each; the Python client sends at most 100 of both together, and so does this one.
pub const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;
/// The most metrics, params and tags together in one `runs/log-batch` call.
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// Page size of `metrics/get-history`, the one the Python client uses.
pub const HISTORY_PAGE_SIZE: i64 = 25_000;

/// Read size of streamed uploads: large enough that a multi-GB checkpoint is not a million tiny
/// body frames, small enough that memory use stays flat.
const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;
/// How much of a non-JSON error body is kept in the message.
const MAX_ERROR_TEXT: usize = 512;

/// Everything that can go wrong talking to the tracker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. `error_code` is MLflow's code from the
    /// `{"error_code", "message"}` body (`RESOURCE_DOES_NOT_EXIST`, `INVALID_PARAMETER_VALUE`, ...);
    /// when the body is not such JSON (a proxy's HTML page, say), the code is derived from the
    /// status and the message holds the start of the body.
    #[error("{error_code} (HTTP {status}): {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// MLflow's error code.
        error_code: String,
        /// The server's message.
        message: String,
    },
    /// The request could not be sent or the response not read (connection refused or reset, TLS,
    /// timeout), after the retries allowed by [`RetryPolicy`].
    #[error("request to the tracker failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The local file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered 2xx with a body this client cannot read, or a download ended short.
    #[error("unexpected response from the tracker: {0}")]
    Protocol(String),
    /// An argument was rejected before anything was sent (an artifact path with `..`, a directory
    /// given as the file to upload, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The run's artifacts are not behind the tracker's artifact proxy (`s3://...`, a local path):
    /// this client only speaks `mlflow-artifacts:` URIs.
    #[error("artifact URI '{0}' is not served by the tracker's artifact proxy (only mlflow-artifacts:/ URIs are supported)")]
    UnsupportedArtifactUri(String),
    /// [`TrackerClient::get_or_create_experiment`] found the name taken by a deleted experiment,
    /// which MLflow does not reuse.
    #[error("experiment '{name}' (id {experiment_id}) is deleted; restore it or pick another name")]
    ExperimentDeleted {
        /// The name asked for.
        name: String,
        /// The deleted experiment's id.
        experiment_id: String,
    },
    /// The tracking URI or credentials are missing or malformed.
    #[error("tracker client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// MLflow's error code, for errors the server reported.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error_code, .. } => Some(error_code),
            _ => None,
        }
    }

    /// The HTTP status, for errors the server reported.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server said the entity does not exist (`RESOURCE_DOES_NOT_EXIST`).
    pub fn is_not_found(&self) -> bool {
        self.error_code() == Some("RESOURCE_DOES_NOT_EXIST")
    }

    /// Whether the server refused the call as conflicting with the current state: for the trial
    /// calls of the worker protocol, a 409 `RESOURCE_CONFLICT` means the lease is stale (the trial
    /// was reassigned, stopped or finished) and the worker must drop the trial.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// Whether the server refused the credentials (401) or their scope (403): retrying cannot help.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN))
    }

    /// Whether trying again later may succeed: a transport failure, a 5xx or a 429. A 4xx other
    /// than 429 (bad input, not found, a 409 "lease lost") will fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        }
    }
}

/// Shorthand for this module's results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>` (`MLFLOW_TRACKING_TOKEN`).
    Bearer(String),
    /// HTTP basic auth (`MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

// Written by hand so that secrets never reach a log line through `{:?}`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { username, .. } => write!(f, "Basic {{ username: {username:?}, password: <redacted> }}"),
        }
    }
}

/// Bounded exponential backoff for the retryable failures (connect errors, 503, 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of any wait, including a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 retries, waiting 100 ms, 200 ms, 400 ms, 800 ms: under two seconds in all, enough for a
    /// tracker restart or a busy database, short enough that a training loop is not stalled long.
    fn default() -> Self {
        RetryPolicy { max_retries: 4, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy { max_retries: 0, ..RetryPolicy::default() }
    }

    /// The wait before retry number `attempt` (0-based); a server hint wins but is capped too.
    fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let backoff = self.initial_backoff.saturating_mul(1u32 << attempt.min(16));
        hint.unwrap_or(backoff).min(self.max_backoff)
    }
}

/// A run's status, as `runs/update` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Still running.
    Running,
    /// Scheduled but not started.
    Scheduled,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped from outside (pruned, cancelled).
    Killed,
}

impl RunStatus {
    /// The wire name: `RUNNING`, `FINISHED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Finished | RunStatus::Failed | RunStatus::Killed)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    /// Parses the wire name, as found in [`RunInfo::status`].
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "RUNNING" => RunStatus::Running,
            "SCHEDULED" => RunStatus::Scheduled,
            "FINISHED" => RunStatus::Finished,
            "FAILED" => RunStatus::Failed,
            "KILLED" => RunStatus::Killed,
            other => return Err(format!("unknown run status '{other}'")),
        })
    }
}

/// A metric point stamped with the current time, for [`TrackerClient::log_batch`].
pub fn metric(key: impl Into<String>, value: f64, step: i64) -> Metric {
    Metric { key: key.into(), value, timestamp: now_ms(), step, dataset_name: None, dataset_digest: None, model_id: None, run_id: None }
}

/// A param or tag, for [`TrackerClient::log_batch`].
pub fn tag(key: impl Into<String>, value: impl Into<String>) -> Tag {
    Tag { key: key.into(), value: value.into() }
}

/// A client of one tracker. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct TrackerClient {
    http: reqwest::Client,
    /// The tracking URI without a trailing slash; may carry a path prefix (`https://host/mlflow`).
    base: Url,
    credentials: Option<Credentials>,
    retry: RetryPolicy,
}

impl TrackerClient {
    /// A client of the tracker at `base_url` (`http://host:5000`, or with a path prefix), without
    /// credentials and with the default [`RetryPolicy`].
    pub fn new(base_url: &str) -> Result<Self> {
        let mut base = Url::parse(base_url.trim()).map_err(|e| ClientError::Config(format!("invalid tracking URI '{base_url}': {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ClientError::Config(format!("tracking URI '{base_url}' must be an http:// or https:// URL")));
        }
        base.set_query(None);
        base.set_fragment(None);
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&trimmed);
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).user_agent(concat!("tracker-worker/", env!("CARGO_PKG_VERSION"))).build()?;
        Ok(TrackerClient { http, base, credentials: None, retry: RetryPolicy::default() })
    }

    /// A client configured as the `mlflow` client would be: `MLFLOW_TRACKING_URI` (required, an
    /// http(s) URL), then `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD` for basic auth,
    /// else `MLFLOW_TRACKING_TOKEN` for a bearer token. Basic wins when both are set, as in
    /// mlflow's `http_request`.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`TrackerClient::from_env`] over any variable lookup (tests pass a map, so they never touch
    /// the process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let uri = var("MLFLOW_TRACKING_URI").ok_or_else(|| ClientError::Config("MLFLOW_TRACKING_URI is not set".into()))?;
        let credentials = match (var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_PASSWORD"), var("MLFLOW_TRACKING_TOKEN")) {
            (Some(username), Some(password), _) => Some(Credentials::Basic { username, password }),
            (_, _, Some(token)) => Some(Credentials::Bearer(token)),
            _ => None,
        };
        Ok(Self::new(&uri)?.with_credentials(credentials))
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(self, token: impl Into<String>) -> Self {
        self.with_credentials(Some(Credentials::Bearer(token.into())))
    }

    /// Sets (or clears) the credentials sent with every request.
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Uses a caller-built `reqwest::Client` (custom TLS roots, proxies, timeouts). Avoid an
    /// overall request timeout: it would cut off large artifact transfers.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The tracking URI this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // ----- experiments -----

    /// The experiment named `name`, or `None` when there is none.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        #[derive(Deserialize)]
        struct Reply {
            experiment: Experiment,
        }
        match self.get::<Reply>("experiments/get-by-name", &[("experiment_name", name)]).await {
            Ok(r) => Ok(Some(r.experiment)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The experiment with id `experiment_id`.
    pub async fn get_experiment(&self, experiment_id: &str) -> Result<Experiment> {
        #[derive(Deserialize)]
        struct Reply {
            experiment: Experiment,
        }
        Ok(self.get::<Reply>("experiments/get", &[("experiment_id", experiment_id)]).await?.experiment)
    }

    /// Creates an experiment and returns its id; `RESOURCE_ALREADY_EXISTS` when the name is taken.
    pub async fn create_experiment(&self, name: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Reply {
            experiment_id: String,
        }
        Ok(self.post::<Reply>("experiments/create", &json!({ "name": name })).await?.experiment_id)
    }

    /// The experiment named `name`, created if missing (`mlflow.set_experiment`). Safe to call from
    /// many workers at once: the loser of a creation race reads the winner's experiment. A deleted
    /// experiment of that name is an error ([`ClientError::ExperimentDeleted`]), as in mlflow.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        let existing = match self.get_experiment_by_name(name).await? {
            Some(e) => e,
            None => match self.create_experiment(name).await {
                Ok(id) => return self.get_experiment(&id).await,
                Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                    .get_experiment_by_name(name)
                    .await?
                    .ok_or_else(|| ClientError::Protocol(format!("experiment '{name}' already exists but cannot be found by name")))?,
                Err(e) => return Err(e),
            },
        };
        if existing.lifecycle_stage == "deleted" {
            return Err(ClientError::ExperimentDeleted { name: name.to_owned(), experiment_id: existing.experiment_id });
        }
        Ok(existing)
    }

    // ----- runs -----

    /// Starts a run in `experiment_id`, now, with optional name and tags. The user is the
    /// `mlflow.user` tag when given, else `$USER`; the server names unnamed runs itself.
    pub async fn create_run<K, V>(&self, experiment_id: &str, run_name: Option<&str>, tags: impl IntoIterator<Item = (K, V)>) -> Result<Run>
    where
        K: Into<String>,
        V: Into<String>,
    {
        #[derive(Deserialize)]
        struct Reply {
            run: Run,
        }
        let tags: Vec<Tag> = tags.into_iter().map(|(k, v)| tag(k, v)).collect();
        let user_id = tags
            .iter()
            .find(|t| t.key == "mlflow.user")
            .map(|t| t.value.clone())
            .or_else(|| std::env::var("USER").ok().or_else(|| std::env::var("USERNAME").ok()))
            .unwrap_or_default();
        let mut body = json!({ "experiment_id": experiment_id, "start_time": now_ms(), "user_id": user_id, "tags": tags });
        if let Some(name) = run_name {
            body["run_name"] = json!(name);
        }
        Ok(self.post::<Reply>("runs/create", &body).await?.run)
    }

    /// The run with its params, tags and latest metrics.
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        #[derive(Deserialize)]
        struct Reply {
            run: Run,
        }
        Ok(self.get::<Reply>("runs/get", &[("run_id", run_id)]).await?.run)
    }

    /// Ends (or re-opens) a run: sets `status` and, for an ended status, `end_time` = now.
    pub async fn set_terminated(&self, run_id: &str, status: RunStatus) -> Result<RunInfo> {
        #[derive(Deserialize)]
        struct Reply {
            run_info: RunInfo,
        }
        let mut body = json!({ "run_id": run_id, "run_uuid": run_id, "status": status.as_str() });
        if status.is_terminal() {
            body["end_time"] = json!(now_ms());
        }
        Ok(self.post::<Reply>("runs/update", &body).await?.run_info)
    }

    // ----- metrics, params, tags -----

    /// Logs one metric point at `step`, stamped now. For many points use [`Self::log_batch`].
    pub async fn log_metric(&self, run_id: &str, key: &str, value: f64, step: i64) -> Result<()> {
        let body = json!({
            "run_id": run_id, "run_uuid": run_id, "key": key,
            "value": json_f64(value), "timestamp": now_ms(), "step": step,
        });
        self.post::<IgnoredAny>("runs/log-metric", &body).await.map(drop)
    }

    /// Logs one param. Params are write-once: logging a different value for an existing key is
    /// `INVALID_PARAMETER_VALUE`; the same value again is accepted.
    pub async fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        let body = json!({ "run_id": run_id, "run_uuid": run_id, "key": key, "value": value });
        self.post::<IgnoredAny>("runs/log-parameter", &body).await.map(drop)
    }

    /// Logs several params through [`Self::log_batch`].
    pub async fn log_params<K, V>(&self, run_id: &str, params: impl IntoIterator<Item = (K, V)>) -> Result<()>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let params: Vec<Tag> = params.into_iter().map(|(k, v)| tag(k, v)).collect();
        self.log_batch(run_id, &[], &params, &[]).await
    }

    /// Sets a run tag (overwriting any previous value).
    pub async fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        let body = json!({ "run_id": run_id, "run_uuid": run_id, "key": key, "value": value });
        self.post::<IgnoredAny>("runs/set-tag", &body).await.map(drop)
    }

    /// Logs metrics, params and tags, split into as many `runs/log-batch` calls as MLflow's limits
    /// need ([`MAX_METRICS_PER_BATCH`], [`MAX_PARAMS_TAGS_PER_BATCH`], [`MAX_ENTITIES_PER_BATCH`]).
    /// Calls go out in order, params and tags first, metrics in the order given. The batch as a
    /// whole is not atomic: when a call fails, the calls before it have been applied.
    pub async fn log_batch(&self, run_id: &str, metrics: &[Metric], params: &[Tag], tags: &[Tag]) -> Result<()> {
        #[derive(Serialize)]
        struct LogBatch<'a> {
            run_id: &'a str,
            metrics: &'a [Metric],
            params: &'a [Tag],
            tags: &'a [Tag],
        }
        for (metrics, params, tags) in batch_chunks(metrics, params, tags) {
            let body = serde_json::to_value(LogBatch { run_id, metrics, params, tags })
                .map_err(|e| ClientError::InvalidArgument(format!("cannot encode log-batch: {e}")))?;
            self.post::<IgnoredAny>("runs/log-batch", &body).await?;
        }
        Ok(())
    }

    /// Every point of metric `key` of a run, in (timestamp, step) order, following page tokens.
    /// An unknown key gives an empty history.
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        self.metric_history_paged(run_id, key, HISTORY_PAGE_SIZE).await
    }

    /// [`Self::metric_history`] with `page_size` points per request.
    pub async fn metric_history_paged(&self, run_id: &str, key: &str, page_size: i64) -> Result<Vec<Metric>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            metrics: Vec<Metric>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        if page_size < 1 {
            return Err(ClientError::InvalidArgument(format!("page_size must be at least 1, got {page_size}")));
        }
        let page_size = page_size.to_string();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("run_id", run_id), ("run_uuid", run_id), ("metric_key", key), ("max_results", page_size.as_str())];
            if let Some(t) = &token {
                query.push(("page_token", t.as_str()));
            }
            let page: Page = self.get("metrics/get-history", &query).await?;
            out.extend(page.metrics);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                // A server that hands back the token it was given would loop us forever.
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(ClientError::Protocol("metrics/get-history returned the same page token twice".into()))
                }
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    // ----- artifacts -----

    /// The run's artifact root inside the artifact proxy (`<exp>/<run>/artifacts`), from its
    /// `artifact_uri` (`mlflow-artifacts:/<exp>/<run>/artifacts`).
    pub async fn artifact_root(&self, run_id: &str) -> Result<String> {
        let run = self.get_run(run_id).await?;
        proxy_path(&run.info.artifact_uri)
    }

    /// Uploads the local file `local` as `artifact_path` (a relative path with the file name, such
    /// as `checkpoints/step_100.bin`) under the run's artifact root. The file is streamed from
    /// disk, never held in memory whole; a retried attempt reopens it.
    pub async fn upload_artifact(&self, run_id: &str, local: &Path, artifact_path: &str) -> Result<()> {
        let meta = tokio::fs::metadata(local).await.map_err(io_error(local))?;
        if !meta.is_file() {
            return Err(ClientError::InvalidArgument(format!("{} is not a regular file", local.display())));
        }
        let url = self.artifact_url(&self.artifact_root(run_id).await?, artifact_path)?;
        let len = meta.len();
        self.send(|| {
            // Opened per attempt: a stream cannot be rewound. `std::fs::File::open` is one quick
            // syscall; the reads, the part that takes time, go through tokio.
            let file = std::fs::File::open(local).map_err(io_error(local))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), UPLOAD_CHUNK_BYTES);
            Ok(self
                .http
                .put(url.clone())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                // Known up front, so proxies see a plain upload and a file that changes size while
                // it is being sent fails the request instead of storing a torn copy.
                .header(header::CONTENT_LENGTH, len)
                .body(Body::wrap_stream(stream)))
        })
        .await
        .map(drop)
    }

    /// Downloads the artifact `artifact_path` of a run to the file `dest` (parent folders are
    /// created), streaming it to disk, and returns its size. The bytes go to a temporary file
    /// beside `dest` that is renamed into place only once complete, so `dest` is never a
    /// truncated copy.
    pub async fn download_artifact(&self, run_id: &str, artifact_path: &str, dest: &Path) -> Result<u64> {
        let url = self.artifact_url(&self.artifact_root(run_id).await?, artifact_path)?;
        self.download_url(url, artifact_path, dest).await
    }

    /// Streams the proxy file at `url` into `dest` through a `.part` file renamed into place.
    async fn download_url(&self, url: Url, artifact_path: &str, dest: &Path) -> Result<u64> {
        let resp = self.send(|| Ok(self.http.get(url.clone()))).await?;
        let expected = resp.content_length();
        let file_name = dest.file_name().ok_or_else(|| ClientError::InvalidArgument(format!("{} does not name a file", dest.display())))?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(io_error(parent))?;
        }
        let mut part_name = std::ffi::OsString::from(".");
        part_name.push(file_name);
        part_name.push(".part");
        let part = dest.with_file_name(part_name);
        let written = write_body(resp, &part).await;
        let result = match written {
            Ok(n) if expected.is_some_and(|e| e != n) => {
                Err(ClientError::Protocol(format!("download of '{artifact_path}' ended after {n} of {} bytes", expected.unwrap_or_default())))
            }
            Ok(n) => tokio::fs::rename(&part, dest).await.map(|()| n).map_err(io_error(dest)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result
    }

    /// The entries directly inside the artifact folder `path` of a run (`""` for the root), as the
    /// artifact proxy lists them (`GET /api/2.0/mlflow-artifacts/artifacts?path=`). Entry paths are
    /// made relative to the run's artifact root, as `mlflow artifacts list` prints them. A missing
    /// folder lists as empty.
    pub async fn list_artifacts(&self, run_id: &str, path: &str) -> Result<Vec<FileInfo>> {
        // The tracker does not serve MLflow's `/api/2.0/mlflow/artifacts/list` (run_id, path), and
        // stock MLflow servers with `--serve-artifacts` answer the proxy listing too, so the
        // proxy's listing is the one both speak.
        let root = self.artifact_root(run_id).await?;
        let rel = path.trim_matches('/');
        let full = if rel.is_empty() {
            root.clone()
        } else {
            // Same checks as for a file path: no traversal out of the run's folder.
            self.artifact_url(&root, rel)?;
            format!("{root}/{rel}")
        };
        let mut files: Vec<FileInfo> = self
            .proxy_listing(&full)
            .await?
            .into_iter()
            .map(|f| {
                // The proxy gives names relative to the listed folder; MLflow's own listing gives
                // paths relative to the run's root. Normalise to the latter.
                let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_owned();
                let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                FileInfo { path, ..f }
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The artifact proxy's listing of the folder `full` (a path below the proxy's root).
    async fn proxy_listing(&self, full: &str) -> Result<Vec<FileInfo>> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            files: Vec<FileInfo>,
        }
        let url = self.endpoint("/api/2.0/mlflow-artifacts/artifacts");
        Ok(decode::<Listing>(self.send(|| Ok(self.http.get(url.clone()).query(&[("path", full)]))).await?).await?.files)
    }

    /// Downloads every file below the artifact URI `uri` (`mlflow-artifacts:/...`, as
    /// `model-versions/get-download-uri` answers) into the folder `dest`, keeping the structure,
    /// and returns the number of files.
    pub async fn download_artifact_uri(&self, uri: &str, dest: &Path) -> Result<usize> {
        self.download_tree(&proxy_path(uri)?, dest).await
    }

    /// Downloads every file below the proxy folder `dir` into `dest`, keeping the structure.
    async fn download_tree(&self, dir: &str, dest: &Path) -> Result<usize> {
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let full = if rel.is_empty() { dir.to_owned() } else { format!("{dir}/{rel}") };
            for entry in self.proxy_listing(&full).await? {
                let name = entry.path.rsplit('/').next().unwrap_or(&entry.path);
                let path = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
                if entry.is_dir {
                    pending.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        tokio::fs::create_dir_all(dest).await.map_err(io_error(dest))?;
        for file in &files {
            // `artifact_url` refuses `..` and absolute names a hostile listing might hold.
            self.download_url(self.artifact_url(dir, file)?, file, &dest.join(file)).await?;
        }
        Ok(files.len())
    }

    /// Every file (not folder) below the artifact folder `path` of a run, recursively, with paths
    /// relative to the run's artifact root.
    pub async fn list_artifacts_recursive(&self, run_id: &str, path: &str) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        let mut pending = vec![path.trim_matches('/').to_owned()];
        while let Some(folder) = pending.pop() {
            for entry in self.list_artifacts(run_id, &folder).await? {
                if entry.is_dir {
                    pending.push(entry.path);
                } else {
                    out.push(entry);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Downloads the artifact folder `path` of a run into the local folder `dest`, keeping the
    /// structure below `path`, and returns the number of files. An empty or missing folder
    /// downloads nothing.
    pub async fn download_artifact_dir(&self, run_id: &str, path: &str, dest: &Path) -> Result<usize> {
        let root = self.artifact_root(run_id).await?;
        let prefix = path.trim_matches('/');
        if prefix.is_empty() {
            return self.download_tree(&root, dest).await;
        }
        // Same checks as for a file path: no traversal out of the run's folder.
        self.artifact_url(&root, prefix)?;
        self.download_tree(&format!("{root}/{prefix}"), dest).await
    }

    /// Uploads the local file or folder `local` under the artifact folder `artifact_dir` of a run:
    /// a file as `artifact_dir/<its name>`, a folder's contents with their structure beneath
    /// `artifact_dir`. Returns the number of files uploaded. Symbolic links are followed.
    pub async fn upload_artifact_tree(&self, run_id: &str, local: &Path, artifact_dir: &str) -> Result<usize> {
        let dir = artifact_dir.trim_matches('/');
        let meta = tokio::fs::metadata(local).await.map_err(io_error(local))?;
        let files: Vec<(PathBuf, String)> = if meta.is_dir() {
            let root = local.to_owned();
            tokio::task::spawn_blocking(move || walk_files(&root))
                .await
                .map_err(|e| ClientError::Protocol(format!("listing {} panicked: {e}", local.display())))??
        } else {
            let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| ClientError::InvalidArgument(format!("{} has no UTF-8 file name", local.display())))?;
            vec![(local.to_owned(), name.to_owned())]
        };
        for (path, rel) in &files {
            let target = if dir.is_empty() { rel.clone() } else { format!("{dir}/{rel}") };
            self.upload_artifact(run_id, path, &target).await?;
        }
        Ok(files.len())
    }

    /// The proxy URL of `artifact_path` under `root`, each segment percent-encoded.
    fn artifact_url(&self, root: &str, artifact_path: &str) -> Result<Url> {
        let rel = artifact_path.trim_end_matches('/');
        let bad = |why: &str| ClientError::InvalidArgument(format!("artifact path '{artifact_path}': {why}"));
        if rel.is_empty() {
            return Err(bad("must name a file"));
        }
        if rel.starts_with('/') || rel.contains('\\') {
            return Err(bad("must be a relative path with '/' separators"));
        }
        if rel.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(bad("empty, '.' and '..' segments are not allowed"));
        }
        let mut url = self.endpoint("/api/2.0/mlflow-artifacts/artifacts");
        url.path_segments_mut()
            .map_err(|()| ClientError::Config(format!("tracking URI '{}' cannot take a path", self.base)))?
            .extend(root.split('/').filter(|s| !s.is_empty()))
            .extend(rel.split('/'));
        Ok(url)
    }

    // ----- model registry -----

    /// Creates a registered model.
    pub async fn create_registered_model(&self, name: &str) -> Result<()> {
        self.post::<Value>("registered-models/create", &json!({ "name": name })).await.map(drop)
    }

    /// Registers a new version of `name` from `source` (such as `runs:/<run_id>/adapter`).
    pub async fn create_model_version(&self, name: &str, source: &str, run_id: &str) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Reply {
            model_version: ModelVersion,
        }
        Ok(self.post::<Reply>("model-versions/create", &json!({ "name": name, "source": source, "run_id": run_id })).await?.model_version)
    }

    /// Points `alias` of model `name` at `version` (MLflow's ungated alias endpoint).
    pub async fn set_model_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.post::<Value>("registered-models/alias", &json!({ "name": name, "alias": alias, "version": version })).await.map(drop)
    }

    /// A version of a registered model.
    pub async fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Reply {
            model_version: ModelVersion,
        }
        Ok(self.get::<Reply>("model-versions/get", &[("name", name), ("version", version)]).await?.model_version)
    }

    /// The version that `alias` of model `name` points at.
    pub async fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Reply {
            model_version: ModelVersion,
        }
        Ok(self.get::<Reply>("registered-models/alias", &[("name", name), ("alias", alias)]).await?.model_version)
    }

    /// Where a version's files are, as an artifact URI ([`Self::download_artifact_uri`] fetches them).
    pub async fn get_model_version_download_uri(&self, name: &str, version: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Reply {
            artifact_uri: String,
        }
        Ok(self.get::<Reply>("model-versions/get-download-uri", &[("name", name), ("version", version)]).await?.artifact_uri)
    }

    // ----- studies and the worker protocol (`/api/tracker/...`) -----

    /// `workers/register`: announces (or updates) this worker and returns the tracker's timing
    /// rules.
    pub async fn register_worker(&self, req: &RegisterWorker) -> Result<RegisterWorkerResponse> {
        self.tracker_post(&["workers", "register"], req).await
    }

    /// `workers/lease`: asks for a trial. Idempotent while the worker holds a live lease.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseResponse> {
        self.tracker_post(&["workers", "lease"], req).await
    }

    /// `workers/heartbeat`: renews the worker's leases and fetches commands about them.
    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        self.tracker_post(&["workers", "heartbeat"], req).await
    }

    /// Reports an intermediate value of trial `trial` of `study`. A 409 ([`ClientError::is_conflict`])
    /// means the lease is stale.
    pub async fn report(&self, study: &str, trial: u64, req: &ReportRequest) -> Result<ReportResponse> {
        self.tracker_post(&["studies", study, "trials", &trial.to_string(), "report"], req).await
    }

    /// Marks the trial's attempt complete.
    pub async fn complete(&self, study: &str, trial: u64, req: &CompleteRequest) -> Result<TrialInfo> {
        self.tracker_post(&["studies", study, "trials", &trial.to_string(), "complete"], req).await
    }

    /// Marks the trial's attempt failed.
    pub async fn fail(&self, study: &str, trial: u64, req: &FailRequest) -> Result<TrialInfo> {
        self.tracker_post(&["studies", study, "trials", &trial.to_string(), "fail"], req).await
    }

    /// Gives the trial back without fault (preemption, shutdown).
    pub async fn release(&self, study: &str, trial: u64, req: &ReleaseRequest) -> Result<TrialInfo> {
        self.tracker_post(&["studies", study, "trials", &trial.to_string(), "release"], req).await
    }

    /// A study and its trials (`studies/get`).
    pub async fn get_study(&self, name: &str) -> Result<StudyDetail> {
        let url = self.tracker_url(&["studies", "get"])?;
        decode(self.send(|| Ok(self.http.get(url.clone()).query(&[("name", name)]))).await?).await
    }

    /// Every study (`studies/list`).
    pub async fn list_studies(&self) -> Result<Vec<StudyInfo>> {
        #[derive(Deserialize)]
        struct Reply {
            #[serde(default)]
            studies: Vec<StudyInfo>,
        }
        let url = self.tracker_url(&["studies", "list"])?;
        Ok(decode::<Reply>(self.send(|| Ok(self.http.get(url.clone()))).await?).await?.studies)
    }

    /// `/api/tracker/<segments...>`, each segment percent-encoded (study names are restricted,
    /// but an odd one must not reach another endpoint).
    fn tracker_url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.endpoint("/api/tracker");
        url.path_segments_mut().map_err(|()| ClientError::Config(format!("tracking URI '{}' cannot take a path", self.base)))?.extend(segments);
        Ok(url)
    }

    async fn tracker_post<T: DeserializeOwned>(&self, segments: &[&str], body: &impl Serialize) -> Result<T> {
        let url = self.tracker_url(segments)?;
        let body = serde_json::to_value(body).map_err(|e| ClientError::InvalidArgument(format!("cannot encode request: {e}")))?;
        decode(self.send(|| Ok(self.http.post(url.clone()).json(&body))).await?).await
    }

    // ----- plumbing -----

    /// `base` + `path` (which starts with `/`).
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url
    }

    async fn get<T: DeserializeOwned>(&self, method: &str, query: &[(&str, &str)]) -> Result<T> {
        let url = self.endpoint(&format!("/api/2.0/mlflow/{method}"));
        decode(self.send(|| Ok(self.http.get(url.clone()).query(query))).await?).await
    }

    async fn post<T: DeserializeOwned>(&self, method: &str, body: &Value) -> Result<T> {
        let url = self.endpoint(&format!("/api/2.0/mlflow/{method}"));
        decode(self.send(|| Ok(self.http.post(url.clone()).json(body))).await?).await
    }

    /// Sends the request `make` builds, retrying per the policy; a non-2xx answer becomes
    /// [`ClientError::Api`]. `make` runs once per attempt because a request (and a streamed body)
    /// can be sent only once.
    async fn send(&self, make: impl Fn() -> Result<RequestBuilder>) -> Result<Response> {
        let mut attempt = 0;
        loop {
            let mut req = make()?;
            req = match &self.credentials {
                Some(Credentials::Bearer(token)) => req.bearer_auth(token),
                Some(Credentials::Basic { username, password }) => req.basic_auth(username, Some(password)),
                None => req,
            };
            let outcome = req.send().await;
            // Some(hint) when this failure may be retried: the request never reached the server,
            // or the server turned it away without acting on it.
            let retry_hint = match &outcome {
                Ok(resp) if matches!(resp.status(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) => Some(retry_after(resp)),
                Err(e) if e.is_connect() => Some(None),
                _ => None,
            };
            match retry_hint {
                Some(hint) if attempt < self.retry.max_retries => {
                    tokio::time::sleep(self.retry.delay(attempt, hint)).await;
                    attempt += 1;
                }
                _ => {
                    let resp = outcome?;
                    return if resp.status().is_success() { Ok(resp) } else { Err(api_error(resp).await) };
                }
            }
        }
    }
}

/// A study with its trials, as `studies/get` returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StudyDetail {
    /// The study.
    pub study: StudyInfo,
    /// Its trials, by number.
    #[serde(default)]
    pub trials: Vec<TrialInfo>,
}

/// Every regular file below `root` (symbolic links followed), with its `/`-separated path
/// relative to `root`, sorted by that path.
fn walk_files(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut pending = vec![(root.to_owned(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|n| ClientError::InvalidArgument(format!("{} is not a UTF-8 name", Path::new(&n).display())))?;
            let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let meta = std::fs::metadata(&path).map_err(io_error(&path))?;
            if meta.is_dir() {
                pending.push((path, child_rel));
            } else if meta.is_file() {
                out.push((path, child_rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Splits a log-batch into calls within MLflow's limits: each call takes up to 100 params and
/// tags (params first), then fills up with metrics to 1000 entities.
fn batch_chunks<'a>(mut metrics: &'a [Metric], mut params: &'a [Tag], mut tags: &'a [Tag]) -> Vec<(&'a [Metric], &'a [Tag], &'a [Tag])> {
    let mut chunks = Vec::new();
    while !(metrics.is_empty() && params.is_empty() && tags.is_empty()) {
        let np = params.len().min(MAX_PARAMS_TAGS_PER_BATCH);
        let nt = tags.len().min(MAX_PARAMS_TAGS_PER_BATCH - np);
        let nm = metrics.len().min(MAX_METRICS_PER_BATCH).min(MAX_ENTITIES_PER_BATCH - np - nt);
        chunks.push((&metrics[..nm], &params[..np], &tags[..nt]));
        (metrics, params, tags) = (&metrics[nm..], &params[np..], &tags[nt..]);
    }
    chunks
}

/// The proxy path of an `mlflow-artifacts:` URI: `mlflow-artifacts:/1/abc/artifacts` and
/// `mlflow-artifacts://host:5000/1/abc/artifacts` both give `1/abc/artifacts`. The host form is
/// served by this client's own tracker; mlflow would connect to that host instead.
fn proxy_path(artifact_uri: &str) -> Result<String> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| ClientError::UnsupportedArtifactUri(artifact_uri.to_owned()))?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Ok(path.trim_matches('/').to_owned())
}

/// Streams a response body into `path` (created or truncated) and returns the byte count.
async fn write_body(mut resp: Response, path: &Path) -> Result<u64> {
    let mut file = tokio::fs::File::create(path).await.map_err(io_error(path))?;
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        file.write_all(&chunk).await.map_err(io_error(path))?;
        n += chunk.len() as u64;
    }
    // tokio's File hands writes to a blocking thread; flush waits for the last one to land.
    file.flush().await.map_err(io_error(path))?;
    Ok(n)
}

/// Decodes a 2xx JSON body; an empty body reads as `{}`.
async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T> {
    let bytes = resp.bytes().await?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("cannot decode {}: {e}", std::any::type_name::<T>())))
}

/// The [`ClientError::Api`] of an error response.
async fn api_error(resp: Response) -> ClientError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api { status, error_code: body.error_code, message: body.message },
        Err(_) => {
            let mut message: String = text.trim().chars().take(MAX_ERROR_TEXT).collect();
            if message.is_empty() {
                message = status.canonical_reason().unwrap_or("no message").to_owned();
            }
            ClientError::Api { status, error_code: fallback_code(status).to_owned(), message }
        }
    }
}

/// MLflow's error code for a status, for error bodies that carry none (mlflow's
/// `ERROR_CODE_TO_HTTP_STATUS`, read backwards).
fn fallback_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BAD_REQUEST",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "ENDPOINT_NOT_FOUND",
        409 => "RESOURCE_CONFLICT",
        429 => "REQUEST_LIMIT_EXCEEDED",
        503 => "TEMPORARILY_UNAVAILABLE",
        s if s >= 500 => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    }
}

/// A `Retry-After` given in seconds (the HTTP-date form is ignored; the backoff applies).
fn retry_after(resp: &Response) -> Option<Duration> {
    let value = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A double as JSON; NaN and infinities as the strings proto3 JSON uses (`json!` would write null).
fn json_f64(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io { path: path.to_owned(), source }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(n: usize) -> Vec<Metric> {
        (0..n).map(|i| metric("m", i as f64, i as i64)).collect()
    }

    fn tags(n: usize) -> Vec<Tag> {
        (0..n).map(|i| tag(format!("k{i}"), "v")).collect()
    }

    #[test]
    fn batches_respect_mlflow_limits_and_keep_order() {
        let (m, p, t) = (metrics(2500), tags(150), tags(120));
        let chunks = batch_chunks(&m, &p, &t);
        for (cm, cp, ct) in &chunks {
            assert!(cm.len() <= MAX_METRICS_PER_BATCH);
            assert!(cp.len() + ct.len() <= MAX_PARAMS_TAGS_PER_BATCH);
            assert!(cm.len() + cp.len() + ct.len() <= MAX_ENTITIES_PER_BATCH);
        }
        let sent_m: Vec<i64> = chunks.iter().flat_map(|c| c.0.iter().map(|m| m.step)).collect();
        assert_eq!(sent_m, (0..2500).collect::<Vec<_>>());
        assert_eq!(chunks.iter().map(|c| c.1.len()).sum::<usize>(), 150);
        assert_eq!(chunks.iter().map(|c| c.2.len()).sum::<usize>(), 120);
        // 270 params+tags need 3 calls; metrics fill the rest: 900 + 900 + 700 (70 pt) = 2500.
        assert_eq!(chunks.len(), 3);
        assert!(batch_chunks(&[], &[], &[]).is_empty());
        assert_eq!(batch_chunks(&metrics(2000), &[], &[]).len(), 2);
    }

    #[test]
    fn artifact_uris_resolve_to_proxy_paths() {
        assert_eq!(proxy_path("mlflow-artifacts:/1/abc/artifacts").unwrap(), "1/abc/artifacts");
        assert_eq!(proxy_path("mlflow-artifacts://host:5000/1/abc/artifacts/").unwrap(), "1/abc/artifacts");
        assert!(matches!(proxy_path("s3://bucket/1/abc"), Err(ClientError::UnsupportedArtifactUri(_))));
    }

    #[test]
    fn artifact_urls_encode_segments_and_refuse_traversal() {
        let c = TrackerClient::new("http://127.0.0.1:5000/prefix/").unwrap();
        let url = c.artifact_url("1/abc/artifacts", "dir/a b#1.txt").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:5000/prefix/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/dir/a%20b%231.txt");
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b"] {
            assert!(matches!(c.artifact_url("1/abc/artifacts", bad), Err(ClientError::InvalidArgument(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn env_configuration_follows_mlflow() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        assert!(matches!(TrackerClient::from_vars(vars(&[])), Err(ClientError::Config(_))));
        assert!(matches!(TrackerClient::from_vars(vars(&[("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")])), Err(ClientError::Config(_))));
        let c = TrackerClient::from_vars(vars(&[("MLFLOW_TRACKING_URI", "http://h:5000/"), ("MLFLOW_TRACKING_TOKEN", "t")])).unwrap();
        assert_eq!(c.credentials, Some(Credentials::Bearer("t".into())));
        assert_eq!(c.endpoint("/api/x").as_str(), "http://h:5000/api/x");
        let c = TrackerClient::from_vars(vars(&[
            ("MLFLOW_TRACKING_URI", "https://h"),
            ("MLFLOW_TRACKING_TOKEN", "t"),
            ("MLFLOW_TRACKING_USERNAME", "u"),
            ("MLFLOW_TRACKING_PASSWORD", "p"),
        ]))
        .unwrap();
        assert_eq!(c.credentials, Some(Credentials::Basic { username: "u".into(), password: "p".into() }));
        assert!(!format!("{c:?}").contains("\"p\""), "password leaked into Debug");
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, None), Duration::from_millis(100));
        assert_eq!(p.delay(3, None), Duration::from_millis(800));
        assert_eq!(p.delay(30, None), p.max_backoff);
        assert_eq!(p.delay(0, Some(Duration::from_secs(3600))), p.max_backoff);
    }

    #[test]
    fn doubles_decode_exactly() {
        // serde_json's default float parser may be 1 ULP off; the `float_roundtrip` feature fixes it.
        let values = [1.0 / 11.0, 0.1, 1.0 / 3.0, 2.0f64.sqrt(), 1e-300, 123_456_789.123_456_78];
        for v in values {
            let text = serde_json::to_string(&metric("m", v, 0)).unwrap();
            let back: Metric = serde_json::from_str(&text).unwrap();
            assert_eq!(back.value.to_bits(), v.to_bits(), "{v} came back as {}", back.value);
        }
    }

    #[test]
    fn non_finite_values_are_proto3_strings() {
        assert_eq!(json_f64(f64::NAN), json!("NaN"));
        assert_eq!(json_f64(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(json_f64(1.5), json!(1.5));
    }
}
