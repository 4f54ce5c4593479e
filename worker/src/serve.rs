//! `worker serve`: answers text generation requests with a registered model version (a base
//! model plus its LoRA adapter), and follows the alias it was given.
//!
//! ```text
//! POST /generate  {"prompt", "max_length"?, "max_new_tokens"?, "temperature"?, "top_p"?, "top_k"?,
//!                  "do_sample"?, "seed"?, "raw"?}
//!              -> {"generated_text", "inference_time", "tokens_generated", "model_version"}
//! GET  /health    -> {"status": "ok", "model", "version", "source", "loaded_time"}
//! GET  /metrics   Prometheus text
//! ```
//!
//! The request and response fields are those of the Ray Serve text-generation deployments that
//! users run today. `max_length` counts the prompt and the answer together, as Hugging Face's
//! `generate` does; `max_new_tokens` counts only the answer and wins when both are given; 64 new
//! tokens when neither is. The prompt is wrapped in the chat template the adapters were trained
//! with, unless `raw` is true.
//!
//! With `models:/NAME@ALIAS`, a background task asks the tracker every `poll` which version the
//! alias points at. When it moves, the new version is downloaded and loaded beside the old one,
//! then swapped in: requests already running finish on the version they started with, new ones
//! get the new version, and none is refused. A version that fails to load is logged and counted
//! (`worker_serve_reloads_total{outcome="failed"}`), and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use api::mlflow::ModelVersion;

use crate::data::jsonl::{Message, Role};
use crate::lm::generate::{generate, SamplingConfig};
use crate::lm::model::CausalLm;
use crate::lm::peft::{load_adapter, CONFIG_FILE};
use crate::lm::tokenizer::TextTokenizer;
use crate::lm::training::load_base;
use crate::lm::Backend;
use crate::TrackerClient;

/// New tokens when a request gives neither `max_length` nor `max_new_tokens`.
const DEFAULT_NEW_TOKENS: usize = 64;

/// A registered model version to serve: `models:/NAME@ALIAS` (followed as the alias moves) or
/// `models:/NAME/VERSION` (fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Registered model name.
    pub name: String,
    /// Which of its versions.
    pub target: Target,
}

/// The alias or the version number of a [`ModelRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Whatever version the alias points at.
    Alias(String),
    /// This version.
    Version(String),
}

impl FromStr for ModelRef {
    type Err = String;

    fn from_str(uri: &str) -> Result<Self, String> {
        let usage = || format!("'{uri}' is not a model URI: use models:/NAME@ALIAS or models:/NAME/VERSION");
        let rest = uri.strip_prefix("models:/").ok_or_else(usage)?;
        if let Some((name, alias)) = rest.rsplit_once('@') {
            if name.is_empty() || alias.is_empty() || alias.contains('/') {
                return Err(usage());
            }
            return Ok(ModelRef { name: name.to_owned(), target: Target::Alias(alias.to_owned()) });
        }
        match rest.rsplit_once('/') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() && version.chars().all(|c| c.is_ascii_digit()) => {
                Ok(ModelRef { name: name.to_owned(), target: Target::Version(version.to_owned()) })
            }
            _ => Err(usage()),
        }
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Alias(alias) => write!(f, "models:/{}@{alias}", self.name),
            Target::Version(version) => write!(f, "models:/{}/{version}", self.name),
        }
    }
}

/// How `worker serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// What to serve.
    pub model: ModelRef,
    /// The base model (`builtin` or a Hugging Face folder); the adapter's
    /// `base_model_name_or_path` when absent.
    pub base: Option<String>,
    /// Where downloaded adapters are kept, one folder per version.
    pub cache_dir: PathBuf,
    /// How often the alias is checked.
    pub poll: Duration,
    /// Generations run at once; further requests wait their turn.
    pub max_concurrent: usize,
}

