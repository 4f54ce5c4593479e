//! `tracker backup` and `tracker restore` (the library functions behind them): a backup taken
//! while the server runs, restored into a fresh store and artifact folder, serves exactly what
//! the original served (compared through the API: experiments, runs with their data and metric
//! histories, datasets, the registry with aliases and its audit log, studies and their trials,
//! artifact files byte for byte), across SQLite and Postgres in both directions.

mod common;

use std::path::Path;

use common::{seed_runs, seed_study, Backend, TestServer};
use serde_json::{json, Value};
use tracker::artifacts::Artifacts;
use tracker::auth::Auth;
use tracker::store::Store;

/// Everything a client can read, through the API of the server at `base`.
async fn everything(client: &reqwest::Client, base: &str) -> Value {
    let get = |path: String, query: Vec<(String, String)>| {
        let client = client.clone();
        async move { client.get(format!("{base}{path}")).query(&query).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let post = |path: &str, body: Value| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move { client.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let experiments = post("/api/2.0/mlflow/experiments/search", json!({"max_results": 1000, "view_type": "ALL"})).await;
    let ids: Vec<String> = experiments["experiments"].as_array().unwrap().iter().map(|e| e["experiment_id"].as_str().unwrap().to_owned()).collect();
    let runs = post("/api/2.0/mlflow/runs/search", json!({"experiment_ids": ids, "max_results": 1000, "order_by": ["attributes.start_time ASC"]})).await;
    let mut histories = Vec::new();
    let mut files = Vec::new();
    for run in runs["runs"].as_array().unwrap() {
        let id = run["info"]["run_id"].as_str().unwrap().to_owned();
        for m in run["data"]["metrics"].as_array().cloned().unwrap_or_default() {
            let key = m["key"].as_str().unwrap().to_owned();
            histories.push(get("/api/2.0/mlflow/metrics/get-history".into(), vec![("run_id".into(), id.clone()), ("metric_key".into(), key)]).await);
        }
        let root = run["info"]["artifact_uri"].as_str().unwrap().trim_start_matches("mlflow-artifacts:/").to_owned();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            let listing = get("/api/2.0/mlflow-artifacts/artifacts".into(), vec![("path".into(), dir.clone())]).await;
            for f in listing["files"].as_array().cloned().unwrap_or_default() {
                let path = format!("{dir}/{}", f["path"].as_str().unwrap());
                if f["is_dir"] == true {
                    pending.push(path);
                } else {
                    let bytes = client.get(format!("{base}/api/2.0/mlflow-artifacts/artifacts/{path}")).send().await.unwrap().bytes().await.unwrap();
                    files.push(json!({"path": path, "bytes": String::from_utf8_lossy(&bytes)}));
                }
            }
        }
    }
    files.sort_by_key(|f| f["path"].as_str().unwrap().to_owned());
    json!({
        "experiments": experiments,
        "runs": runs,
        "histories": histories,
        "files": files,
        "models": get("/api/2.0/mlflow/registered-models/search".into(), vec![("max_results".into(), "1000".into())]).await,
        "versions": get("/api/2.0/mlflow/model-versions/search".into(), vec![("max_results".into(), "1000".into())]).await,
        "audit": get("/api/tracker/models/audit".into(), vec![("name".into(), "ko-lora".into())]).await,
        "study": get("/api/tracker/studies/get".into(), vec![("name".into(), "ui-study".into())]).await,
        "workers": get("/api/tracker/workers/list".into(), vec![]).await,
    })
}

/// Serves `store` and the artifact folder `root` on an ephemeral port; returns the base URL.
async fn serve(store: Store, root: &Path) -> String {
    let artifacts = Artifacts::open(root.to_str().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tracker::serve(listener, tracker::router(tracker::AppState::new(store, artifacts, Auth::default())), std::future::pending()));
    base
}

async fn seed(s: &TestServer) {
    let (_, runs) = seed_runs(s).await;
    seed_study(s).await;
    // Values MLflow keeps as they are: NaN and infinities.
    s.post("runs/log-batch", json!({"run_id": runs[1], "metrics": [
        {"key": "odd", "value": "NaN", "timestamp": common::T0, "step": 0},
        {"key": "odd", "value": "Infinity", "timestamp": common::T0 + 1, "step": 1}]}))
    .await
    .ok();
    s.post("runs/set-tag", json!({"run_id": runs[2], "key": "note", "value": "태그"})).await.ok();
    s.post("registered-models/create", json!({"name": "ko-lora", "description": "설명"})).await.ok();
    for run in &runs {
        s.post("model-versions/create", json!({"name": "ko-lora", "source": format!("runs:/{run}/adapter"), "run_id": run})).await.ok();
    }
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "production", "version": "2"})).await.ok();
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "production", "version": "3"})).await.ok();
    s.tracker_post("models/rules/set", json!({"name": "ko-lora", "rules": ["metrics.eval_loss <= 5"]})).await;
}

