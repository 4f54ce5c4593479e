//! Every tracking endpoint over real HTTP, with the request bodies the mlflow 3.x client sends and
//! the response shapes it parses (see `/work/shared/reference/mlflow-client-traces/`). Each case
//! runs on SQLite, and on Postgres when `TEST_POSTGRES_URL` is set.

mod common;

use common::{kv, start, Backend, TestServer};
use serde_json::{json, Value};

both_backends!(
    health_version_and_server_info,
    default_experiment_and_get_by_name,
    experiment_crud_tags_and_lifecycle,
    experiment_search_filters_order_and_paging,
    run_create_get_update_as_the_client_does,
    run_delete_restore_and_search_view_types,
    params_tags_and_metrics_logging,
    metric_history_paging_and_special_values,
    run_search_filters_order_paging_and_get_form,
    log_inputs_and_outputs,
    logged_models_flow,
    artifacts_put_list_get_delete,
    ajax_api_mirror,
    metric_history_100k_points_as_the_client_pages_it,
);

async fn server(b: Backend) -> TestServer {
    start(b).await.expect("backend configured")
}

fn names(runs: &Value) -> Vec<String> {
    runs.as_array().map(|a| a.iter().map(|r| r["info"]["run_name"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

async fn health_version_and_server_info(b: Backend) {
    let s = server(b).await;
    let health = s.send(s.client.get(s.url("/health"))).await;
    assert_eq!((health.status.as_u16(), health.text.as_str()), (200, "OK"));
    // The tracing client turns on span upload only for a version >= 3.4, read as plain text.
    let version = s.send(s.client.get(s.url("/version"))).await;
    assert_eq!(version.status.as_u16(), 200);
    let parts: Vec<u32> = version.text.trim().split('.').map(|p| p.parse().expect("numeric version")).collect();
    assert!(parts.len() == 3 && (parts[0], parts[1]) >= (3, 4), "{}", version.text);
    let info = s.send(s.client.get(s.url("/api/3.0/mlflow/server-info"))).await.ok();
    assert_eq!(info["store_type"], "SqlStore");
    // Multipart transfers are off: the client must stream through the proxy.
    assert_eq!(info["multipart_uploads_enabled"], false);
    assert_eq!(info["multipart_downloads_enabled"], false);
    assert_eq!(info["workspaces_enabled"], false);
}

async fn default_experiment_and_get_by_name(b: Backend) {
    let s = server(b).await;
    let e = s.get("experiments/get", &[("experiment_id", "0")]).await.ok();
    assert_eq!(e["experiment"]["name"], "Default");
    assert_eq!(e["experiment"]["artifact_location"], "mlflow-artifacts:/0");
    assert_eq!(e["experiment"]["lifecycle_stage"], "active");
    assert_eq!(e["experiment"]["experiment_id"], "0", "ids are strings");
    // mlflow.set_experiment: get-by-name 404 RESOURCE_DOES_NOT_EXIST -> create -> get.
    let missing = s.get("experiments/get-by-name", &[("experiment_name", "trace-exp")]).await;
    missing.err(404, "RESOURCE_DOES_NOT_EXIST");
    assert_eq!(missing.json["message"], "Could not find experiment with name 'trace-exp'");
    let created = s.post("experiments/create", json!({"name": "trace-exp", "tags": [{"key": "team", "value": "x"}]})).await.ok();
    assert_eq!(created, json!({"experiment_id": "1"}));
    let by_name = s.get("experiments/get-by-name", &[("experiment_name", "trace-exp")]).await.ok();
    let by_id = s.get("experiments/get", &[("experiment_id", "1")]).await.ok();
    assert_eq!(by_name, by_id);
    let exp = &by_id["experiment"];
    assert_eq!(exp["artifact_location"], "mlflow-artifacts:/1");
    assert_eq!(exp["tags"], json!([{"key": "team", "value": "x"}]));
    assert!(exp["creation_time"].as_i64().unwrap() > 1_600_000_000_000, "ms timestamps as JSON numbers");
    assert_eq!(exp["creation_time"], exp["last_update_time"]);
    // A run with no experiment goes to "0".
    let run = s.post("runs/create", json!({"user_id": "root", "start_time": 1795427630563i64})).await.ok();
    assert_eq!(run["run"]["info"]["experiment_id"], "0");
}

async fn experiment_crud_tags_and_lifecycle(b: Backend) {
    let s = server(b).await;
    let id = s.create_experiment("exp").await;
    let dup = s.post("experiments/create", json!({"name": "exp"})).await;
    dup.err(400, "RESOURCE_ALREADY_EXISTS");
    // A numeric id, as the Python client may send it, reads the same as a string.
    let numeric = s.post("experiments/set-experiment-tag", json!({"experiment_id": id.parse::<i64>().unwrap(), "key": "k", "value": "v"})).await.ok();
    assert_eq!(numeric, json!({}));
    s.post("experiments/set-experiment-tag", json!({"experiment_id": id, "key": "k2", "value": "v2"})).await.ok();
    s.post("experiments/set-experiment-tag", json!({"experiment_id": id, "key": "k", "value": "v3"})).await.ok();
    let got = s.get("experiments/get", &[("experiment_id", &id)]).await.ok();
    assert_eq!(kv(&got["experiment"]["tags"]), [("k".to_string(), "v3".to_string()), ("k2".into(), "v2".into())].into());
    s.post("experiments/delete-experiment-tag", json!({"experiment_id": id, "key": "k2"})).await.ok();
    let got = s.get("experiments/get", &[("experiment_id", &id)]).await.ok();
    assert_eq!(kv(&got["experiment"]["tags"]).len(), 1);

    s.post("experiments/update", json!({"experiment_id": id, "new_name": "renamed"})).await.ok();
    assert_eq!(s.get("experiments/get-by-name", &[("experiment_name", "renamed")]).await.ok()["experiment"]["experiment_id"], id);
    s.get("experiments/get-by-name", &[("experiment_name", "exp")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.post("experiments/update", json!({"experiment_id": id, "new_name": "Default"})).await.err(400, "RESOURCE_ALREADY_EXISTS");

    let run = s.create_run(&id).await;
    assert_eq!(s.post("experiments/delete", json!({"experiment_id": id})).await.ok(), json!({}));
    let got = s.get("experiments/get", &[("experiment_id", &id)]).await.ok();
    assert_eq!(got["experiment"]["lifecycle_stage"], "deleted");
    assert_eq!(s.get_run(&run).await["info"]["lifecycle_stage"], "deleted", "runs follow their experiment");
    // A deleted experiment takes no new runs or tags.
    s.post("runs/create", json!({"experiment_id": id})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/set-experiment-tag", json!({"experiment_id": id, "key": "a", "value": "b"})).await.err(400, "INVALID_PARAMETER_VALUE");
    assert_eq!(s.post("experiments/restore", json!({"experiment_id": id})).await.ok(), json!({}));
    assert_eq!(s.get("experiments/get", &[("experiment_id", &id)]).await.ok()["experiment"]["lifecycle_stage"], "active");
    assert_eq!(s.get_run(&run).await["info"]["lifecycle_stage"], "active");
    s.post("experiments/delete", json!({"experiment_id": "0"})).await.err(400, "INVALID_PARAMETER_VALUE");
}

async fn experiment_search_filters_order_and_paging(b: Backend) {
    let s = server(b).await;
    for n in ["a-1", "a-2", "b-1"] {
        s.create_experiment(n).await;
        // Distinct creation times, so the default order (newest first) is decided by them.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    s.post("experiments/set-experiment-tag", json!({"experiment_id": "2", "key": "team", "value": "NLP"})).await.ok();
    let search = |body: Value| {
        let s = &s;
        async move {
            let r = s.post("experiments/search", body).await.ok();
            let names: Vec<String> = r["experiments"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
            (names, r["next_page_token"].as_str().map(str::to_owned))
        }
    };
    // The fluent client's default call.
    let (all, token) = search(json!({"max_results": 1000, "view_type": "ACTIVE_ONLY"})).await;
    assert_eq!(all, ["b-1", "a-2", "a-1", "Default"], "newest first");
    assert!(token.is_none());
    assert_eq!(search(json!({"filter": "name LIKE 'a-%'", "order_by": ["name DESC"]})).await.0, ["a-2", "a-1"]);
    assert_eq!(search(json!({"filter": "name ILIKE 'A-%'", "order_by": ["name"]})).await.0, ["a-1", "a-2"]);
    assert_eq!(search(json!({"filter": "tags.team = 'NLP'"})).await.0, ["a-2"]);
    // Paging: two per page.
    let (p1, t1) = search(json!({"max_results": 2, "order_by": ["name"]})).await;
    let (p2, t2) = search(json!({"max_results": 2, "order_by": ["name"], "page_token": t1.expect("a next page")})).await;
    assert_eq!([p1, p2].concat(), ["Default", "a-1", "a-2", "b-1"]);
    assert!(t2.is_none());
    // view_type, and the GET form (repeated keys for lists).
    s.post("experiments/delete", json!({"experiment_id": "3"})).await.ok();
    assert_eq!(search(json!({"view_type": "DELETED_ONLY"})).await.0, ["b-1"]);
    assert_eq!(search(json!({"view_type": "ALL"})).await.0.len(), 4);
    let got = s.get("experiments/search", &[("filter", "name LIKE '%-%'"), ("order_by", "name DESC"), ("max_results", "10")]).await.ok();
    let got: Vec<&str> = got["experiments"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(got, ["a-2", "a-1"]);
}

async fn run_create_get_update_as_the_client_does(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("trace-exp").await;
    // mlflow.start_run(run_name="r1"), as traced.
    let created = s
        .post(
            "runs/create",
            json!({
                "experiment_id": exp, "user_id": "root", "run_name": "r1", "start_time": 1795427457518i64,
                "tags": [
                    {"key": "mlflow.user", "value": "root"},
                    {"key": "mlflow.source.name", "value": "/home/user/scratch/trace_client.py"},
                    {"key": "mlflow.source.type", "value": "LOCAL"},
                    {"key": "mlflow.runName", "value": "r1"}
                ]
            }),
        )
        .await
        .ok();
    let info = &created["run"]["info"];
    let id = info["run_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(info["run_uuid"], id.as_str());
    assert_eq!(info["experiment_id"], exp.as_str());
    assert_eq!(info["run_name"], "r1");
    assert_eq!(info["user_id"], "root");
    assert_eq!(info["status"], "RUNNING");
    assert_eq!(info["start_time"], 1795427457518i64);
    assert!(info.get("end_time").is_none_or(Value::is_null));
    assert_eq!(info["artifact_uri"], format!("mlflow-artifacts:/{exp}/{id}/artifacts"));
    assert_eq!(info["lifecycle_stage"], "active");
    let t = kv(&created["run"]["data"]["tags"]);
    assert_eq!(t["mlflow.runName"], "r1");
    assert_eq!(t["mlflow.source.type"], "LOCAL");
    // runs/get with both aliases returns the same run.
    let got = s.get("runs/get", &[("run_uuid", &id), ("run_id", &id)]).await.ok();
    assert_eq!(got["run"], created["run"]);
    assert_eq!(s.get("runs/get", &[("run_uuid", &id)]).await.ok()["run"], created["run"]);
    // No run_name: one is generated and stored as the tag too.
    let anon = s.post("runs/create", json!({"experiment_id": exp, "user_id": "unknown", "start_time": 1795427466904i64})).await.ok();
    let anon_name = anon["run"]["info"]["run_name"].as_str().unwrap().to_owned();
    assert!(!anon_name.is_empty());
    assert_eq!(kv(&anon["run"]["data"]["tags"])["mlflow.runName"], anon_name);
    // set_terminated: runs/update with both ids -> run_info.
    let anon_id = anon["run"]["info"]["run_id"].as_str().unwrap();
    let updated = s.post("runs/update", json!({"run_uuid": anon_id, "status": "FAILED", "end_time": 1795427466971i64, "run_id": anon_id})).await.ok();
    let ri = &updated["run_info"];
    assert_eq!((ri["status"].as_str(), ri["end_time"].as_i64(), ri["run_name"].as_str()), (Some("FAILED"), Some(1795427466971), Some(anon_name.as_str())));
    assert_eq!(ri["run_id"], anon_id);
    // Rename via update.
    let renamed = s.post("runs/update", json!({"run_id": id, "run_name": "r1b"})).await.ok();
    assert_eq!(renamed["run_info"]["run_name"], "r1b");
    assert_eq!(renamed["run_info"]["status"], "RUNNING");
    assert_eq!(kv(&s.get_run(&id).await["data"]["tags"])["mlflow.runName"], "r1b");
    // Missing run: 404 RESOURCE_DOES_NOT_EXIST with MLflow's message.
    let missing = s.get("runs/get", &[("run_uuid", "00000000000000000000000000000000"), ("run_id", "00000000000000000000000000000000")]).await;
    missing.err(404, "RESOURCE_DOES_NOT_EXIST");
    assert_eq!(missing.json["message"], "Run with id=00000000000000000000000000000000 not found");
}

async fn run_delete_restore_and_search_view_types(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("e").await;
    let a = s.create_run(&exp).await;
    let other = s.create_run(&exp).await;
    assert_eq!(s.post("runs/delete", json!({"run_id": a})).await.ok(), json!({}));
    assert_eq!(s.get_run(&a).await["info"]["lifecycle_stage"], "deleted");
    let ids = |v: &Value| -> Vec<String> {
        v["runs"].as_array().map(|r| r.iter().map(|r| r["info"]["run_id"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    };
    let active = s.post("runs/search", json!({"experiment_ids": [exp]})).await.ok();
    assert_eq!(ids(&active), [other.clone()]);
    let deleted = s.post("runs/search", json!({"experiment_ids": [exp], "run_view_type": "DELETED_ONLY"})).await.ok();
    assert_eq!(ids(&deleted), [a.clone()]);
    let all = s.post("runs/search", json!({"experiment_ids": [exp], "run_view_type": "ALL"})).await.ok();
    assert_eq!(ids(&all).len(), 2);
    // Writes to a deleted run are refused.
    s.post("runs/log-parameter", json!({"run_id": a, "key": "p", "value": "1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    assert_eq!(s.post("runs/restore", json!({"run_id": a})).await.ok(), json!({}));
    assert_eq!(s.get_run(&a).await["info"]["lifecycle_stage"], "active");
    s.post("runs/log-parameter", json!({"run_id": a, "key": "p", "value": "1"})).await.ok();
}

async fn params_tags_and_metrics_logging(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("log").await;
    let id = s.create_run(&exp).await;
    // Bodies as traced: log-parameter/log-metric/set-tag carry run_id and run_uuid.
    assert_eq!(s.post("runs/log-parameter", json!({"run_uuid": id, "key": "lr", "value": "0.01", "run_id": id})).await.ok(), json!({}));
    assert_eq!(s.post("runs/log-batch", json!({"run_id": id, "params": [{"key": "a", "value": "1"}, {"key": "b", "value": "x"}]})).await.ok(), json!({}));
    s.post("runs/log-metric", json!({"run_uuid": id, "key": "loss", "value": 0.5, "timestamp": 1795427457691i64, "step": 1, "run_id": id})).await.ok();
    s.post(
        "runs/log-batch",
        json!({"run_id": id, "metrics": [
            {"key": "acc", "value": 0.9, "timestamp": 1795427457743i64, "step": 2, "run_id": id},
            {"key": "f1", "value": 0.8, "timestamp": 1795427457743i64, "step": 2, "run_id": id}
        ]}),
    )
    .await
    .ok();
    s.post("runs/set-tag", json!({"run_uuid": id, "key": "k", "value": "v", "run_id": id})).await.ok();
    s.post("runs/log-batch", json!({"run_id": id, "tags": [{"key": "k2", "value": "v2"}, {"key": "k3", "value": "v3"}]})).await.ok();
    // client.log_batch with metrics, params and tags together; step defaults to 0.
    s.post(
        "runs/log-batch",
        json!({"run_id": id, "metrics": [{"key": "m", "value": 0.0, "timestamp": 1795427457899i64}, {"key": "m", "value": 1.0, "timestamp": 1795427457899i64, "step": 1}],
               "params": [{"key": "c", "value": "3"}], "tags": [{"key": "k", "value": "v-new"}]}),
    )
    .await
    .ok();
    s.post("runs/log-metric", json!({"run_id": id, "key": "loss", "value": 0.4, "timestamp": 1795427457955i64, "step": 2})).await.ok();
    // Re-logging a param with the same value is a no-op; another value is 400 INVALID_PARAMETER_VALUE.
    s.post("runs/log-parameter", json!({"run_id": id, "key": "lr", "value": "0.01"})).await.ok();
    s.post("runs/log-parameter", json!({"run_id": id, "key": "lr", "value": "0.02"})).await.err(400, "INVALID_PARAMETER_VALUE");
    // Numbers sent for string values are written out.
    s.post("runs/set-tag", json!({"run_id": id, "key": "n", "value": 5})).await.ok();

    let run = s.get_run(&id).await;
    assert_eq!(kv(&run["data"]["params"]), [("a", "1"), ("b", "x"), ("c", "3"), ("lr", "0.01")].map(|(k, v)| (k.to_owned(), v.to_owned())).into());
    let tags = kv(&run["data"]["tags"]);
    assert_eq!((tags["k"].as_str(), tags["k2"].as_str(), tags["k3"].as_str(), tags["n"].as_str()), ("v-new", "v2", "v3", "5"));
    let metrics: std::collections::BTreeMap<String, Value> =
        run["data"]["metrics"].as_array().unwrap().iter().map(|m| (m["key"].as_str().unwrap().to_owned(), m.clone())).collect();
    assert_eq!(metrics.keys().collect::<Vec<_>>(), ["acc", "f1", "loss", "m"]);
    assert_eq!(metrics["loss"], json!({"key": "loss", "value": 0.4, "timestamp": 1795427457955i64, "step": 2}));
    assert_eq!(metrics["m"]["value"], 1.0);
    assert_eq!(metrics["m"]["step"], 1);
    // delete-tag.
    assert_eq!(s.post("runs/delete-tag", json!({"run_id": id, "key": "k3"})).await.ok(), json!({}));
    assert!(!kv(&s.get_run(&id).await["data"]["tags"]).contains_key("k3"));
    s.post("runs/delete-tag", json!({"run_id": id, "key": "k3"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
}

async fn metric_history_paging_and_special_values(b: Backend) {
    let s = server(b).await;
    let id = s.create_run("0").await;
    let metrics: Vec<Value> = (0..25).map(|i| json!({"key": "loss", "value": 1.0 / (i as f64 + 1.0), "timestamp": 1000 + i, "step": i})).collect();
    s.post("runs/log-batch", json!({"run_id": id, "metrics": metrics})).await.ok();
    // The client's call: max_results=25000, both ids.
    let all = s.get("metrics/get-history", &[("run_uuid", &id), ("metric_key", "loss"), ("run_id", &id), ("max_results", "25000")]).await.ok();
    let all = all["metrics"].as_array().unwrap().clone();
    assert_eq!(all.len(), 25);
    assert_eq!(all[0], json!({"key": "loss", "value": 1.0, "timestamp": 1000, "step": 0}));
    assert!(all.windows(2).all(|w| w[0]["timestamp"].as_i64() < w[1]["timestamp"].as_i64()));
    // Pages of 10 with tokens.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = vec![("run_id", id.as_str()), ("metric_key", "loss"), ("max_results", "10")];
        if let Some(t) = &token {
            q.push(("page_token", t));
        }
        let page = s.get("metrics/get-history", &q).await.ok();
        pages += 1;
        paged.extend(page["metrics"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
        assert!(pages < 5);
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);
    // An unknown key is an empty object.
    assert_eq!(s.get("metrics/get-history", &[("run_id", &id), ("metric_key", "nope")]).await.ok(), json!({}));
    // NaN and infinities as the client sends them: strings. NaN comes back as "NaN", +-inf as
    // the largest finite doubles (MLflow's storage).
    for (key, value) in [("nan", "NaN"), ("pinf", "Infinity"), ("ninf", "-Infinity")] {
        s.post("runs/log-metric", json!({"run_id": id, "key": key, "value": value, "timestamp": 5, "step": 0})).await.ok();
    }
    s.post("runs/log-batch", json!({"run_id": id, "metrics": [{"key": "bnan", "value": "NaN", "timestamp": 5}]})).await.ok();
    let hist = |key: &'static str| {
        let s = &s;
        let id = id.clone();
        async move { s.get("metrics/get-history", &[("run_id", &id), ("metric_key", key)]).await.ok()["metrics"][0]["value"].clone() }
    };
    assert_eq!(hist("nan").await, "NaN");
    assert_eq!(hist("bnan").await, "NaN");
    assert_eq!(hist("pinf").await, json!(f64::MAX));
    assert_eq!(hist("ninf").await, json!(-f64::MAX));
    let latest = s.get_run(&id).await["data"]["metrics"].clone();
    let nan = latest.as_array().unwrap().iter().find(|m| m["key"] == "nan").unwrap();
    assert_eq!(nan["value"], "NaN");
}

async fn run_search_filters_order_paging_and_get_form(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("search").await;
    let other = s.create_experiment("other").await;
    for (i, name) in ["r0", "r1", "r2", "r3", "r4"].iter().enumerate() {
        let run = s.post("runs/create", json!({"experiment_id": exp, "run_name": name, "start_time": 1000 + i as i64})).await.ok();
        let id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
        s.post(
            "runs/log-batch",
            json!({"run_id": id,
                   "metrics": [{"key": "acc", "value": i as f64 / 10.0, "timestamp": 1, "step": 0}],
                   "params": [{"key": "opt", "value": if i % 2 == 0 { "adam" } else { "sgd" }}],
                   "tags": [{"key": "team", "value": if i < 2 { "Vision" } else { "nlp" }}]}),
        )
        .await
        .ok();
    }
    s.create_run(&other).await;
    let search = |body: Value| {
        let s = &s;
        async move { s.post("runs/search", body).await.ok() }
    };
    // The client's default search: newest first.
    let r = search(json!({"experiment_ids": [exp], "filter": "", "run_view_type": "ACTIVE_ONLY", "max_results": 1000, "order_by": []})).await;
    assert_eq!(names(&r["runs"]), ["r4", "r3", "r2", "r1", "r0"]);
    assert!(r.get("next_page_token").is_none_or(Value::is_null));
    // Runs are returned whole: params, tags and latest metrics.
    let r4 = &r["runs"][0];
    assert_eq!(kv(&r4["data"]["params"])["opt"], "adam");
    assert_eq!(r4["data"]["metrics"][0]["value"], 0.4);
    assert_eq!(names(&search(json!({"experiment_ids": [exp], "filter": "metrics.acc >= 0.2 AND params.opt = 'adam'"})).await["runs"]), ["r4", "r2"]);
    assert_eq!(names(&search(json!({"experiment_ids": [exp], "filter": "tags.team LIKE 'V%'", "order_by": ["run_name"]})).await["runs"]), ["r0", "r1"]);
    assert_eq!(names(&search(json!({"experiment_ids": [exp], "filter": "tags.team ILIKE 'v%'", "order_by": ["run_name"]})).await["runs"]), ["r0", "r1"]);
    assert_eq!(names(&search(json!({"experiment_ids": [exp], "filter": "tags.team LIKE 'v%'"})).await["runs"]), Vec::<String>::new());
    let ids: Vec<String> = r["runs"].as_array().unwrap().iter().map(|r| r["info"]["run_id"].as_str().unwrap().to_owned()).collect();
    let by_id = format!("attributes.run_id IN ('{}', '{}')", ids[1], ids[3]);
    assert_eq!(names(&search(json!({"experiment_ids": [exp], "filter": by_id})).await["runs"]), ["r3", "r1"]);
    assert_eq!(names(&search(json!({"experiment_ids": [exp], "order_by": ["metrics.acc ASC"]})).await["runs"]), ["r0", "r1", "r2", "r3", "r4"]);
    // No match: an empty object, as MLflow answers.
    assert_eq!(search(json!({"experiment_ids": [exp], "filter": "metrics.acc > 5"})).await, json!({}));
    // Several experiments.
    assert_eq!(search(json!({"experiment_ids": [exp, other]})).await["runs"].as_array().unwrap().len(), 6);
    // Paging with tokens.
    let p1 = search(json!({"experiment_ids": [exp], "max_results": 2, "order_by": ["run_name"]})).await;
    let p2 = search(json!({"experiment_ids": [exp], "max_results": 2, "order_by": ["run_name"], "page_token": p1["next_page_token"]})).await;
    let p3 = search(json!({"experiment_ids": [exp], "max_results": 2, "order_by": ["run_name"], "page_token": p2["next_page_token"]})).await;
    assert_eq!([names(&p1["runs"]), names(&p2["runs"]), names(&p3["runs"])].concat(), ["r0", "r1", "r2", "r3", "r4"]);
    assert!(p3.get("next_page_token").is_none_or(Value::is_null));
    // The GET form: repeated keys for lists, numbers as strings.
    let url = s.url("/api/2.0/mlflow/runs/search");
    let got = s
        .send(s.client.get(&url).query(&[
            ("experiment_ids", exp.as_str()),
            ("experiment_ids", other.as_str()),
            ("filter", "params.opt = 'sgd'"),
            ("max_results", "10"),
            ("order_by", "run_name DESC"),
        ]))
        .await
        .ok();
    assert_eq!(names(&got["runs"]), ["r3", "r1"]);
}

async fn log_inputs_and_outputs(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("io").await;
    let id = s.create_run(&exp).await;
    let dataset = json!({"tags": [{"key": "mlflow.data.context", "value": "training"}],
                         "dataset": {"name": "toy", "digest": "a5357541", "source_type": "code",
                                     "source": "{\"tags\": {\"mlflow.user\": \"root\"}}",
                                     "schema": "{\"mlflow_colspec\": [{\"type\": \"long\", \"name\": \"x\", \"required\": true}]}",
                                     "profile": "{\"num_rows\": 3, \"num_elements\": 3}"}});
    assert_eq!(s.post("runs/log-inputs", json!({"run_id": id, "datasets": [dataset]})).await.ok(), json!({}));
    let run = s.get_run(&id).await;
    assert_eq!(run["inputs"]["dataset_inputs"], json!([dataset]));
    let found = s.post("runs/search", json!({"experiment_ids": [exp], "filter": "datasets.context = 'training' AND datasets.name = 'toy'"})).await.ok();
    assert_eq!(found["runs"].as_array().unwrap().len(), 1);
    // runs/outputs as log_model sends it.
    let model = s.post("logged-models", json!({"experiment_id": exp, "name": "model", "source_run_id": id})).await.ok();
    let model_id = model["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    assert_eq!(s.post("runs/outputs", json!({"run_id": id, "models": [{"model_id": model_id, "step": 0}]})).await.ok(), json!({}));
    assert_eq!(s.get_run(&id).await["outputs"]["model_outputs"], json!([{"model_id": model_id, "step": 0}]));
}

async fn logged_models_flow(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("models").await;
    let run = s.create_run(&exp).await;
    s.post("runs/log-metric", json!({"run_id": run, "key": "loss", "value": 0.5, "timestamp": 10, "step": 1})).await.ok();
    // mlflow.sklearn.log_model: create -> outputs -> log-batch with model_id -> get -> PUT files -> finalize.
    let created = s
        .post(
            "logged-models",
            json!({"experiment_id": exp, "name": "model", "source_run_id": run, "model_type": "sklearn",
                   "params": [{"key": "lr", "value": "0.01"}], "tags": [{"key": "mlflow.source.type", "value": "LOCAL"}]}),
        )
        .await
        .ok();
    let info = &created["model"]["info"];
    let id = info["model_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("m-") && id.len() == 34 && id[2..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(info["experiment_id"], exp.as_str());
    assert_eq!(info["name"], "model");
    assert_eq!(info["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(info["source_run_id"], run.as_str());
    assert_eq!(info["artifact_uri"], format!("mlflow-artifacts:/{exp}/models/{id}/artifacts"));
    assert!(info["creation_timestamp_ms"].as_i64().unwrap() > 0);
    assert_eq!(created["model"]["data"]["params"], json!([{"key": "lr", "value": "0.01"}]));
    s.post("runs/outputs", json!({"run_id": run, "models": [{"model_id": id, "step": 0}]})).await.ok();
    s.post("runs/log-batch", json!({"run_id": run, "metrics": [{"key": "loss", "value": 0.5, "timestamp": 10, "step": 1, "model_id": id}]})).await.ok();
    let got = s.send(s.client.get(s.url(&format!("/api/2.0/mlflow/logged-models/{id}")))).await.ok();
    assert_eq!(got["model"]["info"]["model_id"], id.as_str());
    let m = &got["model"]["data"]["metrics"][0];
    assert_eq!(
        (m["key"].as_str(), m["value"].as_f64(), m["run_id"].as_str(), m["model_id"].as_str()),
        (Some("loss"), Some(0.5), Some(run.as_str()), Some(id.as_str()))
    );
    let put = s.put_artifact(&format!("{exp}/models/{id}/artifacts/MLmodel"), "artifact_path: x\n").await;
    assert_eq!(put.status.as_u16(), 200);
    // PATCH finalize.
    let ready = s.patch(&format!("logged-models/{id}"), json!({"model_id": id, "status": "LOGGED_MODEL_READY"})).await.ok();
    assert_eq!(ready["model"]["info"]["status"], "LOGGED_MODEL_READY");
    s.patch(&format!("logged-models/{id}"), json!({"status": "DONE"})).await.err(400, "INVALID_PARAMETER_VALUE");
    // PATCH tags (register_model), DELETE one tag.
    let tag_value = "[{\"name\": \"reg\", \"version\": \"1\"}]";
    assert_eq!(s.patch(&format!("logged-models/{id}/tags"), json!({"tags": [{"key": "mlflow.modelVersions", "value": tag_value}]})).await.ok(), json!({}));
    let got = s.send(s.client.get(s.url(&format!("/api/2.0/mlflow/logged-models/{id}")))).await.ok();
    assert_eq!(kv(&got["model"]["info"]["tags"])["mlflow.modelVersions"], tag_value);
    let del = s.send(s.client.delete(s.url(&format!("/api/2.0/mlflow/logged-models/{id}/tags/mlflow.source.type")))).await.ok();
    assert_eq!(del, json!({}));
    let got = s.send(s.client.get(s.url(&format!("/api/2.0/mlflow/logged-models/{id}")))).await.ok();
    assert!(!kv(&got["model"]["info"]["tags"]).contains_key("mlflow.source.type"));
    // Search as list_artifacts/download_artifacts do: name of the first path component.
    let found = s.post("logged-models/search", json!({"experiment_ids": [exp], "filter": "name = 'model'"})).await.ok();
    assert_eq!(found["models"][0]["info"]["model_id"], id.as_str());
    assert_eq!(s.post("logged-models/search", json!({"experiment_ids": [exp], "filter": "name = 'd'"})).await.ok(), json!({}));
    // DELETE the model: gone afterwards.
    assert_eq!(s.send(s.client.delete(s.url(&format!("/api/2.0/mlflow/logged-models/{id}")))).await.ok(), json!({}));
    s.send(s.client.get(s.url(&format!("/api/2.0/mlflow/logged-models/{id}")))).await.err(404, "RESOURCE_DOES_NOT_EXIST");
}

async fn artifacts_put_list_get_delete(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("art").await;
    let run = s.create_run(&exp).await;
    let base = format!("{exp}/{run}/artifacts");
    // One PUT per file, as log_artifact(s)/log_text/log_dict do; the response body is ignored.
    for (path, body) in [("hello.txt", "hello world\n"), ("d/a.txt", "a"), ("d/sub/b.txt", "b"), ("notes/n.txt", "note"), ("conf.json", "{\"a\": 1}\n   ")] {
        let r = s.put_artifact(&format!("{base}/{path}"), body).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    }
    // The bytes land under the artifact root in MLflow's layout.
    assert_eq!(std::fs::read_to_string(s.artifact_root.join(&base).join("d/sub/b.txt")).unwrap(), "b");
    let list = |path: String| {
        let s = &s;
        async move { s.send(s.client.get(s.url("/api/2.0/mlflow-artifacts/artifacts")).query(&[("path", path)])).await.ok() }
    };
    assert_eq!(
        list(base.clone()).await,
        json!({"files": [
            {"path": "conf.json", "is_dir": false, "file_size": 12},
            {"path": "d", "is_dir": true},
            {"path": "hello.txt", "is_dir": false, "file_size": 12},
            {"path": "notes", "is_dir": true}
        ]})
    );
    assert_eq!(list(format!("{base}/d")).await, json!({"files": [{"path": "a.txt", "is_dir": false, "file_size": 1}, {"path": "sub", "is_dir": true}]}));
    // A path naming a file, or nothing, lists as {}.
    assert_eq!(list(format!("{base}/hello.txt")).await, json!({}));
    assert_eq!(list(format!("{base}/missing")).await, json!({}));
    // Download: the bytes.
    let got = s.client.get(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/hello.txt"))).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.headers()["content-length"], "12");
    assert_eq!(got.text().await.unwrap(), "hello world\n");
    // A larger binary file streams through intact (several 5 MiB parts).
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    assert_eq!(s.put_artifact(&format!("{base}/big.bin"), big.clone()).await.status.as_u16(), 200);
    let got = s.client.get(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/big.bin"))).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), big.as_slice());
    // Overwrite replaces.
    s.put_artifact(&format!("{base}/hello.txt"), "bye").await;
    assert_eq!(s.client.get(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/hello.txt"))).send().await.unwrap().text().await.unwrap(), "bye");
    // Names with spaces and unicode survive percent-encoding.
    let r = s.send(s.client.put(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/my%20file%20%C3%A9.txt"))).body("x")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(s.artifact_root.join(&base).join("my file é.txt").exists());
    // DELETE a file, then a folder with everything below it.
    s.send(s.client.delete(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/conf.json")))).await.ok();
    s.send(s.client.delete(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/d")))).await.ok();
    let names: Vec<String> = list(base.clone()).await["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["big.bin", "hello.txt", "my file é.txt", "notes"]);
    // A missing file: 404 RESOURCE_DOES_NOT_EXIST.
    s.send(s.client.get(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/d/a.txt")))).await.err(404, "RESOURCE_DOES_NOT_EXIST");
}

async fn ajax_api_mirror(b: Backend) {
    let s = server(b).await;
    // The web UI's copy of every route.
    let created = s.send(s.client.post(s.url("/ajax-api/2.0/mlflow/experiments/create")).json(&json!({"name": "ui"}))).await.ok();
    let id = created["experiment_id"].as_str().unwrap().to_owned();
    let got = s.send(s.client.get(s.url("/ajax-api/2.0/mlflow/experiments/get")).query(&[("experiment_id", id.as_str())])).await.ok();
    assert_eq!(got["experiment"]["name"], "ui");
    let run = s.send(s.client.post(s.url("/ajax-api/2.0/mlflow/runs/create")).json(&json!({"experiment_id": id}))).await.ok();
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let found = s.send(s.client.post(s.url("/ajax-api/2.0/mlflow/runs/search")).json(&json!({"experiment_ids": [id]}))).await.ok();
    assert_eq!(found["runs"][0]["info"]["run_id"], run_id.as_str());
    s.send(s.client.get(s.url("/ajax-api/2.0/mlflow/experiments/get")).query(&[("experiment_id", "999")])).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let put = s.send(s.client.put(s.url(&format!("/ajax-api/2.0/mlflow-artifacts/artifacts/{id}/{run_id}/artifacts/x.txt"))).body("x")).await;
    assert_eq!(put.status.as_u16(), 200);
    let listed = s.send(s.client.get(s.url("/ajax-api/2.0/mlflow-artifacts/artifacts")).query(&[("path", format!("{id}/{run_id}/artifacts"))])).await.ok();
    assert_eq!(listed, json!({"files": [{"path": "x.txt", "is_dir": false, "file_size": 1}]}));
    let info = s.send(s.client.get(s.url("/ajax-api/3.0/mlflow/server-info"))).await.ok();
    assert_eq!(info["store_type"], "SqlStore");
}

async fn metric_history_100k_points_as_the_client_pages_it(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    // Logged as the client chunks log_metrics: 1000 per log-batch.
    for chunk in 0..100 {
        let metrics: Vec<Value> =
            (0..1000).map(|j| chunk * 1000 + j).map(|i| json!({"key": "loss", "value": i as f64, "timestamp": 1_000_000 + i / 7, "step": i})).collect();
        s.post("runs/log-batch", json!({"run_id": run, "metrics": metrics})).await.ok();
    }
    // get_metric_history: max_results=25000, looping on next_page_token.
    let mut seen = 0i64;
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = vec![("run_uuid", run.as_str()), ("run_id", run.as_str()), ("metric_key", "loss"), ("max_results", "25000")];
        if let Some(t) = &token {
            q.push(("page_token", t.as_str()));
        }
        let page = s.get("metrics/get-history", &q).await.ok();
        pages += 1;
        for m in page["metrics"].as_array().unwrap() {
            // (timestamp, step) order: here that is the logging order.
            assert_eq!(m["step"].as_i64(), Some(seen));
            assert_eq!(m["value"].as_f64(), Some(seen as f64));
            seen += 1;
        }
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
        assert!(pages < 6, "paging does not end");
    }
    assert_eq!((seen, pages), (100_000, 4));
    let latest = &s.get_run(&run).await["data"]["metrics"][0];
    assert_eq!((latest["step"].as_i64(), latest["value"].as_f64()), (Some(99_999), Some(99_999.0)));
}