/// One loaded version: the base with the version's adapter.
struct Loaded {
    version: ModelVersion,
    model: CausalLm<Backend>,
    tokenizer: TextTokenizer,
    loaded_time: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// What `/metrics` reports.
struct ServeMetrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    tokens: Counter,
    latency: Histogram,
    in_flight: Gauge,
    version: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
}

impl ServeMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<OutcomeLabels, Counter>::default();
        let tokens = Counter::default();
        // 1 ms to about 65 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let in_flight = Gauge::default();
        let version = Gauge::default();
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("worker_serve_requests", "Generation requests answered, by outcome (ok, bad_request, error)", requests.clone());
        registry.register("worker_serve_generated_tokens", "Tokens generated", tokens.clone());
        registry.register("worker_serve_inference_seconds", "Time spent generating one answer", latency.clone());
        registry.register("worker_serve_in_flight", "Generation requests being answered or waiting", in_flight.clone());
        registry.register("worker_serve_model_version", "The registered model version being served", version.clone());
        registry.register("worker_serve_reloads", "Loads of a new version after the alias moved, by outcome (ok, failed)", reloads.clone());
        ServeMetrics { registry, requests, tokens, latency, in_flight, version, reloads }
    }

    fn request(&self, outcome: &str) {
        self.requests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    fn reload(&self, outcome: &str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }
}

/// Fetches versions from the tracker and loads them.
struct Loader {
    client: TrackerClient,
    config: ServeConfig,
    /// The last base loaded, kept so that a new version only loads its adapter.
    base: Mutex<Option<(String, CausalLm<Backend>, TextTokenizer)>>,
}

/// The server's shared state.
pub struct Server {
    loader: Loader,
    current: RwLock<Arc<Loaded>>,
    permits: Semaphore,
    metrics: ServeMetrics,
}

impl Server {
    /// Resolves the model URI, downloads the version's adapter and loads it; fails with a
    /// readable message when the model, alias or version does not exist or does not load.
    pub async fn start(client: TrackerClient, config: ServeConfig) -> anyhow::Result<Arc<Server>> {
        anyhow::ensure!(config.max_concurrent >= 1, "`--max-concurrent` must be at least 1");
        let version = resolve(&client, &config.model).await?;
        let permits = Semaphore::new(config.max_concurrent);
        let loader = Loader { client, config, base: Mutex::new(None) };
        let loaded = loader.load(version).await?;
        tracing::info!(model = %loader.config.model, version = %loaded.version.version, source = %loaded.version.source, "serving");
        let metrics = ServeMetrics::new();
        metrics.version.set(loaded.version.version.parse().unwrap_or(0));
        Ok(Arc::new(Server { loader, current: RwLock::new(Arc::new(loaded)), permits, metrics }))
    }

    /// The version being served.
    pub fn version(&self) -> String {
        self.current().version.version.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("the served model's lock is never poisoned").clone()
    }
}

