//! Bad input over HTTP: malformed JSON, wrong types, missing fields, over-limit batches and
//! bodies, unknown ids and artifact paths that try to leave the root. Each must get a 4xx with
//! the MLflow error code the client keys on, never a 5xx (the client retries those for minutes)
//! and never a write: failed batches leave no rows, traversal leaves no files.
//!
//! Every request goes through `TestServer::send`, which fails the test on any 5xx.

mod common;

use common::{files_below, start, Backend, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_backends!(
    malformed_json_is_bad_request,
    wrong_types_are_invalid_parameter,
    missing_required_fields,
    run_id_and_run_uuid_must_agree,
    over_limit_batches_write_nothing,
    a_bad_entry_fails_the_whole_batch,
    over_long_keys_and_values,
    oversized_body_is_refused,
    unknown_ids_are_resource_does_not_exist,
    bad_search_arguments,
    bad_page_tokens,
    unknown_endpoints,
    state_rules,
    artifact_traversal_is_refused_and_writes_nothing,
    nul_and_odd_text_never_cause_server_errors,
    artifact_file_and_folder_clashes,
);

async fn server(b: Backend) -> TestServer {
    start(b).await.expect("backend configured")
}

/// Runs a request and asserts the MLflow error.
async fn expect_err(s: &TestServer, req: reqwest::RequestBuilder, status: u16, code: &str) -> Value {
    let r = s.send(req).await;
    r.err(status, code);
    r.json
}

fn post_json(s: &TestServer, path: &str, body: &str) -> reqwest::RequestBuilder {
    s.client.post(s.url(&format!("/api/2.0/mlflow/{path}"))).header("content-type", "application/json").body(body.to_owned())
}

async fn malformed_json_is_bad_request(b: Backend) {
    let s = server(b).await;
    for body in ["{\"name\": ", "{name: 'x'}", "not json", "{\"name\": \"x\"} trailing", "\u{0}"] {
        expect_err(&s, post_json(&s, "experiments/create", body), 400, "BAD_REQUEST").await;
    }
    // JSON, but not an object.
    for body in ["[1, 2]", "\"name\"", "42", "null"] {
        expect_err(&s, post_json(&s, "experiments/create", body), 400, "BAD_REQUEST").await;
    }
    // Invalid UTF-8.
    let req =
        s.client.post(s.url("/api/2.0/mlflow/experiments/create")).header("content-type", "application/json").body(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']);
    let r = s.send(req).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);
    // Nothing was created by any of them.
    let all = s.post("experiments/search", json!({"view_type": "ALL"})).await.ok();
    assert_eq!(all["experiments"].as_array().unwrap().len(), 1, "only Default: {all}");
}

async fn wrong_types_are_invalid_parameter(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let cases: Vec<(&str, Value)> = vec![
        ("experiments/create", json!({"name": {"a": 1}})),
        ("experiments/create", json!({"name": "x", "tags": "not a list"})),
        ("experiments/create", json!({"name": "x", "tags": [{"key": ["k"], "value": "v"}]})),
        ("experiments/search", json!({"max_results": "ten"})),
        ("experiments/search", json!({"max_results": 1.5})),
        ("runs/create", json!({"experiment_id": "0", "start_time": "yesterday"})),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "value": "abc", "timestamp": 1})),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "value": true, "timestamp": 1})),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "value": [1.0], "timestamp": 1})),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": "noon"})),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": 1, "step": {"n": 1}})),
        ("runs/log-batch", json!({"run_id": run, "metrics": [{"key": "m", "value": "abc", "timestamp": 1}]})),
        ("runs/log-batch", json!({"run_id": run, "metrics": {"key": "m"}})),
        ("runs/log-batch", json!({"run_id": run, "params": [1, 2]})),
        ("runs/set-tag", json!({"run_id": run, "key": "k", "value": ["v"]})),
        ("runs/set-tag", json!({"run_id": run, "key": "k", "value": {"v": 1}})),
        ("runs/search", json!({"experiment_ids": [{"id": 0}]})),
        ("runs/search", json!({"experiment_ids": ["0"], "run_view_type": "SOME"})),
        ("runs/update", json!({"run_id": run, "end_time": [1]})),
    ];
    for (path, body) in cases {
        let r = s.post(path, body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{path} {body}: {}", r.text);
        assert_eq!(r.json["error_code"], "INVALID_PARAMETER_VALUE", "{path} {body}: {}", r.text);
    }
    // Query strings: numbers that are not numbers.
    s.get("metrics/get-history", &[("run_id", &run), ("metric_key", "m"), ("max_results", "many")]).await.err(400, "INVALID_PARAMETER_VALUE");
    // Nothing got logged to the run.
    let got = s.get_run(&run).await;
    assert!(got["data"].get("metrics").is_none_or(|m| m.as_array().is_some_and(Vec::is_empty)), "{got}");
    assert!(!common::kv(&got["data"]["tags"]).contains_key("k"));
}

