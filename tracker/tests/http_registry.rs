//! The model registry over HTTP: every endpoint, on SQLite and (with `TEST_POSTGRES_URL`) on
//! Postgres, with the bodies and error codes the mlflow client expects.

mod common;

use common::{Backend, TestServer};
use serde_json::{json, Value};

async fn delete(s: &TestServer, path: &str, body: Value) -> common::Reply {
    s.send(s.client.delete(s.url(&format!("/api/2.0/mlflow/{path}"))).json(&body)).await
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_owned()).collect()
}

fn versions(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| format!("{}/{}", m["name"].as_str().unwrap(), m["version"].as_str().unwrap())).collect()
}

async fn registered_models_and_versions(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("reg").await;
    let run = s.create_run(&exp).await;

    // Create, duplicate, get.
    let created = s
        .post("registered-models/create", json!({"name": "ko-lora", "description": "d", "tags": [{"key": "team", "value": "nlp"}]}))
        .await
        .ok();
    assert_eq!(created["registered_model"]["name"], "ko-lora");
    assert_eq!(created["registered_model"]["tags"], json!([{"key": "team", "value": "nlp"}]));
    s.post("registered-models/create", json!({"name": "ko-lora"})).await.err(400, "RESOURCE_ALREADY_EXISTS");
    s.post("registered-models/create", json!({})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.get("registered-models/get", &[("name", "nope")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");

    // Versions: READY at once, numbered from 1, run_id kept.
    let source = format!("runs:/{run}/model");
    let v1 = s.post("model-versions/create", json!({"name": "ko-lora", "source": source, "run_id": run})).await.ok();
    assert_eq!(v1["model_version"]["version"], "1");
    assert_eq!(v1["model_version"]["status"], "READY");
    assert_eq!(v1["model_version"]["current_stage"], "None");
    assert_eq!(v1["model_version"]["run_id"], run.as_str());
    let v2 = s
        .post("model-versions/create", json!({"name": "ko-lora", "source": source, "run_id": run, "tags": [{"key": "k", "value": "v"}], "description": "second"}))
        .await
        .ok();
    assert_eq!(v2["model_version"]["version"], "2");
    assert_eq!(v2["model_version"]["tags"], json!([{"key": "k", "value": "v"}]));
    s.post("model-versions/create", json!({"name": "missing", "source": source, "run_id": run})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    // Sources must belong to the version's run or logged model, and never be local paths.
    s.post("model-versions/create", json!({"name": "ko-lora", "source": source})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("model-versions/create", json!({"name": "ko-lora", "source": "/etc/passwd"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("model-versions/create", json!({"name": "ko-lora", "source": "mlflow-artifacts:/0/r/artifacts/../../../x"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("model-versions/create", json!({"name": "ko-lora"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.get("model-versions/get", &[("name", "ko-lora"), ("version", "9")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.get("model-versions/get", &[("name", "ko-lora"), ("version", "x")]).await.err(400, "INVALID_PARAMETER_VALUE");

    // Download URI of a runs:/ source: the run's artifact folder.
    let uri = s.get("model-versions/get-download-uri", &[("name", "ko-lora"), ("version", "1")]).await.ok();
    assert_eq!(uri["artifact_uri"], format!("mlflow-artifacts:/{exp}/{run}/artifacts/model"));

    // Aliases: set, move, read back, hydrated on versions and models, reserved names refused.
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "champion", "version": "1"})).await.ok();
    let by_alias = s.get("registered-models/alias", &[("name", "ko-lora"), ("alias", "champion")]).await.ok();
    assert_eq!(by_alias["model_version"]["version"], "1");
    assert_eq!(by_alias["model_version"]["aliases"], json!(["champion"]));
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "champion", "version": "2"})).await.ok();
    let moved = s.get("registered-models/alias", &[("name", "ko-lora"), ("alias", "champion")]).await.ok();
    assert_eq!(moved["model_version"]["version"], "2");
    let v1_now = s.get("model-versions/get", &[("name", "ko-lora"), ("version", "1")]).await.ok();
    assert!(v1_now["model_version"].get("aliases").is_none(), "alias moved away from v1: {v1_now}");
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "latest", "version": "1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "v3", "version": "1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "a b", "version": "1"})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post("registered-models/alias", json!({"name": "ko-lora", "alias": "x", "version": "7"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let model = s.get("registered-models/get", &[("name", "ko-lora")]).await.ok();
    assert_eq!(model["registered_model"]["aliases"], json!([{"alias": "champion", "version": "2"}]));
    let latest = s.get("registered-models/alias", &[("name", "ko-lora"), ("alias", "latest")]).await.ok();
    assert_eq!(latest["model_version"]["version"], "2", "the reserved alias `latest` reads the newest version");

    // Stages: archive_existing_versions moves the other Production version to Archived.
    let t = s
        .post("model-versions/transition-stage", json!({"name": "ko-lora", "version": "1", "stage": "production", "archive_existing_versions": false}))
        .await
        .ok();
    assert_eq!(t["model_version"]["current_stage"], "Production");
    s.post("model-versions/transition-stage", json!({"name": "ko-lora", "version": "2", "stage": "Production", "archive_existing_versions": true}))
        .await
        .ok();
    let v1_now = s.get("model-versions/get", &[("name", "ko-lora"), ("version", "1")]).await.ok();
    assert_eq!(v1_now["model_version"]["current_stage"], "Archived");
    s.post("model-versions/transition-stage", json!({"name": "ko-lora", "version": "2", "stage": "Deployed", "archive_existing_versions": false}))
        .await
        .err(400, "INVALID_PARAMETER_VALUE");

    // Latest versions: one per stage, filtered by the stages asked for.
    let latest = s.post("registered-models/get-latest-versions", json!({"name": "ko-lora"})).await.ok();
    assert_eq!(versions(&latest["model_versions"]), ["ko-lora/2", "ko-lora/1"]);
    let latest = s.post("registered-models/get-latest-versions", json!({"name": "ko-lora", "stages": ["Archived"]})).await.ok();
    assert_eq!(versions(&latest["model_versions"]), ["ko-lora/1"]);
    let latest = s.get("registered-models/get-latest-versions", &[("name", "ko-lora"), ("stages", "Production")]).await.ok();
    assert_eq!(versions(&latest["model_versions"]), ["ko-lora/2"]);

    // Descriptions and tags.
    let upd = s.patch("registered-models/update", json!({"name": "ko-lora", "description": "new"})).await.ok();
    assert_eq!(upd["registered_model"]["description"], "new");
    let upd = s.patch("model-versions/update", json!({"name": "ko-lora", "version": "1", "description": "first"})).await.ok();
    assert_eq!(upd["model_version"]["description"], "first");
    s.post("registered-models/set-tag", json!({"name": "ko-lora", "key": "owner", "value": "kim"})).await.ok();
    s.post("model-versions/set-tag", json!({"name": "ko-lora", "version": "1", "key": "eval", "value": "0.93"})).await.ok();
    delete(&s, "registered-models/delete-tag", json!({"name": "ko-lora", "key": "team"})).await.ok();
    delete(&s, "registered-models/delete-tag", json!({"name": "ko-lora", "key": "team"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    delete(&s, "model-versions/delete-tag", json!({"name": "ko-lora", "version": "2", "key": "k"})).await.ok();
    let model = s.get("registered-models/get", &[("name", "ko-lora")]).await.ok();
    assert_eq!(model["registered_model"]["tags"], json!([{"key": "owner", "value": "kim"}]));
    let v1_now = s.get("model-versions/get", &[("name", "ko-lora"), ("version", "1")]).await.ok();
    assert_eq!(v1_now["model_version"]["tags"], json!([{"key": "eval", "value": "0.93"}]));

    // Search: filters, the client's prompt clause, order, paging.
    for name in ["other-a", "other-b", "other-c"] {
        s.post("registered-models/create", json!({"name": name})).await.ok();
    }
    let prompt_clause = " AND tag.`mlflow.prompt.is_prompt` != 'true'";
    let found = s.get("registered-models/search", &[("filter", &format!("name LIKE 'other-%'{prompt_clause}"))]).await.ok();
    assert_eq!(names(&found["registered_models"]), ["other-a", "other-b", "other-c"]);
    let found = s.get("registered-models/search", &[("filter", "tags.owner = 'kim'")]).await.ok();
    assert_eq!(names(&found["registered_models"]), ["ko-lora"]);
    assert_eq!(found["registered_models"][0]["aliases"], json!([{"alias": "champion", "version": "2"}]), "aliases hydrated in search");
    let page1 = s.get("registered-models/search", &[("max_results", "2"), ("order_by", "name DESC")]).await.ok();
    assert_eq!(names(&page1["registered_models"]), ["other-c", "other-b"]);
    let token = page1["next_page_token"].as_str().expect("a next page");
    let page2 = s.get("registered-models/search", &[("max_results", "2"), ("order_by", "name DESC"), ("page_token", token)]).await.ok();
    assert_eq!(names(&page2["registered_models"]), ["other-a", "ko-lora"]);
    assert!(page2.get("next_page_token").is_none());
    s.get("registered-models/search", &[("filter", "version_number = 1")]).await.err(400, "INVALID_PARAMETER_VALUE");
    s.get("registered-models/search", &[("max_results", "0")]).await.err(400, "INVALID_PARAMETER_VALUE");

    let found = s.get("model-versions/search", &[("filter", "name = 'ko-lora'")]).await.ok();
    assert_eq!(versions(&found["model_versions"]), ["ko-lora/2", "ko-lora/1"]);
    assert_eq!(found["model_versions"][0]["aliases"], json!(["champion"]), "aliases hydrated in version search");
    let found = s.get("model-versions/search", &[("filter", &format!("run_id = '{run}'"))]).await.ok();
    assert_eq!(versions(&found["model_versions"]), ["ko-lora/2", "ko-lora/1"]);
    let found = s.get("model-versions/search", &[("filter", "run_id IN ('another-run')")]).await.ok();
    assert_eq!(found["model_versions"], json!([]), "{found}");
    let found = s.get("model-versions/search", &[("filter", "version_number > 1 AND tags.k IS NULL")]).await.ok();
    assert_eq!(versions(&found["model_versions"]), ["ko-lora/2"]);
    let found = s.get("model-versions/search", &[("filter", "source_path LIKE 'runs:/%'"), ("order_by", "version_number ASC"), ("max_results", "1")]).await.ok();
    assert_eq!(versions(&found["model_versions"]), ["ko-lora/1"]);
    assert!(found["next_page_token"].is_string());
    s.get("model-versions/search", &[("filter", "name = ")]).await.err(400, "INVALID_PARAMETER_VALUE");

    // Rename carries versions, tags and aliases along.
    let renamed = s.post("registered-models/rename", json!({"name": "ko-lora", "new_name": "ko-lora-v2"})).await.ok();
    assert_eq!(renamed["registered_model"]["name"], "ko-lora-v2");
    assert_eq!(renamed["registered_model"]["aliases"], json!([{"alias": "champion", "version": "2"}]));
    s.post("registered-models/rename", json!({"name": "ko-lora-v2", "new_name": "other-a"})).await.err(400, "RESOURCE_ALREADY_EXISTS");
    s.get("registered-models/get", &[("name", "ko-lora")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let v1_now = s.get("model-versions/get", &[("name", "ko-lora-v2"), ("version", "1")]).await.ok();
    assert_eq!(v1_now["model_version"]["tags"], json!([{"key": "eval", "value": "0.93"}]));

    // Deleting a version drops its aliases; numbers are not reused.
    delete(&s, "model-versions/delete", json!({"name": "ko-lora-v2", "version": "2"})).await.ok();
    s.get("registered-models/alias", &[("name", "ko-lora-v2"), ("alias", "champion")]).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let v3 = s.post("model-versions/create", json!({"name": "ko-lora-v2", "source": "s3://bucket/adapter"})).await.ok();
    assert_eq!(v3["model_version"]["version"], "3");
    let uri = s.get("model-versions/get-download-uri", &[("name", "ko-lora-v2"), ("version", "3")]).await.ok();
    assert_eq!(uri["artifact_uri"], "s3://bucket/adapter");
    // A copy (`models:/NAME/VERSION`) downloads from where the original's files are.
    s.post("registered-models/create", json!({"name": "copy"})).await.ok();
    s.post("model-versions/create", json!({"name": "copy", "source": "models:/ko-lora-v2/3"})).await.ok();
    let uri = s.get("model-versions/get-download-uri", &[("name", "copy"), ("version", "1")]).await.ok();
    assert_eq!(uri["artifact_uri"], "s3://bucket/adapter");
    delete(&s, "registered-models/alias", json!({"name": "ko-lora-v2", "alias": "gone"})).await.ok();

    // Deleting the model removes everything under it.
    delete(&s, "registered-models/delete", json!({"name": "ko-lora-v2"})).await.ok();
    delete(&s, "registered-models/delete", json!({"name": "ko-lora-v2"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let found = s.get("model-versions/search", &[("filter", "name = 'ko-lora-v2'")]).await.ok();
    assert!(found.get("model_versions").is_none_or(|v| v.as_array().unwrap().is_empty()));
}

async fn versions_from_logged_models(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let exp = s.create_experiment("lm").await;
    let run = s.create_run(&exp).await;
    let model = s.post("logged-models", json!({"experiment_id": exp, "name": "adapter", "source_run_id": run})).await.ok();
    let model_id = model["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    let artifact_uri = model["model"]["info"]["artifact_uri"].as_str().unwrap().to_owned();
    s.post("registered-models/create", json!({"name": "m"})).await.ok();

    // `mlflow.register_model("models:/m-...")`: the run comes from the logged model.
    let v = s.post("model-versions/create", json!({"name": "m", "source": format!("models:/{model_id}"), "model_id": model_id})).await.ok();
    assert_eq!(v["model_version"]["model_id"], model_id.as_str());
    assert_eq!(v["model_version"]["run_id"], run.as_str());
    let uri = s.get("model-versions/get-download-uri", &[("name", "m"), ("version", "1")]).await.ok();
    assert_eq!(uri["artifact_uri"], artifact_uri.as_str());

    // `runs:/<run>/adapter` names the logged model "adapter" of that run (MLflow 3 layout).
    let v = s.post("model-versions/create", json!({"name": "m", "source": format!("runs:/{run}/adapter"), "run_id": run})).await.ok();
    assert_eq!(v["model_version"]["model_id"], model_id.as_str());
    let uri = s.get("model-versions/get-download-uri", &[("name", "m"), ("version", "2")]).await.ok();
    assert_eq!(uri["artifact_uri"], artifact_uri.as_str());
}

#[tokio::test]
async fn registry_on_sqlite() {
    registered_models_and_versions(Backend::Sqlite).await;
}

#[tokio::test]
async fn registry_on_postgres() {
    registered_models_and_versions(Backend::Postgres).await;
}

#[tokio::test]
async fn versions_from_logged_models_on_sqlite() {
    versions_from_logged_models(Backend::Sqlite).await;
}

#[tokio::test]
async fn versions_from_logged_models_on_postgres() {
    versions_from_logged_models(Backend::Postgres).await;
}