impl Loader {
    /// Downloads (unless cached) and loads a version.
    async fn load(&self, version: ModelVersion) -> anyhow::Result<Loaded> {
        let dir = self.fetch_adapter(&version).await?;
        let base = match &self.config.base {
            Some(base) => base.clone(),
            None => adapter_base(&dir)?,
        };
        let cached = self.base.lock().expect("lock").as_ref().filter(|(name, ..)| *name == base).map(|(_, m, t)| (m.clone(), t.clone()));
        let label = format!("{} version {}", version.name, version.version);
        let (model, tokenizer, fresh_base) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let device = Default::default();
            let (base_model, tokenizer, fresh) = match cached {
                Some((m, t)) => (m, t, false),
                None => {
                    let (_, m, t) = load_base::<Backend>(&base, &device).with_context(|| format!("loading the base model '{base}'"))?;
                    (m, t, true)
                }
            };
            let fresh_base = fresh.then(|| (base.clone(), base_model.clone(), tokenizer.clone()));
            let (_, model) = load_adapter(&dir, base_model).with_context(|| format!("loading the adapter of {label} from {}", dir.display()))?;
            Ok((model, tokenizer, fresh_base))
        })
        .await
        .context("the loading task panicked")??;
        if let Some(base) = fresh_base {
            *self.base.lock().expect("lock") = Some(base);
        }
        Ok(Loaded { version, model, tokenizer, loaded_time: now_ms() })
    }

    /// The version's files in the cache folder, downloaded first when missing. A download goes to
    /// a temporary folder renamed into place once complete, so the cache never holds half a
    /// version.
    async fn fetch_adapter(&self, version: &ModelVersion) -> anyhow::Result<PathBuf> {
        let dir = self.config.cache_dir.join(safe_name(&version.name)).join(&version.version);
        if dir.join(CONFIG_FILE).is_file() {
            return Ok(dir);
        }
        let uri = self.client.get_model_version_download_uri(&version.name, &version.version).await?;
        let part = dir.with_extension(format!("part-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&part).await;
        let files = self.client.download_artifact_uri(&uri, &part).await.with_context(|| format!("downloading {uri}"))?;
        anyhow::ensure!(
            files > 0 && part.join(CONFIG_FILE).is_file(),
            "version {} of '{}' has no adapter at {uri} (no {CONFIG_FILE}); register the folder that holds the PEFT adapter",
            version.version,
            version.name
        );
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::rename(&part, &dir).await.with_context(|| format!("moving the download into {}", dir.display()))?;
        Ok(dir)
    }
}

impl Server {
    /// Checks the alias once; loads and swaps in the version it points at when that changed.
    /// Returns whether a new version is now served.
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        if matches!(self.loader.config.model.target, Target::Version(_)) {
            return Ok(false);
        }
        let version = resolve(&self.loader.client, &self.loader.config.model).await?;
        if version.version == self.version() {
            return Ok(false);
        }
        tracing::info!(model = %self.loader.config.model, from = %self.version(), to = %version.version, "the alias moved: loading the new version");
        match self.loader.load(version).await {
            Ok(loaded) => {
                self.metrics.version.set(loaded.version.version.parse().unwrap_or(0));
                tracing::info!(model = %self.loader.config.model, version = %loaded.version.version, "now serving");
                *self.current.write().expect("lock") = Arc::new(loaded);
                self.metrics.reload("ok");
                Ok(true)
            }
            Err(e) => {
                self.metrics.reload("failed");
                Err(e)
            }
        }
    }

    /// Follows the alias until the process ends.
    pub async fn watch(self: Arc<Self>) {
        if matches!(self.loader.config.model.target, Target::Version(_)) {
            return;
        }
        loop {
            tokio::time::sleep(self.loader.config.poll).await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(model = %self.loader.config.model, error = format!("{e:#}"), "checking the alias failed; still serving version {}", self.version());
            }
        }
    }
}

/// The version a model URI names now.
async fn resolve(client: &TrackerClient, model: &ModelRef) -> anyhow::Result<ModelVersion> {
    let found = match &model.target {
        Target::Alias(alias) => client.get_model_version_by_alias(&model.name, alias).await,
        Target::Version(version) => client.get_model_version(&model.name, version).await,
    };
    found.with_context(|| format!("resolving {model}"))
}

/// The `base_model_name_or_path` the adapter was trained on.
fn adapter_base(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    config["base_model_name_or_path"]
        .as_str()
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{} names no base_model_name_or_path; pass --base", path.display()))
}

/// A model name as one folder name.
fn safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The body of `POST /generate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The user's message.
    pub prompt: String,
    /// Most tokens of prompt and answer together.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Most tokens of the answer; wins over `max_length`.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Softmax temperature when sampling.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold in (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Sample from the k most likely tokens (0: all).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Sample instead of greedy decoding.
    #[serde(default)]
    pub do_sample: bool,
    /// Seed of the sampling stream; a fresh one per request when absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Continue the prompt as plain text instead of answering it as a chat message.
    #[serde(default)]
    pub raw: bool,
}

/// The answer of `POST /generate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateResponse {
    /// The answer (the prompt not repeated).
    pub generated_text: String,
    /// Seconds spent generating.
    pub inference_time: f64,
    /// Tokens in the answer.
    pub tokens_generated: usize,
    /// The registered version that answered.
    pub model_version: String,
}