async fn missing_required_fields(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("experiments/create", json!({}), "name"),
        ("experiments/create", json!({"name": ""}), "name"),
        ("experiments/delete", json!({}), "experiment_id"),
        ("experiments/restore", json!({}), "experiment_id"),
        ("experiments/update", json!({"new_name": "x"}), "experiment_id"),
        ("experiments/set-experiment-tag", json!({"experiment_id": "0", "value": "v"}), "key"),
        ("runs/update", json!({"status": "FINISHED"}), "run_id"),
        ("runs/delete", json!({}), "run_id"),
        ("runs/log-metric", json!({"run_id": run, "value": 1.0, "timestamp": 1}), "key"),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "timestamp": 1}), "value"),
        ("runs/log-metric", json!({"run_id": run, "key": "m", "value": 1.0}), "timestamp"),
        ("runs/log-parameter", json!({"run_id": run, "key": "p"}), "value"),
        ("runs/log-parameter", json!({"run_id": run, "value": "v"}), "key"),
        ("runs/set-tag", json!({"run_id": run, "key": "t"}), "value"),
        ("runs/log-batch", json!({"metrics": []}), "run_id"),
        ("runs/log-batch", json!({"run_id": run, "metrics": [{"value": 1.0, "timestamp": 1}]}), "key"),
        ("runs/log-batch", json!({"run_id": run, "metrics": [{"key": "m", "value": 1.0}]}), "timestamp"),
        ("runs/log-batch", json!({"run_id": run, "params": [{"value": "v"}]}), "key"),
        ("runs/log-inputs", json!({"datasets": []}), "run_id"),
        ("runs/outputs", json!({"run_id": run, "models": [{"step": 0}]}), "model_id"),
        ("logged-models", json!({"name": "m"}), "experiment_id"),
    ];
    for (path, body, field) in cases {
        let r = s.post(path, body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{path} {body}: {}", r.text);
        assert_eq!(r.json["error_code"], "INVALID_PARAMETER_VALUE", "{path} {body}: {}", r.text);
        assert!(r.json["message"].as_str().unwrap().contains(field), "{path}: message should name '{field}': {}", r.text);
    }
    for (path, q, field) in [
        ("runs/get", vec![], "run_id"),
        ("experiments/get", vec![], "experiment_id"),
        ("experiments/get-by-name", vec![], "experiment_name"),
        ("metrics/get-history", vec![("run_id", run.as_str())], "metric_key"),
        ("metrics/get-history", vec![("metric_key", "m")], "run_id"),
    ] {
        let r = s.get(path, &q).await;
        r.err(400, "INVALID_PARAMETER_VALUE");
        assert!(r.json["message"].as_str().unwrap().contains(field), "{path}: {}", r.text);
    }
    // A dataset without name or digest.
    s.post("runs/log-inputs", json!({"run_id": run, "datasets": [{"dataset": {"name": "x"}}]})).await.err(400, "INVALID_PARAMETER_VALUE");
    // Nothing was written to the run.
    let got = s.get_run(&run).await;
    assert!(got["data"].get("params").is_none_or(|m| m.as_array().is_some_and(Vec::is_empty)), "{got}");
    assert!(got["inputs"].get("dataset_inputs").is_none_or(|m| m.as_array().is_some_and(Vec::is_empty)), "{got}");
}

