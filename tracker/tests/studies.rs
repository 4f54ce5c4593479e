//! Studies and the worker lease protocol over HTTP, with simulated workers, on SQLite and (with
//! `TEST_POSTGRES_URL`) on Postgres: the scheduler's decisions against the tuner's in-memory
//! `Study`, fencing, expired leases, retry budgets, restarts and many concurrent workers.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Reply, TestServer};
use serde_json::{json, Value};
use tracker::auth::Auth;
use tracker::studies::LeaseTiming;
use tuner::scheduler::AshaConfig;
use tuner::{Decision, Direction, Job, Outcome, SamplerKind, SchedulerKind, SearchSpace, Study};

async fn call(s: &TestServer, path: &str, body: Value) -> Reply {
    s.send(s.client.post(s.url(&format!("/api/tracker/{path}"))).json(&body)).await
}

async fn trial_call(s: &TestServer, study: &str, n: u64, what: &str, body: Value) -> Reply {
    call(s, &format!("studies/{study}/trials/{n}/{what}"), body).await
}

fn space() -> Value {
    json!({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": true}, "layers": {"type": "int", "low": 1, "high": 4}})
}

fn spec(name: &str, extra: Value) -> Value {
    let mut s = json!({
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "space": space(),
        "sampler": "random",
        "scheduler": {"kind": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "max_trials": 12,
        "seed": 7,
        "run": {"command": ["python3", "train.py"]}
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// The simulated training curve: better learning rates and more layers reach lower losses.
fn loss(params: &Value, step: u64) -> f64 {
    let lr = params["lr"].as_f64().unwrap();
    let layers = params["layers"].as_f64().unwrap();
    (lr.log10() + 2.5).powi(2) + 1.0 / layers + 2.0 / (step as f64)
}

async fn register(s: &TestServer, worker: &str) {
    call(s, "workers/register", json!({"worker_id": worker, "resources": {"gpus": 1}})).await.ok();
}

async fn lease(s: &TestServer, worker: &str) -> Value {
    call(s, "workers/lease", json!({"worker_id": worker})).await.ok()
}

/// One worker runs the study to its end, one trial at a time; returns every decision it got,
/// as `(trial, step, decision)`, and calls `between` after each trial.
async fn run_sequentially(s: &mut TestServer, study: &str, restart_after: Option<usize>) -> Vec<(u64, u64, String)> {
    register(s, "w1").await;
    let mut decisions = Vec::new();
    let mut trials_done = 0;
    loop {
        let l = lease(s, "w1").await;
        let Some(a) = l.get("assignment").cloned() else {
            assert_eq!(l["more_work"], false, "an idle sequential worker means the study is over: {l}");
            break;
        };
        let n = a["trial"].as_u64().unwrap();
        let lease_id = a["lease_id"].as_str().unwrap().to_owned();
        let max = a["max_resource"].as_u64().unwrap();
        let mut finished = false;
        for step in 1..=max {
            let r = trial_call(s, study, n, "report", json!({"lease_id": lease_id, "step": step, "value": loss(&a["params"], step)})).await.ok();
            let d = r["decision"].as_str().unwrap().to_owned();
            decisions.push((n, step, d.clone()));
            if d != "continue" {
                finished = true;
                break;
            }
        }
        if !finished {
            trial_call(s, study, n, "complete", json!({"lease_id": lease_id})).await.ok();
        }
        trials_done += 1;
        if restart_after == Some(trials_done) {
            s.restart().await;
        }
    }
    decisions
}

/// The same calls made on the tuner's in-memory `Study`: the decisions the server must make.
fn expected_decisions(max_trials: u64) -> (Vec<(u64, u64, String)>, Vec<Value>) {
    let cfg = AshaConfig { min_resource: 1, max_resource: 9, reduction_factor: 3, extrapolate: false };
    let mut study = Study::new(
        SearchSpace::from_json(&space()).unwrap(),
        Direction::Minimize,
        7,
        SamplerKind::Random.build(7, Some(max_trials as usize)),
        SchedulerKind::AshaStop(cfg).build(7),
    );
    let mut decisions = Vec::new();
    let mut params_seen = Vec::new();
    for _ in 0..max_trials {
        let Job::New { number, params, .. } = study.next_job() else { panic!("stopping ASHA never resumes") };
        let params = serde_json::to_value(&params).unwrap();
        params_seen.push(params.clone());
        let mut outcome = None;
        for step in 1..=9u64 {
            let v = loss(&params, step);
            let d = study.report(number, step, v).unwrap();
            let name = match d {
                Decision::Continue { .. } => "continue",
                Decision::Stop => "stop",
                Decision::Pause => "pause",
            };
            decisions.push((number, step, name.to_owned()));
            if d == Decision::Stop {
                outcome = Some(if step >= 9 { Outcome::Complete(v) } else { Outcome::Pruned });
                break;
            }
        }
        study.tell(number, outcome.unwrap_or(Outcome::Complete(loss(&params, 9)))).unwrap();
    }
    (decisions, params_seen)
}

async fn asha_study_makes_the_tuners_decisions(backend: Backend) {
    let Some(mut s) = common::start(backend).await else { return };
    call(&s, "studies/create", json!({"spec": spec("asha", json!({}))})).await.ok();
    let got = run_sequentially(&mut s, "asha", None).await;
    let (want, params) = expected_decisions(12);
    assert_eq!(got, want, "server decisions differ from the tuner's");
    assert!(got.iter().any(|(_, _, d)| d == "stop"), "ASHA stopped nothing: {got:?}");

    let body = s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "asha")])).await.ok();
    assert_eq!(body["study"]["status"], "finished");
    let trials = body["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 12);
    for (t, p) in trials.iter().zip(&params) {
        assert_eq!(&t["params"], p, "trial params are the tuner's");
        assert!(matches!(t["state"].as_str().unwrap(), "complete" | "pruned"), "{t}");
        // Each trial is a run with its params, its reports as metric history, and study tags.
        let run = s.get_run(t["run_id"].as_str().unwrap()).await;
        let tags: BTreeMap<String, String> =
            run["data"]["tags"].as_array().unwrap().iter().map(|t| (t["key"].as_str().unwrap().into(), t["value"].as_str().unwrap().into())).collect();
        assert_eq!(tags["tracker.study"], "asha");
        assert_eq!(tags["tracker.trial"], t["number"].to_string());
        assert_eq!(tags["tracker.state"], t["state"].as_str().unwrap());
        assert_eq!(run["info"]["status"], if t["state"] == "complete" { "FINISHED" } else { "KILLED" });
        let hist = s.get("metrics/get-history", &[("run_id", t["run_id"].as_str().unwrap()), ("metric_key", "loss")]).await.ok();
        let steps: Vec<u64> = hist["metrics"].as_array().unwrap().iter().map(|m| m["step"].as_str().map_or_else(|| m["step"].as_u64().unwrap(), |x| x.parse().unwrap())).collect();
        assert_eq!(steps, (1..=t["last_step"].as_u64().unwrap()).collect::<Vec<_>>(), "one metric point per report");
        let lr_param = run["data"]["params"].as_array().unwrap().iter().find(|p| p["key"] == "lr").unwrap()["value"].clone();
        assert_eq!(lr_param.as_str().unwrap().parse::<f64>().unwrap(), p["lr"].as_f64().unwrap());
    }
    let best = &body["study"]["best"];
    let best_value = trials.iter().filter(|t| t["state"] == "complete").map(|t| t["value"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert_eq!(best["value"].as_f64().unwrap(), best_value);
}

#[tokio::test]
async fn asha_study_makes_the_tuners_decisions_sqlite() {
    asha_study_makes_the_tuners_decisions(Backend::Sqlite).await;
}

#[tokio::test]
async fn asha_study_makes_the_tuners_decisions_postgres() {
    asha_study_makes_the_tuners_decisions(Backend::Postgres).await;
}

async fn restarted_tracker_makes_the_same_decisions(backend: Backend) {
    let Some(mut s) = common::start(backend).await else { return };
    call(&s, "studies/create", json!({"spec": spec("restarted", json!({}))})).await.ok();
    let got = run_sequentially(&mut s, "restarted", Some(5)).await;
    let (want, _) = expected_decisions(12);
    assert_eq!(got, want, "a restart mid-study changed the decisions");
}

#[tokio::test]
async fn restarted_tracker_makes_the_same_decisions_sqlite() {
    restarted_tracker_makes_the_same_decisions(Backend::Sqlite).await;
}

#[tokio::test]
async fn restarted_tracker_makes_the_same_decisions_postgres() {
    restarted_tracker_makes_the_same_decisions(Backend::Postgres).await;
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    // Specs: each error names its field.
    for (extra, field) in [
        (json!({"name": "a b"}), "`name`"),
        (json!({"objective": {"metric": "loss", "direction": "down"}}), "`objective.direction`"),
        (json!({"space": {"lr": {"type": "float", "low": 0, "high": 1, "log": true}}}), "`space`"),
        (json!({"scheduler": {"kind": "asha", "min_resource": 9, "max_resource": 9}}), "`scheduler.min_resource`"),
        (json!({"max_trials": 0}), "`max_trials`"),
        (json!({"run": {}}), "`run`"),
        (json!({"max_trails": 3}), "max_trails"),
        (json!({"register": {"model": " "}}), "`register.model`"),
        (json!({"register": {"model": "m", "artifact_path": "../other-run"}}), "`register.artifact_path`"),
        (json!({"register": {"model": "m", "alias": "latest"}}), "`register.alias`"),
        (json!({"register": {"model": "m", "alais": "production"}}), "alais"),
    ] {
        let r = call(&s, "studies/create", json!({"spec": spec("bad", extra)})).await;
        r.err(400, "INVALID_PARAMETER_VALUE");
        assert!(r.json["message"].as_str().unwrap().contains(field), "{field} not named in {}", r.text);
    }
    call(&s, "studies/create", json!({"nope": 1})).await.err(400, "INVALID_PARAMETER_VALUE");
    s.post_raw("/api/tracker/studies/create", "application/json", "{not json").await.err(400, "BAD_REQUEST");
    s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "bad")])).await.err(404, "RESOURCE_DOES_NOT_EXIST");

    call(&s, "studies/create", json!({"spec": spec("s", json!({"max_trials": 2}))})).await.ok();
    call(&s, "studies/create", json!({"spec": spec("s", json!({}))})).await.err(400, "RESOURCE_ALREADY_EXISTS");
    call(&s, "workers/lease", json!({"worker_id": "ghost"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    call(&s, "workers/register", json!({"worker_id": ""})).await.err(400, "INVALID_PARAMETER_VALUE");
    register(&s, "w1").await;
    let a = lease(&s, "w1").await["assignment"].clone();
    let lease_id = a["lease_id"].as_str().unwrap();
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["next_milestone"], 1);
    assert_eq!(a["max_resource"], 9);
    // Leasing again returns the same assignment.
    assert_eq!(lease(&s, "w1").await["assignment"]["lease_id"], lease_id);

    trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 2, "value": 1.5})).await.ok();
    let before = s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "s")])).await.ok();
    trial_call(&s, "s", 0, "report", json!({"lease_id": "stale", "step": 3, "value": 1.0})).await.err(409, "RESOURCE_CONFLICT");
    trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 1, "value": 1.0})).await.err(400, "INVALID_PARAMETER_VALUE");
    trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 2, "value": 9.0})).await.err(400, "INVALID_PARAMETER_VALUE");
    trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 3, "value": "NaN"})).await.err(400, "INVALID_PARAMETER_VALUE");
    trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": -1, "value": 1.0})).await.err(400, "INVALID_PARAMETER_VALUE");
    trial_call(&s, "s", 7, "report", json!({"lease_id": lease_id, "step": 3, "value": 1.0})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    trial_call(&s, "s", 0, "complete", json!({"lease_id": "stale"})).await.err(409, "RESOURCE_CONFLICT");
    trial_call(&s, "s", 0, "fail", json!({"lease_id": "stale", "error": "x"})).await.err(409, "RESOURCE_CONFLICT");
    trial_call(&s, "nope", 0, "report", json!({"lease_id": lease_id, "step": 3, "value": 1.0})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    s.post_raw("/api/tracker/studies/s/trials/x/report", "application/json", json!({"lease_id": lease_id, "step": 3, "value": 1.0}).to_string())
        .await
        .err(400, "INVALID_PARAMETER_VALUE");
    s.post_raw("/api/tracker/studies/%FF/trials/0/report", "application/json", json!({"lease_id": lease_id, "step": 3, "value": 1.0}).to_string())
        .await
        .err(400, "INVALID_PARAMETER_VALUE");
    let after = s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "s")])).await.ok();
    assert_eq!(before, after, "refused calls changed the study");
    // A retried report gets the same answer and logs nothing twice.
    let first = trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 3, "value": 1.2})).await.ok();
    let again = trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 3, "value": 1.2})).await.ok();
    assert_eq!(first, again);
    let run_id = a["run_id"].as_str().unwrap();
    let hist = s.get("metrics/get-history", &[("run_id", run_id), ("metric_key", "loss")]).await.ok();
    assert_eq!(hist["metrics"].as_array().unwrap().len(), 2);

    trial_call(&s, "s", 0, "complete", json!({"lease_id": lease_id})).await.ok();
    trial_call(&s, "s", 0, "report", json!({"lease_id": lease_id, "step": 4, "value": 1.0})).await.err(409, "RESOURCE_CONFLICT");
    let done = s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "s")])).await.ok();
    assert_eq!(done["trials"][0]["state"], "complete");
    assert_eq!(done["trials"][0]["value"], 1.2, "complete without a value takes the last report");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing_sqlite() {
    bad_input_is_refused_and_changes_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing_postgres() {
    bad_input_is_refused_and_changes_nothing(Backend::Postgres).await;
}

async fn lost_lease_resumes_elsewhere_from_checkpoint(backend: Backend) {
    let timing = LeaseTiming { lease_ttl: Duration::from_millis(1500) };
    let Some(s) = common::start_with(backend, Auth::default(), timing).await else { return };
    call(&s, "studies/create", json!({"spec": spec("lost", json!({"max_trials": 1, "max_lost": 1}))})).await.ok();
    register(&s, "w1").await;
    register(&s, "w2").await;
    let a = lease(&s, "w1").await["assignment"].clone();
    let first = a["lease_id"].as_str().unwrap().to_owned();
    trial_call(&s, "lost", 0, "report", json!({"lease_id": first, "step": 1, "value": 3.0, "checkpoint": "checkpoints/step-1"})).await.ok();
    // A heartbeat keeps the lease alive past its TTL.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hb = call(&s, "workers/heartbeat", json!({"worker_id": "w1", "leases": [first]})).await.ok();
    assert_eq!(hb["commands"], json!([]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(lease(&s, "w2").await.get("assignment").is_none(), "a renewed lease is not handed out");
    // Then w1 goes silent: its lease expires and the trial moves to w2, resumed from step 1.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let b = lease(&s, "w2").await["assignment"].clone();
    assert_eq!(b["trial"], 0);
    assert_eq!(b["attempt"], 2);
    assert_eq!(b["resume"], json!({"checkpoint": "checkpoints/step-1", "step": 1}));
    assert_eq!(b["next_milestone"], 3);
    let second = b["lease_id"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // The zombie is fenced off and told to stop.
    trial_call(&s, "lost", 0, "report", json!({"lease_id": first, "step": 2, "value": 2.0})).await.err(409, "RESOURCE_CONFLICT");
    let hb = call(&s, "workers/heartbeat", json!({"worker_id": "w1", "leases": [first]})).await.ok();
    assert_eq!(hb["commands"][0]["action"], "stop");
    for step in 2..=9 {
        let r = trial_call(&s, "lost", 0, "report", json!({"lease_id": second, "step": step, "value": 3.0 - step as f64 / 10.0})).await.ok();
        if r["decision"] != "continue" {
            break;
        }
    }
    let run_id = b["run_id"].as_str().unwrap();
    let hist = s.get("metrics/get-history", &[("run_id", run_id), ("metric_key", "loss")]).await.ok();
    let steps: Vec<i64> = hist["metrics"].as_array().unwrap().iter().map(|m| m["step"].as_str().map_or_else(|| m["step"].as_i64().unwrap(), |x| x.parse().unwrap())).collect();
    assert_eq!(steps, (1..=9).collect::<Vec<_>>(), "no metric lost or duplicated across attempts");
    let t = &s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "lost")])).await.ok()["trials"][0];
    assert_eq!(t["lost"], 1);
    assert_eq!(t["state"], "complete");
}

