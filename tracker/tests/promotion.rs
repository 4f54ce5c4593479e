//! Gated promotion, the registry audit log and webhooks, over HTTP (and the `tracker model`
//! command line) on SQLite and, with `TEST_POSTGRES_URL`, on Postgres.

mod common;

use common::{Backend, TestServer};
use serde_json::{json, Value};

async fn tracker_post(s: &TestServer, path: &str, body: Value) -> common::Reply {
    s.send(s.client.post(s.url(&format!("/api/tracker/{path}"))).json(&body)).await
}

async fn tracker_get(s: &TestServer, path: &str, query: &[(&str, &str)]) -> common::Reply {
    s.send(s.client.get(s.url(&format!("/api/tracker/{path}"))).query(query)).await
}

/// A run with the given metrics and params.
async fn run_with(s: &TestServer, exp: &str, metrics: &[(&str, f64)], params: &[(&str, &str)]) -> String {
    let run = s.create_run(exp).await;
    for (k, v) in metrics {
        s.post("runs/log-metric", json!({"run_id": run, "key": k, "value": v, "timestamp": 1, "step": 0})).await.ok();
    }
    for (k, v) in params {
        s.post("runs/log-parameter", json!({"run_id": run, "key": k, "value": v})).await.ok();
    }
    run
}

/// Creates `name` with one version per run, numbered from 1.
async fn model_with_versions(s: &TestServer, name: &str, runs: &[&str]) {
    s.post("registered-models/create", json!({"name": name})).await.ok();
    for run in runs {
        s.post("model-versions/create", json!({"name": name, "source": format!("runs:/{run}/model"), "run_id": run})).await.ok();
    }
}

async fn alias_version(s: &TestServer, name: &str, alias: &str) -> Option<String> {
    let r = s.get("registered-models/alias", &[("name", name), ("alias", alias)]).await;
    (r.status == 200).then(|| r.json["model_version"]["version"].as_str().unwrap().to_owned())
}

