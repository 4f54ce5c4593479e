//! Shared harness of the tracker's integration tests: a fresh database per test (a temp SQLite
//! file, or a uniquely named Postgres database when `TEST_POSTGRES_URL` is set), a temp artifact
//! root, and the real router served on `127.0.0.1:0` for tests that speak HTTP.
//!
//! `TEST_POSTGRES_URL` names an admin connection (for example
//! `postgresql://postgres@127.0.0.1:55432/postgres`). Each test creates its own database through it
//! and drops it afterwards, so the suite never touches existing data; it is a dedicated variable so
//! a destructive suite cannot be pointed at a real `DATABASE_URL` by accident.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;
use tracker::artifacts::Artifacts;
use tracker::auth::Auth;
use tracker::store::{BackendUri, Store};
use tracker::AppState;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A temp SQLite file: always available.
    Sqlite,
    /// A fresh database on the server `TEST_POSTGRES_URL` names.
    Postgres,
}

/// A database made for one test; dropping it removes the Postgres database.
pub struct TestDb {
    /// The opened, migrated store.
    pub store: Store,
    /// Holds the SQLite file (and the artifact root of [`TestServer`]).
    pub dir: tempfile::TempDir,
    /// Where the store lives, to reopen it.
    pub uri: BackendUri,
    pg: Option<PgDatabase>,
}

/// A uniquely named Postgres database, dropped (with `force`) on drop.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context (possibly while unwinding from a failed assertion), so
        // the cleanup gets its own thread and runtime.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime for cleanup");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// The admin URL of the test Postgres server, if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())
}

/// `url` with its database name replaced by `db` (query string kept).
fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..host_end])
}

/// Opens a fresh, migrated store on `backend`; `None` (with a printed note) for Postgres when
/// `TEST_POSTGRES_URL` is unset.
pub async fn open_db(backend: Backend) -> Option<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    match backend {
        Backend::Sqlite => {
            let uri = BackendUri::Sqlite(dir.path().join("mlflow.db"));
            let store = Store::open(&uri).await.expect("open sqlite store");
            Some(TestDb { store, dir, uri, pg: None })
        }
        Backend::Postgres => {
            let Some(admin_url) = postgres_url() else {
                eprintln!("note: TEST_POSTGRES_URL is unset; skipping the Postgres variant");
                return None;
            };
            sqlx::any::install_default_drivers();
            let name = format!("tracker_test_{}", uuid::Uuid::new_v4().simple());
            {
                use sqlx::Connection;
                let mut conn = sqlx::AnyConnection::connect(&admin_url).await.expect("connect to TEST_POSTGRES_URL");
                sqlx::query(&format!("create database \"{name}\"")).execute(&mut conn).await.expect("create test database");
            }
            let pg = PgDatabase { admin_url: admin_url.clone(), name: name.clone() };
            let uri = BackendUri::Postgres(with_database(&admin_url, &name));
            let store = Store::open(&uri).await.expect("open postgres store");
            Some(TestDb { store, dir, uri, pg: Some(pg) })
        }
    }
}

/// A tracker served in-process on `127.0.0.1:0`.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client without retries or redirects.
    pub client: reqwest::Client,
    /// The same store the server uses, for checks behind the API.
    pub store: Store,
    /// The artifact root: `<temp dir>/artifacts`.
    pub artifact_root: PathBuf,
    /// The temp dir holding the database file and the artifact root.
    pub dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    timing: tracker::studies::LeaseTiming,
    // Last: the database goes after the server has been told to stop.
    _db: TestDb,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a server on `backend`; `None` when that backend is not configured.
pub async fn start(backend: Backend) -> Option<TestServer> {
    // Server logs (5xx details included) go to the test's captured output; RUST_LOG filters them.
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogTee)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    start_with_auth(backend, Auth::default()).await
}

/// The last lines the servers of this test binary logged, so that an assertion on a 5xx can
/// show the cause where CI prints only the panic message.
static SERVER_LOG: std::sync::Mutex<std::collections::VecDeque<String>> = std::sync::Mutex::new(std::collections::VecDeque::new());
const SERVER_LOG_LINES: usize = 20;

/// Writes each log line to the test's captured output and keeps it in [`SERVER_LOG`].
struct LogTee;