#[tokio::test]
async fn lost_lease_resumes_elsewhere_from_checkpoint_sqlite() {
    lost_lease_resumes_elsewhere_from_checkpoint(Backend::Sqlite).await;
}

#[tokio::test]
async fn lost_lease_resumes_elsewhere_from_checkpoint_postgres() {
    lost_lease_resumes_elsewhere_from_checkpoint(Backend::Postgres).await;
}

async fn failures_are_retried_then_final_and_flapping_workers_pause(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    call(&s, "studies/create", json!({"spec": spec("flaky", json!({"max_trials": 3, "max_failures": 2}))})).await.ok();
    register(&s, "w1").await;
    let mut states = Vec::new();
    for _ in 0..3 {
        let a = lease(&s, "w1").await["assignment"].clone();
        let t = trial_call(&s, "flaky", a["trial"].as_u64().unwrap(), "fail", json!({"lease_id": a["lease_id"], "error": "exit code 1"})).await.ok();
        states.push((t["number"].as_u64().unwrap(), t["state"].as_str().unwrap().to_owned()));
    }
    // Trial 0 is retried first (front of the queue), then fails for good; then trial 1 starts.
    assert_eq!(states, vec![(0, "queued".into()), (0, "failed".into()), (1, "queued".into())]);
    let l = lease(&s, "w1").await;
    assert!(l.get("assignment").is_none(), "three quick failures pause the worker: {l}");
    assert!(l["reason"].as_str().unwrap().contains("paused"), "{l}");
    let w = call(&s, "workers/resume", json!({"worker_id": "w1"})).await.ok();
    assert_eq!(w["worker"]["status"], "active");
    assert_eq!(lease(&s, "w1").await["assignment"]["trial"], 1);

    // Stopping the study stops the running trial at the worker's next heartbeat.
    let a = lease(&s, "w1").await["assignment"].clone();
    call(&s, "studies/stop", json!({"name": "flaky"})).await.ok();
    let hb = call(&s, "workers/heartbeat", json!({"worker_id": "w1", "leases": [a["lease_id"]]})).await.ok();
    assert_eq!(hb["commands"][0]["action"], "stop");
    let l = lease(&s, "w1").await;
    assert_eq!(l["more_work"], false, "{l}");
    call(&s, "studies/pause", json!({"name": "flaky"})).await.err(400, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn failures_are_retried_then_final_and_flapping_workers_pause_sqlite() {
    failures_are_retried_then_final_and_flapping_workers_pause(Backend::Sqlite).await;
}

#[tokio::test]
async fn failures_are_retried_then_final_and_flapping_workers_pause_postgres() {
    failures_are_retried_then_final_and_flapping_workers_pause(Backend::Postgres).await;
}

/// On Postgres, a lease passes over a study whose decision another replica is making (`FOR
/// UPDATE SKIP LOCKED`) and takes a trial of the next study at once; with no other study, it
/// waits for the busy one.
#[tokio::test]
async fn a_lease_passes_over_a_study_another_replica_holds_postgres() {
    let Some(s) = common::start(Backend::Postgres).await else { return };
    call(&s, "studies/create", json!({"spec": spec("first", json!({"max_trials": 1}))})).await.ok();
    call(&s, "studies/create", json!({"spec": spec("second", json!({"max_trials": 1}))})).await.ok();
    register(&s, "w1").await;
    register(&s, "w2").await;
    let other_replica = tracker::store::Store::open(&tracker::store::BackendUri::Postgres(s.backend_store_uri())).await.unwrap();
    let held = other_replica.begin_study("first").await.unwrap();

    let leased = tokio::time::timeout(Duration::from_secs(5), lease(&s, "w1")).await.expect("the lease waited for the busy study");
    assert_eq!(leased["assignment"]["study"], "second", "{leased}");

    // Only the busy study has work left: the lease waits for it, then gets its trial.
    let waiting = tokio::spawn({
        let (base, client) = (s.base.clone(), s.client.clone());
        async move { client.post(format!("{base}/api/tracker/workers/lease")).json(&json!({"worker_id": "w2"})).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the lease did not wait for the only study with work");
    held.commit().await.unwrap();
    let leased = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the lease went on once the study was free").unwrap();
    assert_eq!(leased["assignment"]["study"], "first", "{leased}");
}

/// A dead worker's trial is requeued when its lease runs out, though no worker asks for work:
/// the study shows it queued, not running on a worker that is gone.
async fn expired_leases_are_swept_without_a_lease_call(backend: Backend) {
    let timing = LeaseTiming { lease_ttl: Duration::from_millis(900) };
    let Some(s) = common::start_with(backend, Auth::default(), timing).await else { return };
    call(&s, "studies/create", json!({"spec": spec("swept", json!({"max_trials": 2}))})).await.ok();
    register(&s, "w1").await;
    let a = lease(&s, "w1").await["assignment"].clone();
    trial_call(&s, "swept", 0, "report", json!({"lease_id": a["lease_id"], "step": 1, "value": 3.0})).await.ok();
    let trial = || async { s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "swept")])).await.ok()["trials"][0].clone() };
    assert_eq!(trial().await["state"], "running");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while trial().await["state"] == "running" {
        assert!(std::time::Instant::now() < deadline, "the expired lease was never swept: {}", trial().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = trial().await;
    assert_eq!((t["state"].clone(), t["lost"].clone(), t["worker_id"].clone()), (json!("queued"), json!(1), Value::Null), "{t}");
}

#[tokio::test]
async fn expired_leases_are_swept_without_a_lease_call_sqlite() {
    expired_leases_are_swept_without_a_lease_call(Backend::Sqlite).await;
}

#[tokio::test]
async fn expired_leases_are_swept_without_a_lease_call_postgres() {
    expired_leases_are_swept_without_a_lease_call(Backend::Postgres).await;
}

/// A lease refreshes the worker's `last_seen` when it is older than a few seconds, whether the
/// lease starts a trial (the write goes with the decision), repeats a held lease, or finds no
/// trial at all (the write goes alone).
async fn a_lease_refreshes_the_workers_last_seen(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    register(&s, "w1").await;
    let last_seen = || async { s.store.get_worker("w1").await.unwrap().last_seen };
    let long_ago = 1_000;

    s.store.touch_worker("w1", long_ago).await.unwrap();
    let idle = lease(&s, "w1").await;
    assert!(idle["assignment"].is_null(), "no study yet: {idle}");
    assert!(last_seen().await > long_ago, "a lease that found no study left last_seen stale");

    call(&s, "studies/create", json!({"spec": spec("seen", json!({}))})).await.ok();
    s.store.touch_worker("w1", long_ago).await.unwrap();
    let first = lease(&s, "w1").await;
    assert_eq!(first["assignment"]["trial"], 0, "{first}");
    assert!(last_seen().await > long_ago, "a lease that started a trial left last_seen stale");

    s.store.touch_worker("w1", long_ago).await.unwrap();
    let again = lease(&s, "w1").await;
    assert_eq!(again["assignment"]["lease_id"], first["assignment"]["lease_id"], "{again}");
    assert!(last_seen().await > long_ago, "a repeated lease left last_seen stale");
    // The trial the decisions wrote is intact beside the worker's row.
    let study = s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "seen")])).await.ok();
    assert_eq!((study["trials"][0]["state"].clone(), study["trials"][0]["worker_id"].clone()), (json!("running"), json!("w1")), "{study}");
}