async fn promotion_passes_or_is_refused_by_its_gate(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("promo").await;
    let good = run_with(&s, &exp, &[("eval_exact_match", 0.95), ("eval_loss", 0.5)], &[("lora_r", "16")]).await;
    let weak = run_with(&s, &exp, &[("eval_exact_match", 0.85), ("eval_loss", 0.3)], &[("lora_r", "16")]).await;
    let big = run_with(&s, &exp, &[("eval_exact_match", 0.99), ("eval_loss", 0.2)], &[("lora_r", "64")]).await;
    model_with_versions(&s, "ko-lora", &[&good, &weak, &big]).await;

    // Rules that do not parse are refused, naming the rule; nothing is stored.
    let bad = tracker_post(&s, "models/rules/set", json!({"name": "ko-lora", "rules": ["metrics.eval_exact_match >= 0.9", "metrics.acc >>= 1"]})).await;
    bad.err(400, "INVALID_PARAMETER_VALUE");
    assert!(bad.json["message"].as_str().unwrap().contains("metrics.acc >>= 1"), "{}", bad.text);
    tracker_post(&s, "models/rules/set", json!({"name": "ko-lora", "rules": ["no_regression(params.x, lower)"]})).await.err(400, "INVALID_PARAMETER_VALUE");
    tracker_post(&s, "models/rules/set", json!({"name": "ko-lora"})).await.err(400, "INVALID_PARAMETER_VALUE");
    tracker_post(&s, "models/rules/set", json!({"name": "nope", "rules": []})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    assert_eq!(tracker_get(&s, "models/rules/get", &[("name", "ko-lora")]).await.ok()["rules"], json!([]));
    tracker_get(&s, "models/rules/get", &[("name", "nope")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");

    let rules = json!(["metrics.eval_exact_match >= 0.9", " params.lora_r <= 32 "]);
    let set = tracker_post(&s, "models/rules/set", json!({"name": "ko-lora", "rules": rules})).await.ok();
    assert_eq!(set["rules"], json!(["metrics.eval_exact_match >= 0.9", "params.lora_r <= 32"]));
    assert_eq!(tracker_get(&s, "models/rules/get", &[("name", "ko-lora")]).await.ok()["rules"], set["rules"]);

    // A passing promotion sets the alias, as the MLflow alias endpoint does.
    let done = tracker_post(&s, "models/promote", json!({"name": "ko-lora", "version": "1", "alias": "production", "reason": "first"})).await.ok();
    assert_eq!(done["model_version"]["version"], "1");
    assert_eq!(done["model_version"]["aliases"], json!(["production"]));
    assert_eq!(done["previous_version"], Value::Null);
    assert_eq!(done["checks"].as_array().unwrap().len(), 2);
    assert_eq!(alias_version(&s, "ko-lora", "production").await.as_deref(), Some("1"));

    // Refused by a metric threshold, then by a param: 412 naming the rule, nothing changed.
    let refused = tracker_post(&s, "models/promote", json!({"name": "ko-lora", "version": "2", "alias": "production"})).await;
    refused.err(412, "PRECONDITION_FAILED");
    let message = refused.json["message"].as_str().unwrap();
    assert!(message.contains("'metrics.eval_exact_match >= 0.9'") && message.contains("0.85"), "{message}");
    let refused = tracker_post(&s, "models/promote", json!({"name": "ko-lora", "version": "3", "alias": "production"})).await;
    refused.err(412, "PRECONDITION_FAILED");
    assert!(refused.json["message"].as_str().unwrap().contains("'params.lora_r <= 32'"), "{}", refused.text);
    assert_eq!(alias_version(&s, "ko-lora", "production").await.as_deref(), Some("1"));
    let v2 = s.get("model-versions/get", &[("name", "ko-lora"), ("version", "2")]).await.ok();
    assert!(v2["model_version"].get("aliases").is_none(), "{v2}");

    // Bad input: unknown model or version, reserved or invalid alias, missing fields.
    tracker_post(&s, "models/promote", json!({"name": "ko-lora", "version": "9", "alias": "production"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    tracker_post(&s, "models/promote", json!({"name": "nope", "version": "1", "alias": "production"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    tracker_post(&s, "models/promote", json!({"name": "ko-lora", "version": "1", "alias": "latest"})).await.err(400, "INVALID_PARAMETER_VALUE");
    tracker_post(&s, "models/promote", json!({"name": "ko-lora", "version": "1", "alias": "a b"})).await.err(400, "INVALID_PARAMETER_VALUE");
    tracker_post(&s, "models/promote", json!({"name": "ko-lora", "alias": "production"})).await.err(400, "INVALID_PARAMETER_VALUE");

    // A model without rules promotes anything.
    model_with_versions(&s, "free", &[&weak]).await;
    tracker_post(&s, "models/promote", json!({"name": "free", "version": "1", "alias": "staging"})).await.ok();
    assert_eq!(alias_version(&s, "free", "staging").await.as_deref(), Some("1"));

    // Renaming the model keeps its rules.
    s.post("registered-models/rename", json!({"name": "ko-lora", "new_name": "ko-lora-2"})).await.ok();
    assert_eq!(tracker_get(&s, "models/rules/get", &[("name", "ko-lora-2")]).await.ok()["rules"], set["rules"]);
}

async fn no_regression_gate(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("noreg").await;
    let base = run_with(&s, &exp, &[("eval_loss", 0.5)], &[]).await;
    let worse = run_with(&s, &exp, &[("eval_loss", 0.6)], &[]).await;
    let better = run_with(&s, &exp, &[("eval_loss", 0.4)], &[]).await;
    let unmeasured = run_with(&s, &exp, &[], &[]).await;
    model_with_versions(&s, "m", &[&base, &worse, &better, &unmeasured]).await;
    tracker_post(&s, "models/rules/set", json!({"name": "m", "rules": ["no_regression(metrics.eval_loss, lower)"]})).await.ok();

    // Nobody holds the alias: nothing to regress against.
    tracker_post(&s, "models/promote", json!({"name": "m", "version": "1", "alias": "production"})).await.ok();
    let refused = tracker_post(&s, "models/promote", json!({"name": "m", "version": "2", "alias": "production"})).await;
    refused.err(412, "PRECONDITION_FAILED");
    let message = refused.json["message"].as_str().unwrap();
    assert!(message.contains("no_regression(metrics.eval_loss, lower)") && message.contains("version 1"), "{message}");
    assert_eq!(alias_version(&s, "m", "production").await.as_deref(), Some("1"));
    // A version without the metric cannot show it does not regress.
    tracker_post(&s, "models/promote", json!({"name": "m", "version": "4", "alias": "production"})).await.err(412, "PRECONDITION_FAILED");
    let done = tracker_post(&s, "models/promote", json!({"name": "m", "version": "3", "alias": "production"})).await.ok();
    assert_eq!(done["previous_version"], "1");
    assert_eq!(alias_version(&s, "m", "production").await.as_deref(), Some("3"));
    // Another alias is judged against its own holder (none).
    tracker_post(&s, "models/promote", json!({"name": "m", "version": "2", "alias": "canary"})).await.ok();
}

async fn cli_promotes_through_the_gate(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("cli").await;
    let good = run_with(&s, &exp, &[("eval_exact_match", 0.95)], &[]).await;
    let weak = run_with(&s, &exp, &[("eval_exact_match", 0.5)], &[]).await;
    model_with_versions(&s, "cli-model", &[&good, &weak]).await;
    tracker_post(&s, "models/rules/set", json!({"name": "cli-model", "rules": ["metrics.eval_exact_match >= 0.9"]})).await.ok();
    let uri = s.backend_store_uri();
    let run = |version: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracker"))
            .args(["model", "promote", "cli-model", "--version", version, "--alias", "production", "--reason", "cli test", "--backend-store-uri", &uri])
            .env_remove("RUST_LOG")
            .output()
            .expect("run tracker")
    };
    let refused = run("2");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refused by rule 'metrics.eval_exact_match >= 0.9'"), "{stderr}");
    assert_eq!(alias_version(&s, "cli-model", "production").await, None);
    let done = run("1");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("Promoted 'cli-model' version 1"));
    assert_eq!(alias_version(&s, "cli-model", "production").await.as_deref(), Some("1"));
}

/// The audit entries of `name`, newest first, as (action, alias or version, from, to, actor, reason).
async fn audit(s: &TestServer, name: &str) -> Vec<Value> {
    tracker_get(s, "models/audit", &[("name", name)]).await.ok()["entries"].as_array().unwrap().clone()
}

fn summary(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().map_or("-".to_owned(), str::to_owned);
    match e["alias"].as_str() {
        Some(alias) => format!("{} {alias} {}->{} by {} ({})", s("action"), s("from_version"), s("to_version"), s("actor"), s("reason")),
        None => format!("{} v{} {}->{} by {} ({})", s("action"), s("version"), s("from_stage"), s("to_stage"), s("actor"), s("reason")),
    }
}

async fn audit_log_records_alias_and_stage_changes(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("audit").await;
    let r = run_with(&s, &exp, &[("acc", 0.9)], &[]).await;
    model_with_versions(&s, "audited", &[&r, &r, &r]).await;
    model_with_versions(&s, "other", &[&r]).await;
    let delete = |body: Value| s.send(s.client.delete(s.url("/api/2.0/mlflow/registered-models/alias")).json(&body));

    s.post("registered-models/alias", json!({"name": "audited", "alias": "champion", "version": "1"})).await.ok();
    s.post("registered-models/alias", json!({"name": "audited", "alias": "champion", "version": "2"})).await.ok();
    delete(json!({"name": "audited", "alias": "champion"})).await.ok();
    // Deleting an alias that does not exist changes nothing and records nothing.
    delete(json!({"name": "audited", "alias": "champion"})).await.ok();
    s.post("model-versions/transition-stage", json!({"name": "audited", "version": "1", "stage": "production"})).await.ok();
    s.post("model-versions/transition-stage", json!({"name": "audited", "version": "2", "stage": "Production", "archive_existing_versions": true})).await.ok();
    tracker_post(&s, "models/promote", json!({"name": "audited", "version": "3", "alias": "production", "reason": "beats v2 on acc"})).await.ok();
    tracker_post(&s, "models/promote", json!({"name": "audited", "version": "1", "alias": "production"})).await.ok();
    // Refused and failed changes leave no entry.
    tracker_post(&s, "models/rules/set", json!({"name": "audited", "rules": ["metrics.acc > 0.95"]})).await.ok();
    tracker_post(&s, "models/promote", json!({"name": "audited", "version": "2", "alias": "production"})).await.err(412, "PRECONDITION_FAILED");
    s.post("registered-models/alias", json!({"name": "audited", "alias": "champion", "version": "9"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.post("registered-models/alias", json!({"name": "other", "alias": "champion", "version": "1"})).await.ok();

    let entries = audit(&s, "audited").await;
    let got: Vec<String> = entries.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            "promote production 3->1 by anonymous ()",
            "promote production -->3 by anonymous (beats v2 on acc)",
            "archive_existing v1 Production->Archived by anonymous ()",
            "transition_stage v2 None->Production by anonymous ()",
            "transition_stage v1 None->Production by anonymous ()",
            "delete_alias champion 2->- by anonymous ()",
            "set_alias champion 1->2 by anonymous ()",
            "set_alias champion -->1 by anonymous ()",
        ],
    );
    assert!(entries.iter().all(|e| e["name"] == "audited" && e["timestamp"].as_i64().unwrap() > 1_700_000_000_000));
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // Paged: two at a time, the same entries in the same order.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let mut q = vec![("name", "audited"), ("max_results", "3")];
        if !token.is_empty() {
            q.push(("page_token", &token));
        }
        let page = tracker_get(&s, "models/audit", &q).await.ok();
        paged.extend(page["entries"].as_array().unwrap().iter().map(summary));
        match page["next_page_token"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, got);
    // Every model when no name is given; bad paging is refused.
    assert_eq!(tracker_get(&s, "models/audit", &[]).await.ok()["entries"].as_array().unwrap().len(), got.len() + 1);
    tracker_get(&s, "models/audit", &[("max_results", "0")]).await.err(400, "INVALID_PARAMETER_VALUE");
    tracker_get(&s, "models/audit", &[("page_token", "!!")]).await.err(400, "INVALID_PARAMETER_VALUE");
    assert!(audit(&s, "nope").await.is_empty());
}

async fn audit_names_the_token_and_the_cli(backend: Backend) {
    let Some(s) = common::start_with_auth(backend, tracker::auth::Auth::required()).await else { return };
    let new = tracker::auth::generate_token();
    s.store.insert_token(&new.token_id, "deployer", "write", &new.secret_hash).await.unwrap();
    let auth = format!("Bearer {}", new.token);
    let post = |path: &str, body: Value| s.send(s.client.post(s.url(path)).header("authorization", &auth).json(&body));
    post("/api/2.0/mlflow/experiments/create", json!({"name": "e"})).await.ok();
    post("/api/2.0/mlflow/registered-models/create", json!({"name": "m"})).await.ok();
    post("/api/2.0/mlflow/model-versions/create", json!({"name": "m", "source": "s3://bucket/adapter"})).await.ok();
    post("/api/2.0/mlflow/model-versions/create", json!({"name": "m", "source": "s3://bucket/adapter2"})).await.ok();
    post("/api/tracker/models/promote", json!({"name": "m", "version": "1", "alias": "production", "reason": "go"})).await.ok();
    // Without a token: refused before anything happens.
    tracker_post(&s, "models/promote", json!({"name": "m", "version": "1", "alias": "x"})).await.err(401, "UNAUTHENTICATED");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracker"))
        .args(["model", "promote", "m", "--version", "2", "--alias", "production", "--reason", "from the shell", "--backend-store-uri", &s.backend_store_uri()])
        .env_remove("RUST_LOG")
        .env("USER", "ops")
        .output()
        .expect("run tracker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let got = s.send(s.client.get(s.url("/api/tracker/models/audit")).query(&[("name", "m")]).header("authorization", &auth)).await.ok();
    let got: Vec<String> = got["entries"].as_array().unwrap().iter().map(summary).collect();
    assert_eq!(got, ["promote production 1->2 by cli:ops (from the shell)", "promote production -->1 by deployer (go)"]);
}

/// What a test receiver got: headers and body of each request, in order.
#[derive(Clone, Default)]
struct Receiver {
    hits: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>,
}

/// A webhook receiver on 127.0.0.1:0 that answers 500 to its first request and 200 after.
async fn start_receiver() -> (String, Receiver) {
    use axum::http::StatusCode;
    async fn hook(axum::extract::State(r): axum::extract::State<Receiver>, headers: axum::http::HeaderMap, body: bytes::Bytes) -> StatusCode {
        let mut hits = r.hits.lock().unwrap();
        hits.push((headers, body));
        if hits.len() == 1 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    let receiver = Receiver::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Polls the deliveries of a webhook until `done` holds (10 s at most).
async fn deliveries_until(s: &TestServer, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let list = tracker_get(s, "webhooks/deliveries", &[("id", id)]).await.ok()["deliveries"].as_array().unwrap().clone();
        if done(&list) {
            return list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("deliveries of {id} never reached the expected state: {}", tracker_get(s, "webhooks/deliveries", &[("id", id)]).await.text);
}

async fn webhook_is_signed_and_retried(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let (url, receiver) = start_receiver().await;
    let exp = s.create_experiment("hooks").await;
    let r = run_with(&s, &exp, &[("acc", 0.9)], &[]).await;
    model_with_versions(&s, "hooked", &[&r, &r]).await;
    model_with_versions(&s, "quiet", &[&r]).await;

    // Bad webhooks are refused.
    for bad in ["ftp://127.0.0.1/hook", "not a url", "file:///etc/passwd", "http://"] {
        tracker_post(&s, "webhooks/create", json!({"name": "hooked", "url": bad, "secret": "k"})).await.err(400, "INVALID_PARAMETER_VALUE");
    }
    tracker_post(&s, "webhooks/create", json!({"name": "hooked", "url": url})).await.err(400, "INVALID_PARAMETER_VALUE");
    tracker_post(&s, "webhooks/create", json!({"name": "nope", "url": url, "secret": "k"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");

    let hook = tracker_post(&s, "webhooks/create", json!({"name": "hooked", "url": url, "secret": "s3cret"})).await.ok()["webhook"].clone();
    let id = hook["id"].as_str().unwrap().to_owned();
    assert_eq!(hook["name"], "hooked");
    assert!(hook.get("secret").is_none(), "{hook}");
    let listed = tracker_get(&s, "webhooks/list", &[]).await.ok();
    assert_eq!(listed["webhooks"], json!([hook]));
    assert!(!listed.to_string().contains("s3cret"));

    // A change of another model reaches no one; the promotion answers at once.
    s.post("registered-models/alias", json!({"name": "quiet", "alias": "production", "version": "1"})).await.ok();
    tracker_post(&s, "models/promote", json!({"name": "hooked", "version": "2", "alias": "production", "reason": "ship it"})).await.ok();

    // The first attempt gets 500, the retry 200; each attempt recorded.
    let list = deliveries_until(&s, &id, |l| l.len() == 1 && l[0]["state"] == "delivered").await;
    let attempts = list[0]["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.iter().map(|a| a["status_code"].as_i64().unwrap()).collect::<Vec<_>>(), [500, 200]);
    assert!(attempts[1]["started_at"].as_i64().unwrap() >= attempts[0]["started_at"].as_i64().unwrap() + 900, "retried after a backoff: {attempts:?}");
    assert_eq!(list[0]["event"], "promote");

    let hits = receiver.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 2);
    for (headers, body) in &hits {
        assert_eq!(headers["x-tracker-signature"].to_str().unwrap(), format!("sha256={}", hmac_hex("s3cret", body)));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-tracker-event"], "promote");
    }
    assert_eq!(hits[0].1, hits[1].1, "a retry sends the same body");
    let body: Value = serde_json::from_slice(&hits[0].1).unwrap();
    assert_eq!(body["event"], "promote");
    assert_eq!(body["model"], "hooked");
    assert_eq!(body["model_uri"], "models:/hooked@production");
    assert_eq!(body["change"]["to_version"], "2");
    assert_eq!(body["change"]["from_version"], Value::Null);
    assert_eq!(body["change"]["reason"], "ship it");
    assert_eq!(body["change"]["actor"], "anonymous");

    // Stage transitions and alias deletes are delivered too.
    s.post("model-versions/transition-stage", json!({"name": "hooked", "version": "2", "stage": "Staging"})).await.ok();
    let list = deliveries_until(&s, &id, |l| l.len() == 2 && l[0]["state"] == "delivered").await;
    assert_eq!(list[0]["event"], "transition_stage");
    assert_eq!(list[0]["payload"]["change"]["to_stage"], "Staging");
    assert_eq!(receiver.hits.lock().unwrap().len(), 3);

    // A promotion from the command line (another process) reaches the webhook through the
    // server's outbox polling.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracker"))
        .args(["model", "promote", "hooked", "--version", "1", "--alias", "production", "--backend-store-uri", &s.backend_store_uri()])
        .env_remove("RUST_LOG")
        .env("USER", "ops")
        .output()
        .expect("run tracker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = deliveries_until(&s, &id, |l| l.len() == 3 && l[0]["state"] == "delivered").await;
    assert_eq!(list[0]["payload"]["change"]["actor"], "cli:ops");
    assert_eq!(list[0]["payload"]["change"]["from_version"], "2");
    let hits = receiver.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[3].0["x-tracker-signature"].to_str().unwrap(), format!("sha256={}", hmac_hex("s3cret", &hits[3].1)));
}

async fn failing_receiver_never_blocks_a_promotion(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    // A port with nobody listening.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let exp = s.create_experiment("dead").await;
    let r = run_with(&s, &exp, &[], &[]).await;
    model_with_versions(&s, "m", &[&r]).await;
    // A global webhook (no name) follows every model.
    let id = tracker_post(&s, "webhooks/create", json!({"url": url, "secret": "k"})).await.ok()["webhook"]["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    tracker_post(&s, "models/promote", json!({"name": "m", "version": "1", "alias": "production"})).await.ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(alias_version(&s, "m", "production").await.as_deref(), Some("1"));
    let list = deliveries_until(&s, &id, |l| l.len() == 1 && l[0]["attempts"].as_i64().unwrap() >= 1).await;
    assert_eq!(list[0]["state"], "pending", "retried later: {list:?}");
    let attempt = &list[0]["attempt_log"][0];
    assert!(attempt["status_code"].is_null() && attempt["error"].as_str().is_some_and(|e| !e.is_empty()), "{attempt}");
    // Deleting the webhook cancels what is still pending.
    tracker_post(&s, "webhooks/delete", json!({"id": id})).await.ok();
    tracker_post(&s, "webhooks/delete", json!({"id": id})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let list = tracker_get(&s, "webhooks/deliveries", &[("id", id.as_str())]).await.ok()["deliveries"].clone();
    assert_eq!(list[0]["state"], "cancelled");
    assert_eq!(tracker_get(&s, "webhooks/list", &[]).await.ok()["webhooks"], json!([]));
    tracker_get(&s, "webhooks/deliveries", &[("id", "nope")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");

    // Deleting a model deletes its webhooks and cancels their pending deliveries.
    let id = tracker_post(&s, "webhooks/create", json!({"name": "m", "url": url, "secret": "k"})).await.ok()["webhook"]["id"].as_str().unwrap().to_owned();
    s.post("model-versions/transition-stage", json!({"name": "m", "version": "1", "stage": "Staging"})).await.ok();
    deliveries_until(&s, &id, |l| l.len() == 1 && l[0]["attempts"].as_i64().unwrap() >= 1).await;
    s.send(s.client.delete(s.url("/api/2.0/mlflow/registered-models/delete")).json(&json!({"name": "m"}))).await.ok();
    assert_eq!(tracker_get(&s, "webhooks/list", &[]).await.ok()["webhooks"], json!([]));
    let list = tracker_get(&s, "webhooks/deliveries", &[("id", id.as_str())]).await.ok()["deliveries"].clone();
    assert_eq!(list[0]["state"], "cancelled", "{list}");
}

both_backends!(
    webhook_is_signed_and_retried,
    failing_receiver_never_blocks_a_promotion,
    promotion_passes_or_is_refused_by_its_gate,
    no_regression_gate,
    cli_promotes_through_the_gate,
    audit_log_records_alias_and_stage_changes,
    audit_names_the_token_and_the_cli,
);
