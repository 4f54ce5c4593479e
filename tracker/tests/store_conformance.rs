//! One store conformance suite, run on SQLite always and on Postgres when `TEST_POSTGRES_URL` is
//! set (see `common`). Each case is an async fn over a fresh [`Store`]; `both_backends!` turns it
//! into `sqlite::<case>` and `postgres::<case>` tests, so the two dialects must agree on every
//! behaviour the mlflow client relies on.

mod common;

use std::collections::BTreeMap;

use api::mlflow::{Dataset, DatasetInput, Run, Tag};
use common::{open_db, Backend};
use tracker::search::{parse_experiment_filter, parse_experiment_order_by, parse_run_filter, parse_run_order_by};
use tracker::store::experiments::ViewType;
use tracker::store::runs::NewRun;
use tracker::store::{Error, Store};

both_backends!(
    default_experiment_exists,
    experiment_ids_and_name_uniqueness,
    experiment_tags_and_search,
    experiment_delete_restore_cascades_to_runs,
    run_create_get_update,
    params_are_immutable_and_batches_atomic,
    tags_upsert_and_delete,
    nan_and_infinities_round_trip,
    latest_metric_is_max_step_then_timestamp_then_value,
    run_search_filter_grammar,
    like_is_case_sensitive_and_ilike_is_not,
    run_search_order_by,
    run_search_paging_is_stable,
    run_lifecycle_and_view_types,
    metric_history_keyset_paging_100k,
    inputs_outputs_and_dataset_filters,
    logged_models_lifecycle,
    concurrent_writes_never_fail_with_db_errors,
    long_incompressible_values_round_trip,
);

async fn store(backend: Backend) -> (Store, common::TestDb) {
    let db = open_db(backend).await.expect("backend configured");
    (db.store.clone(), db)
}

fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> tracker::store::runs::NewMetric {
    tracker::store::runs::NewMetric { key: key.into(), value, timestamp, step, dataset_name: None, dataset_digest: None, model_id: None }
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

async fn new_run(s: &Store, exp: &str, name: &str, start_time: i64) -> String {
    let run = s
        .create_run(NewRun { experiment_id: exp.into(), user_id: "u".into(), run_name: Some(name.into()), start_time: Some(start_time), tags: vec![] })
        .await
        .unwrap();
    run.info.run_id
}

async fn search(s: &Store, exps: &[&str], filter: &str, order: &[&str]) -> Vec<String> {
    search_view(s, exps, filter, order, ViewType::ActiveOnly).await
}

async fn search_view(s: &Store, exps: &[&str], filter: &str, order: &[&str], view: ViewType) -> Vec<String> {
    let f = parse_run_filter(filter).unwrap_or_else(|e| panic!("filter {filter:?}: {e}"));
    let o = parse_run_order_by(&order.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let exps: Vec<String> = exps.iter().map(|s| s.to_string()).collect();
    let page = s.search_runs(&exps, &f, &o, view, 1000, None).await.unwrap_or_else(|e| panic!("search {filter:?} {order:?}: {e}"));
    assert!(page.next_page_token.is_none());
    page.runs.into_iter().map(|r| r.info.run_name).collect()
}

fn latest(run: &Run) -> BTreeMap<String, (f64, i64, i64)> {
    run.data.metrics.iter().map(|m| (m.key.clone(), (m.value, m.timestamp, m.step))).collect()
}

fn tags(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter().map(|t| (t.key.clone(), t.value.clone())).collect()
}

// ---- experiments -----------------------------------------------------------------------------

async fn default_experiment_exists(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.get_experiment("0").await.unwrap();
    assert_eq!((e.name.as_str(), e.artifact_location.as_str(), e.lifecycle_stage.as_str()), ("Default", "mlflow-artifacts:/0", "active"));
    assert_eq!(s.get_experiment_by_name("Default").await.unwrap().experiment_id, "0");
    // A run with no experiment goes to "0".
    let run = new_run(&s, "0", "r", 1).await;
    assert_eq!(s.get_run(&run).await.unwrap().info.artifact_uri, format!("mlflow-artifacts:/0/{run}/artifacts"));
}

async fn experiment_ids_and_name_uniqueness(b: Backend) {
    let (s, _db) = store(b).await;
    // The first experiment after Default is "1", as with MLflow's own SQL store.
    let a = s.create_experiment("a", None, &[]).await.unwrap();
    let b2 = s.create_experiment("b", Some("s3://bucket/x"), &[]).await.unwrap();
    assert_eq!(a, "1");
    assert_eq!(b2, "2");
    assert_eq!(s.get_experiment(&a).await.unwrap().artifact_location, "mlflow-artifacts:/1");
    assert_eq!(s.get_experiment(&b2).await.unwrap().artifact_location, "s3://bucket/x");
    assert!(matches!(s.create_experiment("a", None, &[]).await, Err(Error::AlreadyExists(_))));
    assert!(matches!(s.create_experiment("Default", None, &[]).await, Err(Error::AlreadyExists(_))));
    // A failed create leaves nothing behind and does not break the next one.
    let c = s.create_experiment("c", None, &[]).await.unwrap();
    assert_ne!(c, a);
    assert!(matches!(s.rename_experiment(&c, "a").await, Err(Error::AlreadyExists(_))));
    assert_eq!(s.get_experiment(&c).await.unwrap().name, "c");
    s.rename_experiment(&c, "c2").await.unwrap();
    assert_eq!(s.get_experiment_by_name("c2").await.unwrap().experiment_id, c);
    assert!(matches!(s.get_experiment_by_name("c").await, Err(Error::NotFound(_))));
    assert!(matches!(s.get_experiment("424242").await, Err(Error::NotFound(_))));
    // Names are case-sensitive.
    s.create_experiment("A", None, &[]).await.unwrap();
}

async fn experiment_tags_and_search(b: Backend) {
    let (s, _db) = store(b).await;
    let x = s.create_experiment("exp-x", None, &[kv("team", "vision"), kv("k", "1")]).await.unwrap();
    let y = s.create_experiment("exp-y", None, &[kv("team", "NLP")]).await.unwrap();
    let z = s.create_experiment("other", None, &[]).await.unwrap();
    assert_eq!(tags(&s.get_experiment(&x).await.unwrap().tags), BTreeMap::from([kv("k", "1"), kv("team", "vision")]));
    s.set_experiment_tag(&x, "k", "2").await.unwrap();
    s.delete_experiment_tag(&x, "team").await.unwrap();
    assert_eq!(tags(&s.get_experiment(&x).await.unwrap().tags), BTreeMap::from([kv("k", "2")]));
    assert!(matches!(s.delete_experiment_tag(&x, "team").await, Err(Error::NotFound(_))));

    let names = |filter: &'static str, order: &'static [&'static str]| {
        let s = s.clone();
        async move {
            let f = parse_experiment_filter(filter).unwrap();
            let o = parse_experiment_order_by(&order.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            let page = s.search_experiments(&f, &o, ViewType::ActiveOnly, 100, None).await.unwrap();
            page.experiments.into_iter().map(|e| e.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(names("name LIKE 'exp-%'", &["name"]).await, ["exp-x", "exp-y"]);
    assert_eq!(names("name LIKE 'EXP-%'", &["name"]).await, Vec::<String>::new());
    assert_eq!(names("name ILIKE 'EXP-%'", &["name DESC"]).await, ["exp-y", "exp-x"]);
    assert_eq!(names("tags.team = 'NLP'", &[]).await, ["exp-y"]);
    assert_eq!(names("tags.team ILIKE 'nlp'", &[]).await, ["exp-y"]);
    assert_eq!(names("tags.k = '2'", &[]).await, ["exp-x"]);
    assert_eq!(names("name != 'Default'", &["experiment_id DESC"]).await, ["other", "exp-y", "exp-x"]);
    assert_eq!(names("attributes.name = 'other'", &[]).await, ["other"]);
    let _ = (y, z);
    assert_eq!(names("", &["name"]).await, ["Default", "exp-x", "exp-y", "other"]);

    // Paging: pages of 1 cover everything once, in the same order as one big page.
    let all = names("", &["name"]).await;
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    let o = parse_experiment_order_by(&["name".to_string()]).unwrap();
    loop {
        let page = s.search_experiments(&[], &o, ViewType::ActiveOnly, 1, token.as_deref()).await.unwrap();
        assert!(page.experiments.len() <= 1);
        paged.extend(page.experiments.into_iter().map(|e| e.name));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(paged.len() <= all.len(), "paging does not end");
    }
    assert_eq!(paged, all);
}

async fn experiment_delete_restore_cascades_to_runs(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.create_experiment("e", None, &[]).await.unwrap();
    let r = new_run(&s, &e, "r", 1).await;
    assert!(matches!(s.set_experiment_lifecycle("0", "deleted").await, Err(Error::Invalid(_))));
    s.set_experiment_lifecycle(&e, "deleted").await.unwrap();
    assert_eq!(s.get_experiment(&e).await.unwrap().lifecycle_stage, "deleted");
    assert_eq!(s.get_run(&r).await.unwrap().info.lifecycle_stage, "deleted");
    // Deleting twice, or creating runs in a deleted experiment, is refused.
    assert!(matches!(s.set_experiment_lifecycle(&e, "deleted").await, Err(Error::Invalid(_))));
    let err = s.create_run(NewRun { experiment_id: e.clone(), ..Default::default() }).await;
    assert!(matches!(err, Err(Error::Invalid(_))), "{err:?}");
    let f = parse_experiment_filter("").unwrap();
    let deleted = s.search_experiments(&f, &[], ViewType::DeletedOnly, 10, None).await.unwrap();
    assert_eq!(deleted.experiments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["e"]);
    let all = s.search_experiments(&f, &[], ViewType::All, 10, None).await.unwrap();
    assert_eq!(all.experiments.len(), 2);
    s.set_experiment_lifecycle(&e, "active").await.unwrap();
    assert_eq!(s.get_run(&r).await.unwrap().info.lifecycle_stage, "active");
    assert!(matches!(s.set_experiment_lifecycle(&e, "active").await, Err(Error::Invalid(_))));
}

// ---- runs ------------------------------------------------------------------------------------

async fn run_create_get_update(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.create_experiment("e", None, &[]).await.unwrap();
    let run = s
        .create_run(NewRun {
            experiment_id: e.clone(),
            user_id: "alice".into(),
            run_name: None,
            start_time: Some(1_700_000_000_123),
            tags: vec![kv("mlflow.user", "alice"), kv("mlflow.source.type", "LOCAL")],
        })
        .await
        .unwrap();
    let id = run.info.run_id.clone();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(run.info.run_uuid, id);
    assert_eq!(run.info.experiment_id, e);
    assert_eq!(run.info.status, "RUNNING");
    assert_eq!(run.info.start_time, 1_700_000_000_123);
    assert_eq!(run.info.end_time, None);
    assert!(!run.info.run_name.is_empty(), "a name is generated");
    let t = tags(&run.data.tags);
    assert_eq!(t.get("mlflow.runName"), Some(&run.info.run_name));
    assert_eq!(t.get("mlflow.user").map(String::as_str), Some("alice"));

    let info = s.update_run(&id, Some("FINISHED"), Some(1_700_000_001_000), Some("renamed")).await.unwrap();
    assert_eq!((info.status.as_str(), info.end_time, info.run_name.as_str()), ("FINISHED", Some(1_700_000_001_000), "renamed"));
    let got = s.get_run(&id).await.unwrap();
    assert_eq!(got.info, info);
    assert_eq!(tags(&got.data.tags).get("mlflow.runName").map(String::as_str), Some("renamed"));
    // Updating only the status keeps the rest.
    let info = s.update_run(&id, Some("FAILED"), None, None).await.unwrap();
    assert_eq!((info.status.as_str(), info.end_time, info.run_name.as_str()), ("FAILED", Some(1_700_000_001_000), "renamed"));
    // The name tag set through log_batch renames the run.
    s.log_batch(&id, &[], &[], &[kv("mlflow.runName", "by-tag")]).await.unwrap();
    assert_eq!(s.get_run(&id).await.unwrap().info.run_name, "by-tag");
    assert!(matches!(s.get_run("0123456789abcdef0123456789abcdef").await, Err(Error::NotFound(_))));
    assert!(matches!(s.update_run("nope", Some("FINISHED"), None, None).await, Err(Error::NotFound(_))));
}

async fn params_are_immutable_and_batches_atomic(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    s.log_batch(&r, &[], &[kv("lr", "0.01"), kv("layers", "3")], &[]).await.unwrap();
    // The same value again is a no-op.
    s.log_batch(&r, &[], &[kv("lr", "0.01")], &[]).await.unwrap();
    // Another value is refused, and nothing of that batch is written.
    let err = s.log_batch(&r, &[metric("m", 1.0, 10, 0)], &[kv("new", "x"), kv("lr", "0.02")], &[kv("t", "v")]).await;
    assert!(matches!(err, Err(Error::Invalid(ref m)) if m.contains("lr")), "{err:?}");
    let run = s.get_run(&r).await.unwrap();
    assert_eq!(tags(&run.data.params), BTreeMap::from([kv("layers", "3"), kv("lr", "0.01")]));
    assert!(run.data.metrics.is_empty());
    assert!(!tags(&run.data.tags).contains_key("t"));
    assert!(s.metric_history(&r, "m", None, None).await.unwrap().metrics.is_empty());
    // The same key twice in one batch with different values is refused too.
    let err = s.log_batch(&r, &[], &[kv("d", "1"), kv("d", "2")], &[]).await;
    assert!(matches!(err, Err(Error::Invalid(_))), "{err:?}");
    s.log_batch(&r, &[], &[kv("e", "1"), kv("e", "1")], &[]).await.unwrap();
    // Long values survive intact.
    let long = "v".repeat(6000);
    s.log_batch(&r, &[], &[kv("long", &long)], &[]).await.unwrap();
    assert_eq!(tags(&s.get_run(&r).await.unwrap().data.params)["long"], long);
    assert!(matches!(s.log_batch("0123456789abcdef0123456789abcdef", &[], &[kv("a", "b")], &[]).await, Err(Error::NotFound(_))));
}

async fn tags_upsert_and_delete(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    s.log_batch(&r, &[], &[], &[kv("k", "1"), kv("x", "y")]).await.unwrap();
    s.log_batch(&r, &[], &[], &[kv("k", "2")]).await.unwrap();
    let t = tags(&s.get_run(&r).await.unwrap().data.tags);
    assert_eq!((t["k"].as_str(), t["x"].as_str()), ("2", "y"));
    s.delete_tag(&r, "x").await.unwrap();
    assert!(!tags(&s.get_run(&r).await.unwrap().data.tags).contains_key("x"));
    assert!(matches!(s.delete_tag(&r, "x").await, Err(Error::NotFound(_))));
}

async fn nan_and_infinities_round_trip(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    s.log_batch(
        &r,
        &[
            metric("nan", f64::NAN, 1, 0),
            metric("pinf", f64::INFINITY, 1, 0),
            metric("ninf", f64::NEG_INFINITY, 1, 0),
            metric("tiny", 5e-324, 1, 0),
            metric("neg0", -0.0, 1, 0),
            metric("big", 1.2345678901234567e300, 1, 0),
        ],
        &[],
        &[],
    )
    .await
    .unwrap();
    let l = latest(&s.get_run(&r).await.unwrap());
    assert!(l["nan"].0.is_nan());
    // MLflow stores +-inf as the largest finite doubles.
    assert_eq!(l["pinf"].0, f64::MAX);
    assert_eq!(l["ninf"].0, -f64::MAX);
    assert_eq!(l["tiny"].0, 5e-324);
    assert_eq!(l["big"].0, 1.2345678901234567e300);
    assert_eq!(l["neg0"].0, 0.0);
    let h = s.metric_history(&r, "nan", None, None).await.unwrap();
    assert_eq!(h.metrics.len(), 1);
    assert!(h.metrics[0].value.is_nan());
    assert_eq!(s.metric_history(&r, "pinf", None, None).await.unwrap().metrics[0].value, f64::MAX);
    // NaN counts as "!=" any number in filters; ±inf compare as the clamped values.
    s.log_batch(&new_run(&s, "0", "r2", 2).await, &[metric("nan", 1.0, 1, 0), metric("pinf", 1.0, 1, 0)], &[], &[]).await.unwrap();
    assert_eq!(search(&s, &["0"], "metrics.nan != 1", &[]).await, ["r"]);
    assert_eq!(search(&s, &["0"], "metrics.nan = 1", &[]).await, ["r2"]);
    assert_eq!(search(&s, &["0"], "metrics.pinf > 1e308", &[]).await, ["r"]);
    // Order: numbers, then NaN, then missing, in both directions.
    let r3 = new_run(&s, "0", "r3", 3).await;
    s.log_batch(&r3, &[metric("nan", 2.0, 1, 0)], &[], &[]).await.unwrap();
    new_run(&s, "0", "r4", 4).await;
    assert_eq!(search(&s, &["0"], "", &["metrics.nan ASC"]).await, ["r2", "r3", "r", "r4"]);
    assert_eq!(search(&s, &["0"], "", &["metrics.nan DESC"]).await, ["r3", "r2", "r", "r4"]);
}

async fn latest_metric_is_max_step_then_timestamp_then_value(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    let get = |key: &'static str| {
        let s = s.clone();
        let r = r.clone();
        async move { latest(&s.get_run(&r).await.unwrap())[key] }
    };
    // Across calls.
    s.log_batch(&r, &[metric("m", 1.0, 100, 5)], &[], &[]).await.unwrap();
    s.log_batch(&r, &[metric("m", 2.0, 999, 3)], &[], &[]).await.unwrap(); // lower step: ignored
    assert_eq!(get("m").await, (1.0, 100, 5));
    s.log_batch(&r, &[metric("m", 0.5, 100, 5)], &[], &[]).await.unwrap(); // same step+ts, lower value
    assert_eq!(get("m").await, (1.0, 100, 5));
    s.log_batch(&r, &[metric("m", 7.0, 100, 5)], &[], &[]).await.unwrap(); // higher value wins the tie
    assert_eq!(get("m").await, (7.0, 100, 5));
    s.log_batch(&r, &[metric("m", -3.0, 150, 5)], &[], &[]).await.unwrap(); // later timestamp
    assert_eq!(get("m").await, (-3.0, 150, 5));
    s.log_batch(&r, &[metric("m", -9.0, 1, 6)], &[], &[]).await.unwrap(); // higher step, older ts
    assert_eq!(get("m").await, (-9.0, 1, 6));
    // Within one batch, in any order.
    s.log_batch(&r, &[metric("n", 3.0, 10, 2), metric("n", 1.0, 20, 2), metric("n", 9.0, 5, 1), metric("n", 2.0, 20, 2)], &[], &[]).await.unwrap();
    assert_eq!(get("n").await, (2.0, 20, 2));
    // Negative steps are allowed and older than step 0.
    s.log_batch(&r, &[metric("o", 1.0, 10, 0), metric("o", 2.0, 20, -1)], &[], &[]).await.unwrap();
    assert_eq!(get("o").await, (1.0, 10, 0));
    // The history keeps every point.
    assert_eq!(s.metric_history(&r, "m", None, None).await.unwrap().metrics.len(), 6);
    // Filters and order_by use the latest value.
    let r2 = new_run(&s, "0", "r2", 2).await;
    s.log_batch(&r2, &[metric("m", 100.0, 1, 0), metric("m", -100.0, 2, 1)], &[], &[]).await.unwrap();
    assert_eq!(search(&s, &["0"], "metrics.m < -50", &[]).await, ["r2"]);
    assert_eq!(search(&s, &["0"], "metrics.m > 50", &[]).await, Vec::<String>::new());
}

// ---- search ----------------------------------------------------------------------------------

/// Five runs with params, tags, metrics and attributes to filter on.
async fn search_fixture(s: &Store) -> String {
    let e = s.create_experiment("search", None, &[]).await.unwrap();
    let rows: [(&str, i64, f64, &str, &str, &str); 5] = [
        ("alpha", 10, 0.1, "adam", "Vision", "FINISHED"),
        ("beta", 20, 0.5, "sgd", "vision", "FAILED"),
        ("gamma", 30, 0.9, "adam", "NLP", "FINISHED"),
        ("delta", 40, 0.3, "rmsprop", "nlp_x", "RUNNING"),
        ("eps", 50, f64::NAN, "Adam", "", "KILLED"),
    ];
    for (name, start, acc, opt, team, status) in rows {
        let r = new_run(s, &e, name, start).await;
        let mut params = vec![kv("opt", opt), kv("lr", &format!("0.0{}", start / 10))];
        if name == "delta" {
            params.pop();
        }
        let t = if team.is_empty() { vec![] } else { vec![kv("team", team)] };
        s.log_batch(&r, &[metric("acc", acc, start, 1), metric("loss", 1.0 - start as f64 / 100.0, start, 1)], &params, &t).await.unwrap();
        if status != "RUNNING" {
            s.update_run(&r, Some(status), Some(start + 5), None).await.unwrap();
        }
    }
    e
}

async fn run_search_filter_grammar(b: Backend) {
    let (s, _db) = store(b).await;
    let e = search_fixture(&s).await;
    let e = e.as_str();
    let q = |f: &'static str| {
        let s = s.clone();
        let e = e.to_owned();
        async move {
            let mut v = search(&s, &[&e], f, &[]).await;
            v.sort();
            v
        }
    };
    let none: Vec<String> = Vec::new();
    assert_eq!(q("metrics.acc > 0.4").await, ["beta", "gamma"]);
    assert_eq!(q("metrics.acc >= 0.5").await, ["beta", "gamma"]);
    assert_eq!(q("metrics.acc < 0.3").await, ["alpha"]);
    assert_eq!(q("metrics.acc <= 0.3").await, ["alpha", "delta"]);
    assert_eq!(q("metrics.acc = 0.5").await, ["beta"]);
    assert_eq!(q("metrics.acc != 0.5").await, ["alpha", "delta", "eps", "gamma"]);
    assert_eq!(q("metrics.acc > 1").await, none);
    assert_eq!(q("metrics.missing > 0").await, none);
    assert_eq!(q("metrics.acc > 0.2 AND metrics.loss < 0.75").await, ["delta", "gamma"]);
    assert_eq!(q("metrics.`acc` > 0.8").await, ["gamma"]);
    assert_eq!(q("params.opt = 'adam'").await, ["alpha", "gamma"]);
    assert_eq!(q("params.opt != 'adam'").await, ["beta", "delta", "eps"]);
    assert_eq!(q("params.lr = '0.02'").await, ["beta"]);
    assert_eq!(q("params.lr != '0.02'").await, ["alpha", "eps", "gamma"]);
    assert_eq!(q("tags.team = 'NLP'").await, ["gamma"]);
    assert_eq!(q("tags.team != 'NLP'").await, ["alpha", "beta", "delta"]);
    // As in MLflow, IN applies to attributes and datasets only.
    assert!(parse_run_filter("params.opt IN ('sgd', 'rmsprop')").is_err());
    assert!(parse_run_filter("tags.team IN ('NLP')").is_err());
    assert_eq!(q("tag.team = 'Vision' AND params.opt = 'adam'").await, ["alpha"]);
    assert_eq!(q("attributes.status = 'FINISHED'").await, ["alpha", "gamma"]);
    assert_eq!(q("attributes.status != 'FINISHED'").await, ["beta", "delta", "eps"]);
    // As in MLflow, only run_id takes a list.
    assert!(parse_run_filter("status IN ('FAILED', 'KILLED')").is_err());
    assert_eq!(q("attributes.run_name = 'beta'").await, ["beta"]);
    assert_eq!(q("run_name LIKE '%a'").await, ["alpha", "beta", "delta", "gamma"]);
    assert_eq!(q("attributes.start_time > 25").await, ["delta", "eps", "gamma"]);
    assert_eq!(q("attributes.start_time >= 30 AND attributes.start_time <= 40").await, ["delta", "gamma"]);
    assert_eq!(q("attributes.end_time = 25").await, ["beta"]);
    assert_eq!(q("attributes.user_id = 'u'").await.len(), 5);
    let all = search(&s, &[e], "", &[]).await;
    assert_eq!(all.len(), 5);
    let ids: Vec<String> = {
        let f = parse_run_filter("run_name = 'alpha'").unwrap();
        let mut ids: Vec<String> =
            s.search_runs(&[e.to_owned()], &f, &[], ViewType::ActiveOnly, 10, None).await.unwrap().runs.into_iter().map(|r| r.info.run_id).collect();
        let f = parse_run_filter("run_name = 'gamma'").unwrap();
        let page = s.search_runs(&[e.to_owned()], &f, &[], ViewType::ActiveOnly, 10, None).await.unwrap();
        ids.extend(page.runs.into_iter().map(|r| r.info.run_id));
        ids
    };
    let by_id = format!("attributes.run_id IN ('{}', '{}')", ids[0], ids[1]);
    let mut got = search(&s, &[e], &by_id, &[]).await;
    got.sort();
    assert_eq!(got, ["alpha", "gamma"]);
    // An experiment id that is not searched hides its runs.
    assert!(search(&s, &["0"], "", &[]).await.is_empty());
}

async fn like_is_case_sensitive_and_ilike_is_not(b: Backend) {
    let (s, _db) = store(b).await;
    let e = search_fixture(&s).await;
    let q = |f: &'static str| {
        let s = s.clone();
        let e = e.clone();
        async move {
            let mut v = search(&s, &[&e], f, &[]).await;
            v.sort();
            v
        }
    };
    assert_eq!(q("params.opt LIKE 'adam'").await, ["alpha", "gamma"]);
    assert_eq!(q("params.opt LIKE 'Ad%'").await, ["eps"]);
    assert_eq!(q("params.opt ILIKE 'AD%'").await, ["alpha", "eps", "gamma"]);
    assert_eq!(q("tags.team LIKE 'vis%'").await, ["beta"]);
    assert_eq!(q("tags.team LIKE 'Vis%'").await, ["alpha"]);
    assert_eq!(q("tags.team ILIKE 'VIS%'").await, ["alpha", "beta"]);
    // `_` matches exactly one character; a literal `_` in the value is matched by it too.
    assert_eq!(q("tags.team LIKE 'nlp_x'").await, ["delta"]);
    assert_eq!(q("tags.team LIKE 'N_P'").await, ["gamma"]);
    assert_eq!(q("tags.team ILIKE 'n_p'").await, ["gamma"]);
    assert_eq!(q("tags.team LIKE '%'").await, ["alpha", "beta", "delta", "gamma"]);
    assert_eq!(q("attributes.run_name LIKE 'A%'").await, Vec::<String>::new());
    assert_eq!(q("attributes.run_name ILIKE 'A%'").await, ["alpha"]);
    assert_eq!(q("attributes.status LIKE 'FIN%'").await, ["alpha", "gamma"]);
    assert_eq!(q("attributes.status LIKE 'fin%'").await, Vec::<String>::new());
}

async fn run_search_order_by(b: Backend) {
    let (s, _db) = store(b).await;
    let e = search_fixture(&s).await;
    let e = e.as_str();
    // Default: start_time DESC.
    assert_eq!(search(&s, &[e], "", &[]).await, ["eps", "delta", "gamma", "beta", "alpha"]);
    assert_eq!(search(&s, &[e], "", &["start_time ASC"]).await, ["alpha", "beta", "gamma", "delta", "eps"]);
    assert_eq!(search(&s, &[e], "", &["attributes.run_name"]).await, ["alpha", "beta", "delta", "eps", "gamma"]);
    // Metrics: numbers, then NaN, in both directions.
    assert_eq!(search(&s, &[e], "", &["metrics.acc DESC"]).await, ["gamma", "beta", "delta", "alpha", "eps"]);
    assert_eq!(search(&s, &[e], "", &["metrics.acc"]).await, ["alpha", "delta", "beta", "gamma", "eps"]);
    // Params/tags: missing last; ties broken by start_time DESC.
    assert_eq!(search(&s, &[e], "", &["params.lr DESC"]).await, ["eps", "gamma", "beta", "alpha", "delta"]);
    assert_eq!(search(&s, &[e], "", &["params.opt", "start_time ASC"]).await, ["eps", "alpha", "gamma", "delta", "beta"]);
    assert_eq!(search(&s, &[e], "", &["tags.team"]).await, ["gamma", "alpha", "delta", "beta", "eps"]);
    // end_time: unfinished runs last.
    assert_eq!(search(&s, &[e], "", &["end_time DESC"]).await, ["eps", "gamma", "beta", "alpha", "delta"]);
    assert_eq!(search(&s, &[e], "", &["attributes.status", "run_name DESC"]).await, ["beta", "gamma", "alpha", "eps", "delta"]);
}

async fn run_search_paging_is_stable(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.create_experiment("paging", None, &[]).await.unwrap();
    // Equal start times force the tie-breaker to decide the order.
    for i in 0..23 {
        new_run(&s, &e, &format!("run-{i:02}"), 1000 + (i % 3)).await;
    }
    for order in [vec![], vec!["run_name DESC".to_string()], vec!["start_time".to_string()]] {
        let o = parse_run_order_by(&order).unwrap();
        let whole = s.search_runs(&[e.clone()], &[], &o, ViewType::ActiveOnly, 1000, None).await.unwrap();
        assert!(whole.next_page_token.is_none());
        let whole: Vec<String> = whole.runs.into_iter().map(|r| r.info.run_id).collect();
        assert_eq!(whole.len(), 23);
        let mut paged = Vec::new();
        let mut token = None::<String>;
        let mut pages = 0;
        loop {
            let page = s.search_runs(&[e.clone()], &[], &o, ViewType::ActiveOnly, 10, token.as_deref()).await.unwrap();
            pages += 1;
            paged.extend(page.runs.into_iter().map(|r| r.info.run_id));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(pages, 3);
        assert_eq!(paged, whole, "order {order:?}");
    }
    // An exact multiple of the page size ends without an empty extra page... or with one that is
    // empty and has no token; either way no run is repeated.
    let page = s.search_runs(&[e.clone()], &[], &[], ViewType::ActiveOnly, 23, None).await.unwrap();
    assert_eq!(page.runs.len(), 23);
    assert!(page.next_page_token.is_none());
    // A garbage token is the client's error.
    assert!(matches!(s.search_runs(&[e.clone()], &[], &[], ViewType::ActiveOnly, 10, Some("garbage!")).await, Err(Error::Invalid(_))));
}

async fn run_lifecycle_and_view_types(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.create_experiment("life", None, &[]).await.unwrap();
    let a = new_run(&s, &e, "a", 1).await;
    new_run(&s, &e, "b", 2).await;
    s.set_run_lifecycle(&a, "deleted").await.unwrap();
    assert_eq!(s.get_run(&a).await.unwrap().info.lifecycle_stage, "deleted");
    assert_eq!(search_view(&s, &[&e], "", &[], ViewType::ActiveOnly).await, ["b"]);
    assert_eq!(search_view(&s, &[&e], "", &[], ViewType::DeletedOnly).await, ["a"]);
    assert_eq!(search_view(&s, &[&e], "", &[], ViewType::All).await, ["b", "a"]);
    // A deleted run accepts no writes, and they leave no trace.
    assert!(matches!(s.log_batch(&a, &[metric("m", 1.0, 1, 0)], &[], &[]).await, Err(Error::Invalid(_))));
    assert!(matches!(s.update_run(&a, Some("FINISHED"), None, None).await, Err(Error::Invalid(_))));
    s.set_run_lifecycle(&a, "active").await.unwrap();
    assert!(s.get_run(&a).await.unwrap().data.metrics.is_empty());
    assert_eq!(search_view(&s, &[&e], "", &[], ViewType::ActiveOnly).await, ["b", "a"]);
    s.log_batch(&a, &[metric("m", 1.0, 1, 0)], &[], &[]).await.unwrap();
    assert!(matches!(s.set_run_lifecycle("0123456789abcdef0123456789abcdef", "deleted").await, Err(Error::NotFound(_))));
}

async fn metric_history_keyset_paging_100k(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    const N: i64 = 100_000;
    // Timestamps go backwards in steps so history order (timestamp, step) differs from insertion
    // order, and every 10 points share a timestamp so step breaks ties.
    let point = |i: i64| metric("loss", (i as f64) * 0.5, 10_000 - i / 10, i % 10);
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<_> = chunk.iter().map(|&i| point(i)).collect();
        s.log_batch(&r, &batch, &[], &[]).await.unwrap();
    }
    // A second key must not leak into the first one's pages.
    s.log_batch(&r, &[metric("other", 1.0, 0, 0)], &[], &[]).await.unwrap();
    let all = s.metric_history(&r, "loss", None, None).await.unwrap();
    assert_eq!(all.metrics.len() as i64, N);
    assert!(all.next_page_token.is_none());
    let mut paged = Vec::with_capacity(N as usize);
    let mut token = None::<String>;
    let mut pages = 0;
    loop {
        let page = s.metric_history(&r, "loss", Some(25_000), token.as_deref()).await.unwrap();
        pages += 1;
        assert!(page.metrics.len() <= 25_000);
        paged.extend(page.metrics);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(pages <= 5, "paging does not end");
    }
    assert_eq!(pages, 4);
    assert_eq!(paged, all.metrics);
    // (timestamp, step) order, with each point present exactly once.
    assert!(paged.windows(2).all(|w| (w[0].timestamp, w[0].step) <= (w[1].timestamp, w[1].step)));
    let mut values: Vec<i64> = paged.iter().map(|m| (m.value * 2.0) as i64).collect();
    values.sort_unstable();
    assert_eq!(values, (0..N).collect::<Vec<_>>());
    assert_eq!((paged[0].timestamp, paged[0].step), (10_000 - (N - 1) / 10, 0));
    // Small pages across equal timestamps lose nothing.
    let mut small = Vec::new();
    let mut token = None::<String>;
    for _ in 0..10 {
        let page = s.metric_history(&r, "loss", Some(3), token.as_deref()).await.unwrap();
        small.extend(page.metrics);
        token = page.next_page_token;
    }
    assert_eq!(small, all.metrics[..30]);
    assert!(s.metric_history(&r, "missing", Some(10), None).await.unwrap().metrics.is_empty());
    assert!(matches!(s.metric_history(&r, "loss", Some(10), Some("not a token")).await, Err(Error::Invalid(_))));
    // An unknown run has no history, as in MLflow.
    assert!(s.metric_history("0123456789abcdef0123456789abcdef", "loss", None, None).await.unwrap().metrics.is_empty());
}

async fn inputs_outputs_and_dataset_filters(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.create_experiment("data", None, &[]).await.unwrap();
    let a = new_run(&s, &e, "a", 1).await;
    let bb = new_run(&s, &e, "b", 2).await;
    let ds = |name: &str, digest: &str, context: &str| DatasetInput {
        tags: vec![Tag { key: "mlflow.data.context".into(), value: context.into() }],
        dataset: Dataset {
            name: name.into(),
            digest: digest.into(),
            source_type: "code".into(),
            source: "{\"tags\": {}}".into(),
            schema: Some("{\"mlflow_colspec\": []}".into()),
            profile: None,
        },
    };
    s.log_inputs(&a, &[ds("toy", "d1", "training"), ds("eval", "d2", "validation")]).await.unwrap();
    // Logging the same dataset again (same name+digest) reuses it.
    s.log_inputs(&bb, &[ds("toy", "d1", "evaluation")]).await.unwrap();
    s.log_inputs(&a, &[ds("toy", "d1", "training")]).await.unwrap();
    let run = s.get_run(&a).await.unwrap();
    assert_eq!(run.inputs.dataset_inputs.len(), 2);
    let toy = run.inputs.dataset_inputs.iter().find(|d| d.dataset.name == "toy").unwrap();
    assert_eq!(toy.dataset, ds("toy", "d1", "training").dataset);
    assert_eq!(toy.tags, ds("toy", "d1", "training").tags);
    let q = |f: &'static str| {
        let s = s.clone();
        let e = e.clone();
        async move {
            let mut v = search(&s, &[&e], f, &[]).await;
            v.sort();
            v
        }
    };
    assert_eq!(q("datasets.name = 'toy'").await, ["a", "b"]);
    assert_eq!(q("datasets.name = 'eval'").await, ["a"]);
    assert_eq!(q("datasets.digest IN ('d2')").await, ["a"]);
    assert_eq!(q("datasets.context = 'training'").await, ["a"]);
    assert_eq!(q("datasets.context = 'evaluation'").await, ["b"]);
    assert_eq!(q("datasets.context LIKE '%tion'").await, ["a", "b"]);

    s.log_outputs(&a, &[("m-1".into(), 3), ("m-2".into(), 0)]).await.unwrap();
    s.log_outputs(&a, &[("m-1".into(), 5)]).await.unwrap();
    let outs: Vec<(String, i64)> = s.get_run(&a).await.unwrap().outputs.model_outputs.into_iter().map(|o| (o.model_id.unwrap(), o.step.unwrap())).collect();
    assert_eq!(outs, [("m-2".to_string(), 0), ("m-1".to_string(), 5)]);
}

async fn logged_models_lifecycle(b: Backend) {
    let (s, _db) = store(b).await;
    let e = s.create_experiment("models", None, &[]).await.unwrap();
    let r = new_run(&s, &e, "r", 1).await;
    let m = s.create_logged_model(&e, Some("model"), Some(&r), Some("sklearn"), &[kv("lr", "0.1")], &[kv("t", "1")]).await.unwrap();
    let id = m.info.model_id.clone();
    assert!(id.starts_with("m-") && id.len() == 34, "{id}");
    assert_eq!(m.info.status, "LOGGED_MODEL_PENDING");
    assert_eq!(m.info.artifact_uri, format!("mlflow-artifacts:/{e}/models/{id}/artifacts"));
    assert_eq!(m.info.source_run_id.as_deref(), Some(r.as_str()));
    assert_eq!(m.info.experiment_id, e);
    assert_eq!(m.data.params, vec![Tag { key: "lr".into(), value: "0.1".into() }]);
    assert_eq!(tags(&m.info.tags), BTreeMap::from([kv("t", "1")]));
    // Metrics logged with the model id show up on the model.
    let mut point = metric("acc", 0.75, 5, 1);
    point.model_id = Some(id.clone());
    s.log_batch(&r, &[point], &[], &[]).await.unwrap();
    let got = s.get_logged_model(&id).await.unwrap();
    assert_eq!(got.data.metrics.len(), 1);
    assert_eq!((got.data.metrics[0].value, got.data.metrics[0].run_id.as_deref()), (0.75, Some(r.as_str())));
    let ready = s.finalize_logged_model(&id, "LOGGED_MODEL_READY").await.unwrap();
    assert_eq!(ready.info.status, "LOGGED_MODEL_READY");
    s.set_logged_model_tags(&id, &[kv("t", "2"), kv("u", "x")]).await.unwrap();
    s.delete_logged_model_tag(&id, "u").await.unwrap();
    assert_eq!(tags(&s.get_logged_model(&id).await.unwrap().info.tags), BTreeMap::from([kv("t", "2")]));
    assert!(matches!(s.delete_logged_model_tag(&id, "u").await, Err(Error::NotFound(_))));
    let other = s.create_logged_model(&e, None, None, None, &[], &[]).await.unwrap();
    assert_eq!(other.info.name, other.info.model_id, "an unnamed model is named by its id");
    let f = tracker::store::logged_models::parse_logged_model_filter("name = 'model'").unwrap();
    let (found, next) = s.search_logged_models(&[e.clone()], &f, 10, None).await.unwrap();
    assert_eq!(found.iter().map(|m| m.info.model_id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    assert!(next.is_none());
    let (page1, next) = s.search_logged_models(&[e.clone()], &[], 1, None).await.unwrap();
    let (page2, last) = s.search_logged_models(&[e.clone()], &[], 1, next.as_deref()).await.unwrap();
    assert!(last.is_none());
    let mut both = vec![page1[0].info.model_id.clone(), page2[0].info.model_id.clone()];
    both.sort();
    let mut want = vec![id.clone(), other.info.model_id.clone()];
    want.sort();
    assert_eq!(both, want);
    s.delete_logged_model(&id).await.unwrap();
    assert!(matches!(s.get_logged_model(&id).await, Err(Error::NotFound(_))));
    assert!(matches!(s.create_logged_model("424242", None, None, None, &[], &[]).await, Err(Error::NotFound(_))));
}

// ---- concurrency and limits ------------------------------------------------------------------

async fn concurrent_writes_never_fail_with_db_errors(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    // The same param with the same value from many writers at once (async logging, retries):
    // every call is a no-op success, never a unique-constraint error.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let p = s.log_batch(&r, &[], &[kv("lr", "0.1"), kv(&format!("own{i}"), "x")], &[kv("t", &i.to_string())]).await;
            let m = s.log_batch(&r, &[metric("m", i as f64, 100, i)], &[], &[]).await;
            (p, m)
        }));
    }
    for t in tasks {
        let (p, m) = t.await.unwrap();
        p.unwrap();
        m.unwrap();
    }
    let run = s.get_run(&r).await.unwrap();
    assert_eq!(run.data.params.len(), 17);
    assert_eq!(latest(&run)["m"], (15.0, 100, 15));
    assert_eq!(s.metric_history(&r, "m", None, None).await.unwrap().metrics.len(), 16);
    // A conflicting value racing the same key: exactly one value wins, the others are refused.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let r = r.clone();
        tasks.push(tokio::spawn(async move { s.log_batch(&r, &[], &[kv("race", &i.to_string())], &[]).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::Invalid(_)) => {}
            Err(e) => panic!("racing params: {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    // Parallel set_experiment / get-or-create of one name: one creates, the rest see it exists.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.create_experiment("parallel", None, &[]).await }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => panic!("racing experiment creation: {e:?}"),
        }
    }
    assert_eq!(created, 1);
}

/// Text that no compression shrinks much, so a database that indexes it whole must cope with
/// its full size (Postgres b-tree entries are limited to ~2.7 kB).
fn incompressible(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 {}:,\"".chars().collect();
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}

async fn long_incompressible_values_round_trip(b: Backend) {
    let (s, _db) = store(b).await;
    let r = new_run(&s, "0", "r", 1).await;
    // MLflow's limits: params 6000 characters, tags 8000 (a run's markdown description is the
    // tag `mlflow.note.content`).
    let param = incompressible(6000, 1);
    let note = incompressible(8000, 2);
    s.log_batch(&r, &[], &[kv("config", &param)], &[kv("mlflow.note.content", &note)]).await.expect("long params and tags are stored on every backend");
    let run = s.get_run(&r).await.unwrap();
    assert_eq!(tags(&run.data.params)["config"], param);
    assert_eq!(tags(&run.data.tags)["mlflow.note.content"], note);
    let e = s.create_experiment("long", None, &[kv("mlflow.note.content", &note)]).await.unwrap();
    s.set_experiment_tag(&e, "other", &note).await.unwrap();
    assert_eq!(tags(&s.get_experiment(&e).await.unwrap().tags)["other"], note);
    // And they can be searched for.
    let f = format!("params.config = '{}'", param.replace('\'', "''"));
    if parse_run_filter(&f).is_ok() {
        assert_eq!(search(&s, &["0"], &f, &[]).await, ["r"]);
    }
}