impl std::io::Write for LogTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        print!("{text}");
        let mut log = SERVER_LOG.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if log.len() == SERVER_LOG_LINES {
                log.pop_front();
            }
            log.push_back(line.to_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The servers' recent log lines, oldest first.
pub fn recent_server_log() -> String {
    SERVER_LOG.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Starts a server on `backend` with the given authentication settings.
pub async fn start_with_auth(backend: Backend, auth: Auth) -> Option<TestServer> {
    start_with(backend, auth, tracker::studies::LeaseTiming::default()).await
}

/// Starts a server on `backend` with the given authentication settings and lease lifetime.
pub async fn start_with(backend: Backend, auth: Auth, timing: tracker::studies::LeaseTiming) -> Option<TestServer> {
    let db = open_db(backend).await?;
    let artifact_root = db.dir.path().join("artifacts");
    let artifacts = Artifacts::open(artifact_root.to_str().expect("utf-8 temp path")).expect("open artifact root");
    let artifact_root = std::fs::canonicalize(&artifact_root).expect("artifact root exists");
    let state = AppState::with_lease_timing(db.store.clone(), artifacts, auth, timing);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tracker::serve(listener, tracker::router(state), async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    Some(TestServer {
        base: format!("http://{addr}"),
        client,
        store: db.store.clone(),
        artifact_root,
        dir: std::fs::canonicalize(db.dir.path()).expect("temp dir"),
        shutdown: Some(tx),
        timing,
        _db: db,
    })
}

/// A response: status, raw body, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Asserts a 200 and returns the JSON body.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "expected 200, got {}: {}", self.status, self.text);
        self.json
    }

    /// Asserts an MLflow error: the status and `error_code`, with a non-empty message.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "expected {status} {code}, got {}: {}", self.status, self.text);
        assert_eq!(self.json["error_code"], code, "wrong error code in {}", self.text);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {}", self.text);
    }
}

