//! Authentication (one test per scope, bearer and basic, as the mlflow client sends them) and
//! the Prometheus `/metrics` endpoint.

mod common;

use base64::Engine;
use common::{Backend, TestServer};
use serde_json::json;
use tracker::auth::{generate_token, Auth, Scope};

async fn token(s: &TestServer, name: &str, scope: Scope) -> String {
    let new = generate_token();
    s.store.insert_token(&new.token_id, name, &scope.to_string(), &new.secret_hash).await.unwrap();
    new.token
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn post_as(s: &TestServer, auth: &str, path: &str, body: serde_json::Value) -> common::Reply {
    s.send(s.client.post(s.url(&format!("/api/2.0/mlflow/{path}"))).header("authorization", auth).json(&body)).await
}

async fn get_as(s: &TestServer, auth: &str, path: &str, query: &[(&str, &str)]) -> common::Reply {
    s.send(s.client.get(s.url(&format!("/api/2.0/mlflow/{path}"))).header("authorization", auth).query(query)).await
}

async fn experiment_count(s: &TestServer) -> usize {
    let page = s.store.search_experiments(&[], &[], tracker::store::experiments::ViewType::All, 1000, None).await.unwrap();
    page.experiments.len()
}

async fn server_with_auth() -> TestServer {
    common::start_with_auth(Backend::Sqlite, Auth::required()).await.expect("sqlite always available")
}

#[tokio::test]
async fn without_credentials_only_health_and_version_answer() {
    let s = server_with_auth().await;
    assert_eq!(s.send(s.client.get(s.url("/health"))).await.text, "OK");
    assert_eq!(s.send(s.client.get(s.url("/version"))).await.status, 200);
    let r = s.get("experiments/get", &[("experiment_id", "0")]).await;
    r.err(401, "UNAUTHENTICATED");
    let before = experiment_count(&s).await;
    s.post("experiments/create", json!({"name": "sneaky"})).await.err(401, "UNAUTHENTICATED");
    assert_eq!(experiment_count(&s).await, before, "a refused request changes nothing");
    let r = s.send(s.client.get(s.url("/api/2.0/mlflow/experiments/get?experiment_id=0")).header("authorization", "Bearer trk_bogus_secret")).await;
    r.err(401, "UNAUTHENTICATED");
    let r = s.send(s.client.get(s.url("/api/2.0/mlflow/experiments/get?experiment_id=0")).header("authorization", "Digest abc")).await;
    r.err(401, "UNAUTHENTICATED");
    s.send(s.client.get(s.url("/metrics"))).await.err(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn read_scope_reads_but_cannot_write() {
    let s = server_with_auth().await;
    let t = bearer(&token(&s, "viewer", Scope::Read).await);
    get_as(&s, &t, "experiments/get", &[("experiment_id", "0")]).await.ok();
    post_as(&s, &t, "runs/search", json!({"experiment_ids": ["0"]})).await.ok();
    post_as(&s, &t, "registered-models/get-latest-versions", json!({"name": "none"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let before = experiment_count(&s).await;
    post_as(&s, &t, "experiments/create", json!({"name": "x"})).await.err(403, "PERMISSION_DENIED");
    assert_eq!(experiment_count(&s).await, before);
    post_as(&s, &t, "runs/create", json!({"experiment_id": "0"})).await.err(403, "PERMISSION_DENIED");
    s.send(s.client.get(s.url("/metrics")).header("authorization", &t)).await.ok();
}

#[tokio::test]
async fn worker_scope_logs_to_runs_but_cannot_manage() {
    let s = server_with_auth().await;
    let t = bearer(&token(&s, "gpu-node-1", Scope::Worker).await);
    let run = post_as(&s, &t, "runs/create", json!({"experiment_id": "0", "start_time": 1})).await.ok();
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    post_as(&s, &t, "runs/log-metric", json!({"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 1})).await.ok();
    post_as(&s, &t, "runs/log-batch", json!({"run_id": run_id, "params": [{"key": "lr", "value": "0.1"}]})).await.ok();
    let put = s
        .send(s.client.put(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/0/{run_id}/artifacts/ckpt.bin"))).header("authorization", &t).body("weights"))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    post_as(&s, &t, "runs/delete", json!({"run_id": run_id})).await.err(403, "PERMISSION_DENIED");
    post_as(&s, &t, "experiments/create", json!({"name": "w"})).await.err(403, "PERMISSION_DENIED");
    post_as(&s, &t, "registered-models/create", json!({"name": "w"})).await.err(403, "PERMISSION_DENIED");
    let del = s
        .send(s.client.delete(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/0/{run_id}/artifacts/ckpt.bin"))).header("authorization", &t))
        .await;
    del.err(403, "PERMISSION_DENIED");
    let run = get_as(&s, &t, "runs/get", &[("run_id", &run_id)]).await.ok();
    assert_eq!(run["run"]["info"]["lifecycle_stage"], "active", "the refused delete changed nothing");
}

#[tokio::test]
async fn write_scope_uses_the_whole_mlflow_api_but_not_token_admin() {
    let s = server_with_auth().await;
    let t = bearer(&token(&s, "ci", Scope::Write).await);
    post_as(&s, &t, "experiments/create", json!({"name": "e"})).await.ok();
    post_as(&s, &t, "registered-models/create", json!({"name": "m"})).await.ok();
    s.send(s.client.get(s.url("/api/tracker/tokens")).header("authorization", &t)).await.err(403, "PERMISSION_DENIED");
}

#[tokio::test]
async fn admin_scope_lists_and_revokes_tokens() {
    admin_lists_and_revokes(server_with_auth().await).await;
}

#[tokio::test]
async fn admin_scope_lists_and_revokes_tokens_on_postgres() {
    if let Some(s) = common::start_with_auth(Backend::Postgres, Auth::required()).await {
        admin_lists_and_revokes(s).await;
    }
}

async fn admin_lists_and_revokes(s: TestServer) {
    let admin = bearer(&token(&s, "root", Scope::Admin).await);
    let victim = token(&s, "leaked", Scope::Write).await;
    get_as(&s, &bearer(&victim), "experiments/get", &[("experiment_id", "0")]).await.ok();
    let list = s.send(s.client.get(s.url("/api/tracker/tokens")).header("authorization", &admin)).await.ok();
    let listed = list["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(!list.to_string().contains(victim.rsplit('_').next().unwrap()), "secrets are never listed");
    let revoked = s.send(s.client.post(s.url("/api/tracker/tokens/revoke")).header("authorization", &admin).json(&json!({"name": "leaked"}))).await.ok();
    assert_eq!(revoked["revoked"], 1);
    get_as(&s, &bearer(&victim), "experiments/get", &[("experiment_id", "0")]).await.err(401, "UNAUTHENTICATED");
    post_as(&s, &admin, "experiments/create", json!({"name": "admin-can-write"})).await.ok();
}

#[tokio::test]
async fn basic_auth_takes_the_token_as_password_and_its_name_as_user() {
    let s = server_with_auth().await;
    let t = token(&s, "alice", Scope::Read).await;
    get_as(&s, &basic("alice", &t), "experiments/get", &[("experiment_id", "0")]).await.ok();
    get_as(&s, &basic("mallory", &t), "experiments/get", &[("experiment_id", "0")]).await.err(401, "UNAUTHENTICATED");
    get_as(&s, &basic("alice", "wrong"), "experiments/get", &[("experiment_id", "0")]).await.err(401, "UNAUTHENTICATED");
    // A right token with a tampered secret is refused.
    let last = if t.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &t[..t.len() - 1]);
    get_as(&s, &bearer(&tampered), "experiments/get", &[("experiment_id", "0")]).await.err(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_show_the_pool() {
    let s = common::start(Backend::Sqlite).await.unwrap();
    s.get("experiments/get", &[("experiment_id", "0")]).await.ok();
    s.get("experiments/get", &[("experiment_id", "0")]).await.ok();
    s.get("experiments/get", &[("experiment_id", "12345")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.send(s.client.get(s.url("/api/2.0/mlflow/no/such/thing"))).await.err(404, "ENDPOINT_NOT_FOUND");
    let exp = s.create_experiment("m").await;
    let run = s.create_run(&exp).await;
    s.put_artifact(&format!("{exp}/{run}/artifacts/a/b.txt"), "x").await;
    for step in 0..3 {
        s.post("runs/log-metric", json!({"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1, "step": step})).await.ok();
    }
    let reply = s.send(s.client.get(s.url("/metrics"))).await;
    assert_eq!(reply.status, 200);
    let text = reply.text;
    let has = |needle: &str| assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    has(r#"tracker_http_requests_total{method="GET",route="/api/2.0/mlflow/experiments/get",status="200"} 2"#);
    has(r#"tracker_http_requests_total{method="GET",route="/api/2.0/mlflow/experiments/get",status="404"} 1"#);
    has(r#"tracker_http_requests_total{method="GET",route="(unmatched)",status="404"} 1"#);
    has(r#"route="/api/2.0/mlflow-artifacts/artifacts/{*path}""#);
    has(r#"tracker_http_request_duration_seconds_count{method="GET",route="/api/2.0/mlflow/experiments/get"} 3"#);
    has(r#"tracker_db_pool_connections{pool="read",state="idle"}"#);
    has(r#"tracker_db_pool_connections{pool="write",state="in_use"}"#);
    // One client logging one point at a time: each request is a group of its own.
    has("tracker_metric_group_requests_total 3");
    has("tracker_metric_group_transactions_total 3");
    assert!(!text.contains(&run), "raw paths never become labels");
}