/// A refused request: 400 with an MLflow-style error body.
#[derive(Debug)]
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(json!({ "error_code": "INVALID_PARAMETER_VALUE", "message": self.0 }))).into_response()
    }
}

impl GenerateRequest {
    /// The sampling settings for a prompt of `prompt_tokens` tokens on a model that reads
    /// `max_positions`.
    fn sampling(&self, prompt_tokens: usize, max_positions: usize) -> Result<SamplingConfig, BadRequest> {
        let bad = |m: String| Err(BadRequest(m));
        if prompt_tokens == 0 {
            return bad("`prompt` must not be empty".into());
        }
        if prompt_tokens >= max_positions {
            return bad(format!("the prompt is {prompt_tokens} tokens; the model reads at most {max_positions}"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && temperature > 0.0) {
            return bad(format!("`temperature` must be a positive number, got {temperature}"));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return bad(format!("`top_p` must be in (0, 1], got {top_p}"));
        }
        let max_new_tokens = match (self.max_new_tokens, self.max_length) {
            (Some(0), _) => return bad("`max_new_tokens` must be at least 1".into()),
            (Some(n), _) => n,
            (None, Some(total)) if total <= prompt_tokens => {
                return bad(format!("`max_length` {total} leaves no room for an answer: the prompt is {prompt_tokens} tokens (or pass `max_new_tokens`)"))
            }
            (None, Some(total)) => total - prompt_tokens,
            (None, None) => DEFAULT_NEW_TOKENS,
        };
        Ok(SamplingConfig {
            max_new_tokens,
            do_sample: self.do_sample,
            temperature,
            top_k: self.top_k.unwrap_or(0),
            top_p,
            seed: self.seed.unwrap_or_else(rand::random),
        })
    }
}

/// The HTTP routes over a started server.
pub fn router(server: Arc<Server>) -> Router {
    Router::new().route("/generate", post(generate_handler)).route("/health", get(health)).route("/metrics", get(metrics)).with_state(server)
}

/// Serves `server` on `listener` until `shutdown` completes, following the alias meanwhile.
pub async fn run(server: Arc<Server>, listener: tokio::net::TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let watcher = tokio::spawn(server.clone().watch());
    let served = axum::serve(listener, router(server)).with_graceful_shutdown(shutdown).await;
    watcher.abort();
    served.context("serving HTTP")
}

async fn generate_handler(State(server): State<Arc<Server>>, body: Bytes) -> Response {
    server.metrics.in_flight.inc();
    let answer = answer(&server, &body).await;
    server.metrics.in_flight.dec();
    match answer {
        Ok(reply) => {
            server.metrics.request("ok");
            server.metrics.tokens.inc_by(reply.tokens_generated as u64);
            server.metrics.latency.observe(reply.inference_time);
            Json(reply).into_response()
        }
        Err(Failure::Bad(e)) => {
            server.metrics.request("bad_request");
            e.into_response()
        }
        Err(Failure::Internal(e)) => {
            server.metrics.request("error");
            tracing::error!(error = %e, "generation failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error_code": "INTERNAL_ERROR", "message": e }))).into_response()
        }
    }
}

enum Failure {
    Bad(BadRequest),
    Internal(String),
}