impl TestServer {
    /// Stops the server and starts a new one on the same address, database and artifact root,
    /// with a fresh connection pool: nothing in memory survives, as after a process restart.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let addr: std::net::SocketAddr = self.base.trim_start_matches("http://").parse().expect("addr");
        // The old server drains its connections; retry the bind until the port is free.
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("rebind the same port");
        let store = Store::open(&self._db.uri).await.expect("reopen store");
        let artifacts = Artifacts::open(self.artifact_root.to_str().expect("utf-8")).expect("artifacts");
        let state = AppState::with_lease_timing(store.clone(), artifacts, Auth::default(), self.timing);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(tracker::serve(listener, tracker::router(state), async {
            let _ = rx.await;
        }));
        self.store = store;
        self.shutdown = Some(tx);
    }

    /// The `--backend-store-uri` of this server's database, for the command line.
    pub fn backend_store_uri(&self) -> String {
        match &self._db.uri {
            BackendUri::Sqlite(path) => format!("sqlite://{}", path.display()),
            BackendUri::Postgres(url) => url.clone(),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let text = resp.text().await.expect("read body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(!status.is_server_error(), "server error {status}: {text}\nrecent server log:\n{}", recent_server_log());
        Reply { status, text, json }
    }

    /// Sends any request and reads the reply. Every helper asserts that no reply is a 5xx.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Self::reply(req.send().await.expect("request sent")).await
    }

    /// Sends as the worker agent does: a 503 (the database momentarily busy) is retried after a
    /// short wait, up to a minute; any other reply is returned as [`TestServer::send`] returns it.
    /// Returns the reply and how many 503s came before it.
    pub async fn send_retrying_unavailable(&self, req: reqwest::RequestBuilder) -> (Reply, u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut retries = 0;
        loop {
            let attempt = req.try_clone().expect("a request with a buffered body");
            let resp = attempt.send().await.expect("request sent");
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE && std::time::Instant::now() < deadline {
                retries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            return (Self::reply(resp).await, retries);
        }
    }

    /// POST a JSON body to `/api/2.0/mlflow/<path>`.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(&format!("/api/2.0/mlflow/{path}"))).json(&body)).await
    }

    /// PATCH a JSON body to `/api/2.0/mlflow/<path>`.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.patch(self.url(&format!("/api/2.0/mlflow/{path}"))).json(&body)).await
    }

    /// GET `/api/2.0/mlflow/<path>` with a query string.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Reply {
        self.send(self.client.get(self.url(&format!("/api/2.0/mlflow/{path}"))).query(query)).await
    }

    /// POST raw bytes to any path with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(self.client.post(self.url(path)).header("content-type", content_type).body(body)).await
    }

    /// Creates an experiment and returns its id.
    pub async fn create_experiment(&self, name: &str) -> String {
        let body = self.post("experiments/create", serde_json::json!({ "name": name })).await.ok();
        body["experiment_id"].as_str().expect("string experiment_id").to_owned()
    }

    /// Creates a run in `experiment_id` and returns its id.
    pub async fn create_run(&self, experiment_id: &str) -> String {
        let body =
            self.post("runs/create", serde_json::json!({ "experiment_id": experiment_id, "start_time": 1_700_000_000_000i64, "user_id": "tester" })).await.ok();
        body["run"]["info"]["run_id"].as_str().expect("run_id").to_owned()
    }

    /// The run as `runs/get` returns it.
    pub async fn get_run(&self, run_id: &str) -> Value {
        self.get("runs/get", &[("run_id", run_id)]).await.ok()["run"].clone()
    }

    /// POST a JSON body to `/api/tracker/<path>` (studies, workers, promotion) and expect a 200.
    pub async fn tracker_post(&self, path: &str, body: Value) -> Value {
        self.send(self.client.post(self.url(&format!("/api/tracker/{path}"))).json(&body)).await.ok()
    }

    /// PUT bytes to the artifact proxy under `path` (not percent-encoded here).
    pub async fn put_artifact(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(self.client.put(format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", self.base)).body(body)).await
    }
}

/// All files below `dir`, relative, sorted (for "nothing was written" checks).
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `key -> value` of a `[{key, value}]` list in a JSON body.
pub fn kv(list: &Value) -> std::collections::BTreeMap<String, String> {
    list.as_array()
        .map(|a| a.iter().map(|t| (t["key"].as_str().unwrap_or_default().to_owned(), t["value"].as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// Defines `sqlite_<name>` and `postgres_<name>` tests that run the async fn `<name>(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::common::postgres_url().is_none() {
                        eprintln!("note: TEST_POSTGRES_URL is unset; skipping postgres::{}", stringify!($name));
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Start time of seeded runs: fixed, so pages and backups of seeded data compare exactly.
pub const T0: i64 = 1_700_000_000_000;

/// Three runs with params, metric histories (one named in Korean), artifacts and a dataset.
pub async fn seed_runs(s: &TestServer) -> (String, Vec<String>) {
    let exp = s.create_experiment("한국어 실험").await;
    let mut runs = Vec::new();
    for (i, lr) in [0.001, 0.003, 0.03].into_iter().enumerate() {
        let run = s.post("runs/create", serde_json::json!({"experiment_id": exp, "start_time": T0 + i as i64, "run_name": format!("실행-{i}")})).await.ok()["run"]["info"]["run_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let metrics: Vec<serde_json::Value> = (1..=5)
            .flat_map(|step| {
                let loss = (f64::log10(lr) + 2.5).powi(2) + 2.0 / step as f64;
                [serde_json::json!({"key": "eval_loss", "value": loss, "timestamp": T0 + step * 1000, "step": step}), serde_json::json!({"key": "정확도", "value": 1.0 - loss / 10.0, "timestamp": T0 + step * 1000, "step": step})]
            })
            .collect();
        let params = serde_json::json!([{"key": "lr", "value": lr.to_string()}, {"key": "rank", "value": if i < 2 { "8" } else { "16" }}]);
        s.post("runs/log-batch", serde_json::json!({"run_id": run, "metrics": metrics, "params": params})).await.ok();
        s.post("runs/update", serde_json::json!({"run_id": run, "status": "FINISHED", "end_time": T0 + 9000})).await.ok();
        let root = format!("{exp}/{run}/artifacts");
        s.put_artifact(&format!("{root}/adapter/adapter_config.json"), r#"{"r": 8, "설명": "한국어"}"#).await.ok();
        s.put_artifact(&format!("{root}/notes.txt"), "학습 메모").await.ok();
        runs.push(run);
    }
    s.post(
        "runs/log-inputs",
        serde_json::json!({"run_id": runs[0], "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": {"name": "ko-tasks", "digest": "abc123", "source_type": "local", "source": "{}"}}]}),
    )
    .await
    .ok();
    (exp, runs)
}

/// A six-trial ASHA study run to its end by one simulated worker.
pub async fn seed_study(s: &TestServer) {
    let spec = serde_json::json!({
        "name": "ui-study",
        "objective": {"metric": "loss", "direction": "minimize"},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": true}, "layers": {"type": "int", "low": 1, "high": 4}},
        "sampler": "random",
        "scheduler": {"kind": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "max_trials": 6,
        "seed": 3,
        "run": {"command": ["python3", "train.py"]}
    });
    s.tracker_post("studies/create", serde_json::json!({"spec": spec})).await;
    s.tracker_post("workers/register", serde_json::json!({"worker_id": "gpu-0"})).await;
    loop {
        let lease = s.tracker_post("workers/lease", serde_json::json!({"worker_id": "gpu-0"})).await;
        let Some(a) = lease.get("assignment").cloned() else { break };
        let (n, lease_id) = (a["trial"].as_u64().unwrap(), a["lease_id"].as_str().unwrap().to_owned());
        let (lr, layers) = (a["params"]["lr"].as_f64().unwrap(), a["params"]["layers"].as_f64().unwrap());
        let mut stopped = false;
        for step in 1..=9u64 {
            let value = (lr.log10() + 2.5).powi(2) + 1.0 / layers + 2.0 / step as f64;
            let r = s.tracker_post(&format!("studies/ui-study/trials/{n}/report"), serde_json::json!({"lease_id": lease_id, "step": step, "value": value})).await;
            if r["decision"] != "continue" {
                stopped = true;
                break;
            }
        }
        if !stopped {
            s.tracker_post(&format!("studies/ui-study/trials/{n}/complete"), serde_json::json!({"lease_id": lease_id})).await;
        }
    }
}