#[tokio::test]
async fn a_lease_refreshes_the_workers_last_seen_sqlite() {
    a_lease_refreshes_the_workers_last_seen(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_lease_refreshes_the_workers_last_seen_postgres() {
    a_lease_refreshes_the_workers_last_seen(Backend::Postgres).await;
}

/// A drained worker's trial is preempted at its next heartbeat; released, it resumes on another
/// worker from its checkpoint, and the drained worker leases nothing until resumed.
async fn drained_worker_is_preempted_and_its_trial_resumes_elsewhere(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    call(&s, "studies/create", json!({"spec": spec("drain", json!({"max_trials": 2}))})).await.ok();
    register(&s, "w1").await;
    register(&s, "w2").await;
    let a = lease(&s, "w1").await["assignment"].clone();
    let lease_1 = a["lease_id"].as_str().unwrap().to_owned();
    trial_call(&s, "drain", 0, "report", json!({"lease_id": lease_1, "step": 1, "value": 3.0, "checkpoint": "checkpoints/step-1"})).await.ok();
    let hb = call(&s, "workers/heartbeat", json!({"worker_id": "w1", "leases": [lease_1]})).await.ok();
    assert_eq!(hb["commands"], json!([]), "nothing to say before the drain");

    let w = call(&s, "workers/drain", json!({"worker_id": "w1"})).await.ok();
    assert_eq!(w["worker"]["status"], "draining");
    call(&s, "workers/drain", json!({"worker_id": "nobody"})).await.err(404, "RESOURCE_DOES_NOT_EXIST");
    let hb = call(&s, "workers/heartbeat", json!({"worker_id": "w1", "leases": [lease_1]})).await.ok();
    assert_eq!(hb["commands"], json!([{"lease_id": lease_1, "action": "preempt", "reason": "worker 'w1' is draining"}]));
    // The lease stays valid until the worker gives the trial back.
    trial_call(&s, "drain", 0, "report", json!({"lease_id": lease_1, "step": 2, "value": 2.5, "checkpoint": "checkpoints/step-2"})).await.ok();
    let t = trial_call(&s, "drain", 0, "release", json!({"lease_id": lease_1, "reason": "preempted: worker 'w1' is draining"})).await.ok();
    assert_eq!(t["state"], "queued");

    let l = lease(&s, "w1").await;
    assert!(l.get("assignment").is_none() && l["reason"].as_str().unwrap().contains("draining"), "{l}");
    let b = lease(&s, "w2").await["assignment"].clone();
    assert_eq!((b["trial"].clone(), b["attempt"].clone()), (json!(0), json!(2)), "the preempted trial goes first");
    assert_eq!(b["resume"], json!({"checkpoint": "checkpoints/step-2", "step": 2}));
    trial_call(&s, "drain", 0, "report", json!({"lease_id": lease_1, "step": 3, "value": 2.0})).await.err(409, "RESOURCE_CONFLICT");

    let w = call(&s, "workers/resume", json!({"worker_id": "w1"})).await.ok();
    assert_eq!(w["worker"]["status"], "active");
    assert_eq!(lease(&s, "w1").await["assignment"]["trial"], 1);
}

#[tokio::test]
async fn drained_worker_is_preempted_and_its_trial_resumes_elsewhere_sqlite() {
    drained_worker_is_preempted_and_its_trial_resumes_elsewhere(Backend::Sqlite).await;
}

#[tokio::test]
async fn drained_worker_is_preempted_and_its_trial_resumes_elsewhere_postgres() {
    drained_worker_is_preempted_and_its_trial_resumes_elsewhere(Backend::Postgres).await;
}

/// How long the concurrency soak runs (`TRACKER_TEST_SOAK_S`, default 60 s).
fn soak() -> Duration {
    Duration::from_secs(std::env::var("TRACKER_TEST_SOAK_S").ok().and_then(|v| v.parse().ok()).unwrap_or(60))
}

/// A worker agent's call: it retries a 503 as the agent does, and counts those in `busy`.
async fn worker_call(s: &TestServer, path: &str, body: Value, busy: &AtomicU32) -> Value {
    let (reply, retries) = s.send_retrying_unavailable(s.client.post(s.url(&format!("/api/tracker/{path}"))).json(&body)).await;
    busy.fetch_add(retries, Ordering::Relaxed);
    reply.ok()
}

async fn concurrent_workers_never_share_a_trial(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    let spec = spec("soak", json!({"max_trials": 100000, "scheduler": {"kind": "fifo"}}));
    call(&s, "studies/create", json!({"spec": spec})).await.ok();
    let s = Arc::new(s);
    let running: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let busy = Arc::new(AtomicU32::new(0));
    let deadline = Instant::now() + soak();
    let mut tasks = Vec::new();
    for w in 0..100 {
        let (s, running, busy) = (s.clone(), running.clone(), busy.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("sim-{w}");
            register(&s, &id).await;
            let mut done = 0u64;
            while Instant::now() < deadline {
                let l = worker_call(&s, "workers/lease", json!({"worker_id": id}), &busy).await;
                let Some(a) = l.get("assignment") else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let n = a["trial"].as_u64().unwrap();
                assert!(running.lock().unwrap().insert(n), "trial {n} leased to two workers at once");
                let lease_id = a["lease_id"].as_str().unwrap().to_owned();
                for step in 1..=2u64 {
                    let body = json!({"lease_id": lease_id, "step": step, "value": loss(&a["params"], step)});
                    worker_call(&s, &format!("studies/soak/trials/{n}/report"), body, &busy).await;
                }
                assert!(running.lock().unwrap().remove(&n));
                worker_call(&s, &format!("studies/soak/trials/{n}/complete"), json!({"lease_id": lease_id}), &busy).await;
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("simulated worker panicked");
    }
    let body = s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", "soak")])).await.ok();
    let trials = body["trials"].as_array().unwrap();
    assert_eq!(trials.iter().filter(|t| t["state"] == "complete").count() as u64, total);
    assert!(trials.iter().all(|t| t["attempt"] == 1), "no trial was started twice");
    eprintln!("{backend:?}: 100 workers completed {total} trials in {:?}; {} calls answered 503 and retried", soak(), busy.load(Ordering::Relaxed));
    assert!(total >= 100, "the workers made progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_never_share_a_trial_sqlite() {
    concurrent_workers_never_share_a_trial(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_never_share_a_trial_postgres() {
    concurrent_workers_never_share_a_trial(Backend::Postgres).await;
}

async fn get_study(s: &TestServer, name: &str) -> Value {
    s.send(s.client.get(s.url("/api/tracker/studies/get")).query(&[("name", name)])).await.ok()
}

async fn set_rules(s: &TestServer, model: &str, rules: &[&str]) {
    call(s, "models/rules/set", json!({"name": model, "rules": rules})).await.ok();
}

/// A finished study registers its best trial's adapter as a new version and promotes it through
/// the model's gates; a gate that refuses leaves the version registered, unaliased, and says why.
async fn finished_study_registers_and_promotes_its_best_trial(backend: Backend) {
    let Some(mut s) = common::start(backend).await else { return };
    s.post("registered-models/create", json!({"name": "ko-lora"})).await.ok();
    set_rules(&s, "ko-lora", &["metrics.loss <= 100"]).await;
    let extra = json!({"register": {"model": "ko-lora", "alias": "production"}, "max_trials": 4});
    call(&s, "studies/create", json!({"spec": spec("first", extra.clone())})).await.ok();
    assert!(get_study(&s, "first").await["study"].get("registered").is_none(), "nothing is registered before the study ends");
    run_sequentially(&mut s, "first", None).await;

    let study = get_study(&s, "first").await["study"].clone();
    assert_eq!(study["status"], "finished");
    let best = &study["best"];
    let best_run = best["run_id"].as_str().unwrap();
    assert_eq!(
        study["registered"],
        json!({"model": "ko-lora", "version": "1", "trial": best["number"], "promotion": "promoted to alias 'production'"})
    );
    let version = s.get("model-versions/get", &[("name", "ko-lora"), ("version", "1")]).await.ok()["model_version"].clone();
    assert_eq!(version["source"], format!("runs:/{best_run}/adapter"));
    assert_eq!(version["run_id"], best_run);
    assert_eq!(version["aliases"], json!(["production"]));
    let tags = common::kv(&version["tags"]);
    assert_eq!(tags["tracker.study"], "first");
    assert_eq!(tags["tracker.trial"], best["number"].to_string());
    let audit = s.send(s.client.get(s.url("/api/tracker/models/audit")).query(&[("name", "ko-lora")])).await.ok();
    let entry = &audit["entries"][0];
    assert_eq!((entry["alias"].as_str(), entry["to_version"].as_str(), entry["actor"].as_str()), (Some("production"), Some("1"), Some("study:first")));

    // Asking again (a lease after the end, a restart's sweep) registers nothing twice.
    register(&s, "w2").await;
    assert!(lease(&s, "w2").await.get("assignment").is_none());
    s.restart().await;
    assert_eq!(get_study(&s, "first").await["study"]["registered"]["version"], "1");
    let versions = s.get("model-versions/search", &[("filter", "name = 'ko-lora'")]).await.ok();
    assert_eq!(versions["model_versions"].as_array().unwrap().len(), 1);

    // A gate that refuses: the version is registered, the alias stays, the tag names the rule.
    set_rules(&s, "ko-lora", &["metrics.loss <= 0"]).await;
    call(&s, "studies/create", json!({"spec": spec("second", extra)})).await.ok();
    run_sequentially(&mut s, "second", None).await;
    let registered = get_study(&s, "second").await["study"]["registered"].clone();
    assert_eq!(registered["version"], "2");
    let promotion = registered["promotion"].as_str().unwrap();
    assert!(promotion.contains("refused by rule 'metrics.loss <= 0'"), "{promotion}");
    let alias = s.get("registered-models/alias", &[("name", "ko-lora"), ("alias", "production")]).await.ok();
    assert_eq!(alias["model_version"]["version"], "1");
}

#[tokio::test]
async fn finished_study_registers_and_promotes_its_best_trial_sqlite() {
    finished_study_registers_and_promotes_its_best_trial(Backend::Sqlite).await;
}

#[tokio::test]
async fn finished_study_registers_and_promotes_its_best_trial_postgres() {
    finished_study_registers_and_promotes_its_best_trial(Backend::Postgres).await;
}

async fn metrics(s: &TestServer) -> String {
    s.send(s.client.get(s.url("/metrics"))).await.text
}

/// `/metrics` carries each study's trials by state and its queue depth, what autoscalers of GPU
/// worker pools read; a paused study asks for no workers.
async fn metrics_show_trials_and_queue_depth(backend: Backend) {
    let Some(s) = common::start(backend).await else { return };
    call(&s, "studies/create", json!({"spec": spec("depth", json!({"max_trials": 5, "max_concurrent": 3}))})).await.ok();
    let text = metrics(&s).await;
    assert!(text.lines().any(|l| l == "tracker_study_waiting_trials{study=\"depth\"} 3"), "limited by max_concurrent:\n{text}");
    register(&s, "w1").await;
    register(&s, "w2").await;
    lease(&s, "w1").await;
    lease(&s, "w2").await;
    let text = metrics(&s).await;
    assert!(text.lines().any(|l| l == "tracker_study_trials{study=\"depth\",state=\"running\"} 2"), "{text}");
    assert!(text.lines().any(|l| l == "tracker_study_waiting_trials{study=\"depth\"} 1"), "{text}");
    call(&s, "studies/pause", json!({"name": "depth"})).await.ok();
    let text = metrics(&s).await;
    assert!(!text.contains("tracker_study_waiting_trials{study=\"depth\"}"), "{text}");
    assert!(text.lines().any(|l| l == "tracker_study_trials{study=\"depth\",state=\"running\"} 2"), "{text}");
}

#[tokio::test]
async fn metrics_show_trials_and_queue_depth_sqlite() {
    metrics_show_trials_and_queue_depth(Backend::Sqlite).await;
}

#[tokio::test]
async fn metrics_show_trials_and_queue_depth_postgres() {
    metrics_show_trials_and_queue_depth(Backend::Postgres).await;
}