async fn run_id_and_run_uuid_must_agree(b: Backend) {
    let s = server(b).await;
    let a = s.create_run("0").await;
    let other = s.create_run("0").await;
    s.post("runs/log-parameter", json!({"run_id": a, "run_uuid": other, "key": "p", "value": "1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.get("runs/get", &[("run_id", &a), ("run_uuid", &other)]).await.err(400, "INVALID_PARAMETER_VALUE");
    assert!(s.get_run(&a).await["data"].get("params").is_none());
    assert!(s.get_run(&other).await["data"].get("params").is_none());
}

async fn over_limit_batches_write_nothing(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let metrics = |n: usize| -> Vec<Value> { (0..n).map(|i| json!({"key": "m", "value": i as f64, "timestamp": 1, "step": i})).collect() };
    let pairs = |prefix: &str, n: usize| -> Vec<Value> { (0..n).map(|i| json!({"key": format!("{prefix}{i}"), "value": "v"})).collect() };
    let cases = [
        json!({"run_id": run, "metrics": metrics(1001)}),
        json!({"run_id": run, "params": pairs("p", 101)}),
        json!({"run_id": run, "tags": pairs("t", 101)}),
        json!({"run_id": run, "metrics": metrics(1000), "params": pairs("p", 1)}),
        json!({"run_id": run, "metrics": metrics(900), "params": pairs("p", 100), "tags": pairs("t", 1)}),
    ];
    for body in cases {
        let r = s.post("runs/log-batch", body).await;
        r.err(400, "INVALID_PARAMETER_VALUE");
    }
    let got = s.get_run(&run).await;
    assert!(got["data"].get("metrics").is_none(), "{got}");
    assert!(got["data"].get("params").is_none(), "{got}");
    assert_eq!(common::kv(&got["data"]["tags"]).len(), 1, "only mlflow.runName: {got}");
    assert_eq!(s.get("metrics/get-history", &[("run_id", &run), ("metric_key", "m")]).await.ok(), json!({}));
    // Exactly at the limits is fine.
    s.post("runs/log-batch", json!({"run_id": run, "metrics": metrics(1000)})).await.ok();
    s.post("runs/log-batch", json!({"run_id": run, "params": pairs("p", 100)})).await.ok();
    s.post("runs/log-batch", json!({"run_id": run, "tags": pairs("t", 100)})).await.ok();
    let h = s.get("metrics/get-history", &[("run_id", &run), ("metric_key", "m")]).await.ok();
    assert_eq!(h["metrics"].as_array().unwrap().len(), 1000);
}

async fn a_bad_entry_fails_the_whole_batch(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    s.post("runs/log-parameter", json!({"run_id": run, "key": "lr", "value": "0.1"})).await.ok();
    // The last entry of each batch is bad; none of the good ones before it may land.
    let bad = [
        json!({"run_id": run, "metrics": [{"key": "good", "value": 1.0, "timestamp": 1}, {"key": "bad", "value": 1.0}]}),
        json!({"run_id": run, "metrics": [{"key": "good", "value": 1.0, "timestamp": 1}], "params": [{"key": "lr", "value": "0.2"}]}),
        json!({"run_id": run, "params": [{"key": "new", "value": "1"}, {"key": "new", "value": "2"}]}),
        json!({"run_id": run, "tags": [{"key": "good", "value": "1"}], "params": [{"key": "../x", "value": "1"}]}),
        json!({"run_id": run, "metrics": [{"key": "good", "value": 1.0, "timestamp": 1}, {"key": "bad key*", "value": 1.0, "timestamp": 1}]}),
    ];
    for body in bad {
        let r = s.post("runs/log-batch", body.clone()).await;
        r.err(400, "INVALID_PARAMETER_VALUE");
    }
    let got = s.get_run(&run).await;
    assert!(got["data"].get("metrics").is_none(), "{got}");
    assert_eq!(common::kv(&got["data"]["params"]), [("lr".to_string(), "0.1".to_string())].into());
    assert!(!common::kv(&got["data"]["tags"]).contains_key("good"));
    assert_eq!(s.get("metrics/get-history", &[("run_id", &run), ("metric_key", "good")]).await.ok(), json!({}));
}

async fn over_long_keys_and_values(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let long_key = "k".repeat(251);
    s.post("runs/log-metric", json!({"run_id": run, "key": long_key, "value": 1.0, "timestamp": 1})).await.err(400, "INVALID_PARAMETER_VALUE");
    // Over-long values are cut to MLflow's limits (in characters), as its server does.
    s.post("runs/log-parameter", json!({"run_id": run, "key": "long", "value": "값".repeat(6001)})).await.ok();
    s.post("runs/set-tag", json!({"run_id": run, "key": "long", "value": "v".repeat(8001)})).await.ok();
    let got = s.get_run(&run).await;
    assert_eq!(common::kv(&got["data"]["params"])["long"], "값".repeat(6000));
    assert_eq!(common::kv(&got["data"]["tags"])["long"], "v".repeat(8000));
    s.post("experiments/create", json!({"name": "e".repeat(501)})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/create", json!({"name": 5})).await.err(400, "INVALID_PARAMETER_VALUE");
    // Keys that look like paths or carry odd characters.
    for key in ["../x", "/abs", "a/../b", "a/./b", "tab\tkey", "semi;colon", "quote'"] {
        s.post("runs/set-tag", json!({"run_id": run, "key": key, "value": "v"})).await.err(400, "INVALID_PARAMETER_VALUE");
        s.post("runs/log-metric", json!({"run_id": run, "key": key, "value": 1.0, "timestamp": 1})).await.err(400, "INVALID_PARAMETER_VALUE");
    }
    // At the limits, accepted.
    s.post("runs/log-metric", json!({"run_id": run, "key": "k".repeat(250), "value": 1.0, "timestamp": 1})).await.ok();
    s.post("runs/log-parameter", json!({"run_id": run, "key": "p", "value": "v".repeat(6000)})).await.ok();
    s.post("runs/set-tag", json!({"run_id": run, "key": "t", "value": "v".repeat(8000)})).await.ok();
    s.post("runs/set-tag", json!({"run_id": run, "key": "ok/name with-chars_0.9:x", "value": "v"})).await.ok();
}

async fn oversized_body_is_refused(b: Backend) {
    let s = server(b).await;
    // 5 MiB of JSON: over the 4 MiB cap on request bodies (MLflow caps log-batch at 1 MB).
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    // The server answers as soon as the cap is reached and then closes the connection with
    // unread bytes, which the kernel may turn into a reset before the client reads the answer.
    // So try a few times: every answer that arrives must be the 400, and one must arrive.
    // A client of its own that keeps no idle connection: a connection the server closed with
    // unread bytes must not go back to the shared pool and break the checks below.
    let oneshot = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut answered = 0;
    for _ in 0..10 {
        let request = oneshot.post(s.url("/api/2.0/mlflow/experiments/create")).header("content-type", "application/json").body(big.clone());
        let Ok(resp) = request.send().await else { continue };
        let status = resp.status();
        let Ok(text) = resp.text().await else { continue };
        assert_eq!(status.as_u16(), 400, "{}", &text[..text.len().min(200)]);
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(json["error_code"], "INVALID_PARAMETER_VALUE", "{text}");
        answered += 1;
        if answered == 2 {
            break;
        }
    }
    assert!(answered > 0, "no answer to an oversized body in 10 tries");
    let all = s.post("experiments/search", json!({})).await.ok();
    assert_eq!(all["experiments"].as_array().unwrap().len(), 1);
    // The server still answers afterwards.
    s.create_experiment("after").await;
}

async fn unknown_ids_are_resource_does_not_exist(b: Backend) {
    let s = server(b).await;
    let ghost = "0123456789abcdef0123456789abcdef";
    let exp_cases: Vec<(&str, Value)> = vec![
        ("experiments/delete", json!({"experiment_id": "4242"})),
        ("experiments/restore", json!({"experiment_id": "4242"})),
        ("experiments/update", json!({"experiment_id": "4242", "new_name": "x"})),
        ("experiments/set-experiment-tag", json!({"experiment_id": "4242", "key": "k", "value": "v"})),
        ("runs/create", json!({"experiment_id": "4242"})),
        ("logged-models", json!({"experiment_id": "4242", "name": "m"})),
        ("runs/update", json!({"run_id": ghost, "status": "FINISHED"})),
        ("runs/delete", json!({"run_id": ghost})),
        ("runs/restore", json!({"run_id": ghost})),
        ("runs/log-metric", json!({"run_id": ghost, "key": "m", "value": 1.0, "timestamp": 1})),
        ("runs/log-parameter", json!({"run_id": ghost, "key": "p", "value": "v"})),
        ("runs/set-tag", json!({"run_id": ghost, "key": "t", "value": "v"})),
        ("runs/delete-tag", json!({"run_id": ghost, "key": "t"})),
        ("runs/log-batch", json!({"run_id": ghost, "params": [{"key": "p", "value": "v"}]})),
        ("runs/log-inputs", json!({"run_id": ghost, "datasets": []})),
        ("runs/outputs", json!({"run_id": ghost, "models": [{"model_id": "m-1", "step": 0}]})),
        ("logged-models", json!({"experiment_id": "0", "source_run_id": ghost})),
    ];
    for (path, body) in exp_cases {
        let r = s.post(path, body.clone()).await;
        assert_eq!(r.status.as_u16(), 404, "{path} {body}: {}", r.text);
        assert_eq!(r.json["error_code"], "RESOURCE_DOES_NOT_EXIST", "{path}: {}", r.text);
    }
    s.get("experiments/get", &[("experiment_id", "4242")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.get("experiments/get", &[("experiment_id", "99999999999999999999999")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.get("experiments/get-by-name", &[("experiment_name", "nope")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.get("runs/get", &[("run_id", ghost)]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.get("runs/get", &[("run_id", "'; drop table run; --")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    // An unknown run has no history, like an unknown key (MLflow answers `{}`).
    assert_eq!(s.get("metrics/get-history", &[("run_id", ghost), ("metric_key", "m")]).await.ok(), json!({}));
    let lm = |m: reqwest::Method, p: &str| s.client.request(m, s.url(&format!("/api/2.0/mlflow/logged-models/{p}")));
    expect_err(&s, lm(reqwest::Method::GET, "m-0000"), 404, "RESOURCE_DOES_NOT_EXIST").await;
    expect_err(&s, lm(reqwest::Method::PATCH, "m-0000").json(&json!({"status": "LOGGED_MODEL_READY"})), 404, "RESOURCE_DOES_NOT_EXIST").await;
    expect_err(&s, lm(reqwest::Method::PATCH, "m-0000/tags").json(&json!({"tags": [{"key": "k", "value": "v"}]})), 404, "RESOURCE_DOES_NOT_EXIST").await;
    expect_err(&s, lm(reqwest::Method::DELETE, "m-0000"), 404, "RESOURCE_DOES_NOT_EXIST").await;
    expect_err(&s, lm(reqwest::Method::DELETE, "m-0000/tags/k"), 404, "RESOURCE_DOES_NOT_EXIST").await;
    // The store is intact after the injection attempt.
    s.create_run("0").await;
}

async fn bad_search_arguments(b: Backend) {
    let s = server(b).await;
    for filter in [
        "metrics.acc >>> 1",
        "params.p = 1",
        "metrics.acc > 'x'",
        "foo.bar = 'x'",
        "attributes.nope = 'x'",
        "params.p = 'a' OR params.q = 'b'",
        "params.p = 'unterminated",
        "metrics.acc LIKE '1'",
    ] {
        let r = s.post("runs/search", json!({"experiment_ids": ["0"], "filter": filter})).await;
        assert_eq!((r.status.as_u16(), r.json["error_code"].as_str()), (400, Some("INVALID_PARAMETER_VALUE")), "{filter}: {}", r.text);
    }
    for order in [vec!["metrics.acc SIDEWAYS"], vec!["nope.x"], vec!["start_time", "start_time"]] {
        let r = s.post("runs/search", json!({"experiment_ids": ["0"], "order_by": order})).await;
        assert_eq!((r.status.as_u16(), r.json["error_code"].as_str()), (400, Some("INVALID_PARAMETER_VALUE")), "{order:?}: {}", r.text);
    }
    for max in [0, -1, 50_001] {
        s.post("runs/search", json!({"experiment_ids": ["0"], "max_results": max})).await.err(400, "INVALID_PARAMETER_VALUE");
    }
    s.post("runs/search", json!({"experiment_ids": ["0"], "max_results": 50_000})).await.ok();
    s.post("runs/search", json!({"experiment_ids": ["zero"]})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/search", json!({"filter": "name = "})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/search", json!({"filter": "metrics.x > 1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/search", json!({"view_type": "SOMETIMES"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/search", json!({"max_results": 0})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("logged-models/search", json!({"experiment_ids": ["0"], "filter": "metrics.x > 1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.get("metrics/get-history", &[("run_id", &s.create_run("0").await), ("metric_key", "m"), ("max_results", "0")]).await.err(400, "INVALID_PARAMETER_VALUE");
}

async fn bad_page_tokens(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    for token in ["garbage!", "eyJvZmZzZXQiOiAtNX0=", "e30=", "bm90IGpzb24="] {
        s.post("runs/search", json!({"experiment_ids": ["0"], "page_token": token})).await.err(400, "INVALID_PARAMETER_VALUE");
        s.post("experiments/search", json!({"page_token": token})).await.err(400, "INVALID_PARAMETER_VALUE");
        s.post("logged-models/search", json!({"experiment_ids": ["0"], "page_token": token})).await.err(400, "INVALID_PARAMETER_VALUE");
        s.get("metrics/get-history", &[("run_id", &run), ("metric_key", "m"), ("page_token", token)]).await.err(400, "INVALID_PARAMETER_VALUE");
    }
}

async fn unknown_endpoints(b: Backend) {
    let s = server(b).await;
    for path in ["/api/2.0/mlflow/nope", "/api/2.0/mlflow/runs/get/extra", "/api/9.9/mlflow/runs/get", "/nothing", "/api/2.0/mlflow-artifacts/nope"] {
        expect_err(&s, s.client.get(s.url(path)), 404, "ENDPOINT_NOT_FOUND").await;
        expect_err(&s, s.client.post(s.url(path)).json(&json!({})), 404, "ENDPOINT_NOT_FOUND").await;
    }
    // A known path with the wrong method is a 4xx too (never handled as another endpoint).
    let r = s.send(s.client.delete(s.url("/api/2.0/mlflow/runs/get"))).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let r = s.send(s.client.get(s.url("/api/2.0/mlflow/runs/create"))).await;
    assert!(r.status.is_client_error(), "{}", r.status);
}

async fn state_rules(b: Backend) {
    let s = server(b).await;
    let exp = s.create_experiment("e").await;
    let run = s.create_run(&exp).await;
    s.post("runs/update", json!({"run_id": run, "status": "DONE"})).await.err(400, "INVALID_PARAMETER_VALUE");
    assert_eq!(s.get_run(&run).await["info"]["status"], "RUNNING");
    s.post("experiments/create", json!({"name": "e"})).await.err(400, "RESOURCE_ALREADY_EXISTS");
    s.post("experiments/delete", json!({"experiment_id": exp})).await.ok();
    s.post("experiments/delete", json!({"experiment_id": exp})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/update", json!({"experiment_id": exp, "new_name": "e2"})).await.err(400, "INVALID_PARAMETER_VALUE");
    // Deleted-experiment names stay taken, as in MLflow.
    s.post("experiments/create", json!({"name": "e"})).await.err(400, "RESOURCE_ALREADY_EXISTS");
    s.post("runs/log-metric", json!({"run_id": run, "key": "m", "value": 1.0, "timestamp": 1})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("experiments/restore", json!({"experiment_id": exp})).await.ok();
    s.post("experiments/restore", json!({"experiment_id": exp})).await.err(400, "INVALID_PARAMETER_VALUE");
}

/// Sends raw bytes on a fresh connection (so that no client normalizes `..` away) and returns
/// the status and body.
async fn raw(s: &TestServer, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let addr = s.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn artifact_traversal_is_refused_and_writes_nothing(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let base = format!("0/{run}/artifacts");
    assert_eq!(s.put_artifact(&format!("{base}/keep.txt"), "keep").await.status.as_u16(), 200);
    // A file just outside the root that DELETE must not remove, and a name no upload may create.
    let outside = s.dir.join("outside.txt");
    std::fs::write(&outside, "outside").unwrap();
    let marker = format!("escaped-{}", uuid::Uuid::new_v4().simple());
    let before = files_below(&s.dir);

    let prefix = "/api/2.0/mlflow-artifacts/artifacts";
    let targets = [
        format!("{prefix}/../{marker}"),
        format!("{prefix}/../../{marker}"),
        format!("{prefix}/{base}/../../../../{marker}"),
        format!("{prefix}/0/../../{marker}"),
        format!("{prefix}/%2e%2e/{marker}"),
        format!("{prefix}/%2E%2E/%2e%2e/{marker}"),
        format!("{prefix}/{base}/..%2f..%2f..%2f..%2f{marker}"),
        format!("{prefix}/%252e%252e/%252e%252e/{marker}"),
        format!("{prefix}/{base}/%252e%252e%252f%252e%252e%252f{marker}"),
        format!("{prefix}/..%5c..%5c{marker}"),
        format!("{prefix}/{base}/a\\..\\..\\{marker}"),
        format!("{prefix}//tmp/{marker}"),
        format!("{prefix}/%2ftmp%2f{marker}"),
        format!("{prefix}/{base}//{marker}"),
        format!("{prefix}/{base}/./{marker}"),
        format!("{prefix}/{base}/{marker}%00.txt"),
    ];
    for target in &targets {
        for method in ["PUT", "GET", "DELETE"] {
            let (status, body) = raw(&s, method, target, b"pwned").await;
            assert!((400..500).contains(&status), "{method} {target}: {status} {body}");
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(
                json["error_code"] == "INVALID_PARAMETER_VALUE" || (status == 404 && json["error_code"] == "ENDPOINT_NOT_FOUND"),
                "{method} {target}: {status} {body}"
            );
        }
    }
    // Listing outside the root.
    for path in ["..", "../..", "/", "/etc", "0/../..", "%2e%2e", "..%2f..", "a\\..\\..", &format!("{base}/../../..")] {
        let r = s.send(s.client.get(s.url(prefix)).query(&[("path", path)])).await;
        r.err(400, "INVALID_PARAMETER_VALUE");
    }
    let (status, body) = raw(&s, "GET", &format!("{prefix}?path=../../"), b"").await;
    assert_eq!(status, 400, "{body}");

    // Nothing was written or removed anywhere: the temp dir is as before, nothing named like the
    // marker exists in it, above it or at the filesystem root, and the good file is intact.
    assert_eq!(files_below(&s.dir), before);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside");
    for dir in [s.dir.clone(), s.dir.parent().unwrap().to_path_buf(), std::path::PathBuf::from("/"), std::path::PathBuf::from("/tmp")] {
        assert!(!dir.join(&marker).exists(), "{} escaped", dir.join(&marker).display());
    }
    assert!(files_below(&s.dir).iter().all(|f| !f.contains("escaped")));
    let got = s.client.get(s.url(&format!("{prefix}/{base}/keep.txt"))).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "keep");
}

/// NUL characters and other text a database may refuse (Postgres `text` cannot hold NUL): either
/// stored exactly or refused with a 4xx, never a 5xx that the client would retry for minutes.
async fn nul_and_odd_text_never_cause_server_errors(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let odd = ["nul\u{0}inside", "\u{0}", "emoji 🎉 and \u{202e}rtl", "lone \\ud800 escape", "tab\tnewline\n"];
    for (i, v) in odd.iter().enumerate() {
        let bodies = [
            ("experiments/create", json!({"name": format!("exp {v}")})),
            ("experiments/create", json!({"name": format!("exp-tag-{i}"), "tags": [{"key": "t", "value": v}]})),
            ("runs/create", json!({"experiment_id": "0", "run_name": v})),
            ("runs/create", json!({"experiment_id": "0", "user_id": v})),
            ("runs/log-parameter", json!({"run_id": run, "key": format!("p{i}"), "value": v})),
            ("runs/set-tag", json!({"run_id": run, "key": format!("t{i}"), "value": v})),
            ("runs/log-batch", json!({"run_id": run, "params": [{"key": format!("b{i}"), "value": v}]})),
            ("runs/update", json!({"run_id": run, "run_name": format!("n{i}{v}")})),
            ("experiments/set-experiment-tag", json!({"experiment_id": "0", "key": format!("e{i}"), "value": v})),
            ("runs/search", json!({"experiment_ids": ["0"], "filter": format!("params.p{i} = '{v}'")})),
            ("runs/search", json!({"experiment_ids": ["0"], "filter": format!("attributes.run_name LIKE '%{v}%'")})),
            ("experiments/search", json!({"filter": format!("name = '{v}'")})),
            ("logged-models", json!({"experiment_id": "0", "name": v})),
            ("logged-models/search", json!({"experiment_ids": ["0"], "filter": format!("name = '{v}'")})),
            ("runs/log-inputs", json!({"run_id": run, "datasets": [{"dataset": {"name": v, "digest": format!("d{i}"), "source_type": "code", "source": v}}]})),
        ];
        for (path, body) in bodies {
            let r = s.post(path, body.clone()).await;
            assert!(r.status.is_success() || r.status.is_client_error(), "{path} {body}: {} {}", r.status, r.text);
            if r.status.is_client_error() {
                assert_eq!(r.json["error_code"], "INVALID_PARAMETER_VALUE", "{path} {body}: {}", r.text);
            }
        }
        s.get("experiments/get-by-name", &[("experiment_name", v)]).await;
        s.get("runs/get", &[("run_id", v)]).await;
        s.get("metrics/get-history", &[("run_id", &run), ("metric_key", v)]).await;
    }
    // Whatever was accepted reads back exactly.
    let got = s.get_run(&run).await;
    for (k, v) in common::kv(&got["data"]["params"]) {
        let i: usize = k[1..].parse().unwrap();
        assert_eq!(v, odd[i], "param {k}");
    }
    // The server still works.
    s.post("runs/log-parameter", json!({"run_id": run, "key": "after", "value": "ok"})).await.ok();
}

/// A file where a folder is expected and the other way round: client errors, never a 5xx, and
/// the existing file survives.
async fn artifact_file_and_folder_clashes(b: Backend) {
    let s = server(b).await;
    let run = s.create_run("0").await;
    let base = format!("0/{run}/artifacts");
    let art = |p: &str| s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{base}/{p}"));
    assert_eq!(s.put_artifact(&format!("{base}/f.txt"), "file").await.status.as_u16(), 200);
    assert_eq!(s.put_artifact(&format!("{base}/d/inner.txt"), "inner").await.status.as_u16(), 200);
    // A file below a file.
    let r = s.send(s.client.put(art("f.txt/below.txt")).body("x")).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text);
    // A file where a folder is.
    let r = s.send(s.client.put(art("d")).body("x")).await;
    assert!(r.status.is_client_error() || r.status.is_success(), "{} {}", r.status, r.text);
    // Downloading a folder, or something below a file.
    let r = s.send(s.client.get(art("d"))).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text);
    let r = s.send(s.client.get(art("f.txt/below.txt"))).await;
    r.err(404, "RESOURCE_DOES_NOT_EXIST");
    // Listing below a file is empty.
    let listed = s.send(s.client.get(s.url("/api/2.0/mlflow-artifacts/artifacts")).query(&[("path", format!("{base}/f.txt/x"))])).await.ok();
    assert_eq!(listed, json!({}));
    // An empty file is a file.
    assert_eq!(s.put_artifact(&format!("{base}/empty.txt"), "").await.status.as_u16(), 200);
    let got = s.client.get(art("empty.txt")).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.text().await.unwrap(), "");
    let listed = s.send(s.client.get(s.url("/api/2.0/mlflow-artifacts/artifacts")).query(&[("path", base.clone())])).await.ok();
    assert!(listed["files"].as_array().unwrap().contains(&json!({"path": "empty.txt", "is_dir": false, "file_size": 0})), "{listed}");
    // The original files are intact.
    assert_eq!(s.client.get(art("f.txt")).send().await.unwrap().text().await.unwrap(), "file");
    assert_eq!(s.client.get(art("d/inner.txt")).send().await.unwrap().text().await.unwrap(), "inner");
}