async fn backup_restores_everything(source: Backend, target: Backend) {
    let Some(s) = common::start(source).await else { return };
    let Some(fresh) = common::open_db(target).await else { return };
    seed(&s).await;
    let before = everything(&s.client, &s.base).await;
    let count = |v: &Value| v.as_array().map_or(0, Vec::len);
    assert_eq!(
        (count(&before["runs"]["runs"]), count(&before["files"]), count(&before["study"]["trials"]), count(&before["audit"]["entries"]), count(&before["versions"]["model_versions"])),
        (9, 6, 6, 2, 3),
        "the seed is all there before the backup"
    );
    let histories = before["histories"].as_array().unwrap();
    assert_eq!(histories.len(), 3 * 2 + 1 + 6, "two metrics per run, `odd` on one, the objective per trial");
    assert!(histories.iter().all(|h| count(&h["metrics"]) > 0));

    let backup_dir = s.dir.join("backup");
    let artifacts = Artifacts::open(s.artifact_root.to_str().unwrap()).unwrap();
    // Taken while the server serves.
    let manifest = tracker::backup::backup(&s.store, &artifacts, &backup_dir).await.unwrap();
    assert_eq!(manifest.tables["run"], 9, "3 runs and 6 trials");
    assert_eq!(manifest.artifact_files, 6);
    let again = tracker::backup::backup(&s.store, &artifacts, &backup_dir).await.unwrap_err();
    assert!(again.to_string().contains("is not empty"), "{again}");

    let restored_root = fresh.dir.path().join("artifacts");
    std::fs::create_dir_all(&restored_root).unwrap();
    let restored_artifacts = Artifacts::open(restored_root.to_str().unwrap()).unwrap();
    let restored = tracker::backup::restore(&backup_dir, &fresh.store, &restored_artifacts).await.unwrap();
    assert_eq!(restored, manifest);
    let base = serve(fresh.store.clone(), &restored_root).await;
    let after = everything(&s.client, &base).await;
    assert_eq!(before, after, "the restored server serves something else");

    // New ids continue after the restored ones, and the store is not empty any more.
    let exp = s.client.post(format!("{base}/api/2.0/mlflow/experiments/create")).json(&json!({"name": "after restore"})).send().await.unwrap();
    let exp: Value = exp.json().await.unwrap();
    let max_before: i64 = before["experiments"]["experiments"].as_array().unwrap().iter().map(|e| e["experiment_id"].as_str().unwrap().parse::<i64>().unwrap()).max().unwrap();
    assert!(exp["experiment_id"].as_str().unwrap().parse::<i64>().unwrap() > max_before, "{exp}");
    let twice = tracker::backup::restore(&backup_dir, &fresh.store, &restored_artifacts).await.unwrap_err();
    assert!(format!("{twice:#}").contains("needs an empty store"), "{twice:#}");
    let nothing = tracker::backup::restore(&s.dir.join("nope"), &fresh.store, &restored_artifacts).await.unwrap_err();
    assert!(nothing.to_string().contains("not a complete backup"), "{nothing}");
}

#[tokio::test]
async fn backup_restores_everything_sqlite_to_sqlite() {
    backup_restores_everything(Backend::Sqlite, Backend::Sqlite).await;
}

#[tokio::test]
async fn backup_restores_everything_sqlite_to_postgres() {
    backup_restores_everything(Backend::Sqlite, Backend::Postgres).await;
}

#[tokio::test]
async fn backup_restores_everything_postgres_to_sqlite() {
    backup_restores_everything(Backend::Postgres, Backend::Sqlite).await;
}