async fn answer(server: &Server, body: &[u8]) -> Result<GenerateResponse, Failure> {
    let req: GenerateRequest = serde_json::from_slice(body).map_err(|e| Failure::Bad(BadRequest(format!("invalid request body: {e}"))))?;
    let _permit = server.permits.acquire().await.map_err(|e| Failure::Internal(e.to_string()))?;
    // Taken after the wait: a request queued while the alias moved is answered by the new version.
    let loaded = server.current();
    tokio::task::spawn_blocking(move || {
        let text = if req.raw { req.prompt.clone() } else { TextTokenizer::chat_prompt(&[Message { role: Role::User, content: req.prompt.clone() }]) };
        let ids = if req.prompt.trim().is_empty() { Vec::new() } else { loaded.tokenizer.encode(&text) };
        let sampling = req.sampling(ids.len(), loaded.model.rope_cos.dims()[0]).map_err(Failure::Bad)?;
        let started = Instant::now();
        let out = generate(&loaded.model, &ids, &[loaded.tokenizer.im_end, loaded.tokenizer.end_of_text], &sampling);
        Ok(GenerateResponse {
            generated_text: loaded.tokenizer.decode(&out),
            inference_time: started.elapsed().as_secs_f64(),
            tokens_generated: out.len(),
            model_version: loaded.version.version.clone(),
        })
    })
    .await
    .map_err(|e| Failure::Internal(format!("the generation task panicked: {e}")))?
}

async fn health(State(server): State<Arc<Server>>) -> Response {
    let loaded = server.current();
    Json(json!({
        "status": "ok",
        "model": loaded.version.name,
        "version": loaded.version.version,
        "source": loaded.version.source,
        "loaded_time": loaded.loaded_time,
    }))
    .into_response()
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &server.metrics.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris_parse_and_bad_ones_are_named() {
        assert_eq!("models:/ko-lora@production".parse::<ModelRef>().unwrap(), ModelRef { name: "ko-lora".into(), target: Target::Alias("production".into()) });
        assert_eq!("models:/ko-lora/3".parse::<ModelRef>().unwrap(), ModelRef { name: "ko-lora".into(), target: Target::Version("3".into()) });
        assert_eq!("models:/ko-lora@production".parse::<ModelRef>().unwrap().to_string(), "models:/ko-lora@production");
        for bad in ["ko-lora@production", "models:/ko-lora", "models:/@x", "models:/m@", "models:/m/latest", "runs:/abc/adapter"] {
            let err = bad.parse::<ModelRef>().unwrap_err();
            assert!(err.contains(bad) && err.contains("models:/NAME@ALIAS"), "{err}");
        }
    }

    fn request(body: serde_json::Value) -> GenerateRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn lengths_follow_hugging_face_and_bad_settings_are_refused() {
        let s = request(json!({"prompt": "x", "max_length": 30})).sampling(10, 256).unwrap();
        assert_eq!(s.max_new_tokens, 20, "max_length counts the prompt");
        let s = request(json!({"prompt": "x", "max_length": 30, "max_new_tokens": 5})).sampling(10, 256).unwrap();
        assert_eq!(s.max_new_tokens, 5);
        assert_eq!(request(json!({"prompt": "x"})).sampling(10, 256).unwrap().max_new_tokens, DEFAULT_NEW_TOKENS);
        let s = request(json!({"prompt": "x", "do_sample": true, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3})).sampling(10, 256).unwrap();
        assert_eq!((s.do_sample, s.temperature, s.top_p, s.top_k, s.seed), (true, 0.7, 0.9, 40, 3));
        for (body, needle) in [
            (json!({"prompt": "x", "max_length": 10}), "max_length"),
            (json!({"prompt": "x", "max_new_tokens": 0}), "max_new_tokens"),
            (json!({"prompt": "x", "temperature": 0.0}), "temperature"),
            (json!({"prompt": "x", "top_p": 1.5}), "top_p"),
        ] {
            let err = request(body).sampling(10, 256).unwrap_err().0;
            assert!(err.contains(needle), "{err}");
        }
        assert!(request(json!({"prompt": "x"})).sampling(300, 256).unwrap_err().0.contains("at most 256"));
        assert!(request(json!({"prompt": ""})).sampling(0, 256).unwrap_err().0.contains("prompt"));
        let unknown = serde_json::from_value::<GenerateRequest>(json!({"prompt": "x", "num_beams": 4})).unwrap_err().to_string();
        assert!(unknown.contains("num_beams"), "{unknown}");
    }
}
