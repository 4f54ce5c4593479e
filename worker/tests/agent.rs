//! The agent and its exec trainer against the real tracker (MLflow API, artifacts) with a small
//! fake of the lease protocol in front of it (`/api/tracker/...`), so the agent's side of the
//! protocol is pinned down independently of the tracker's scheduling. The end-to-end study tests
//! with the real protocol live with the tracker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::studies::{
    Assignment, Command, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseResponse, Objective, RegisterWorkerResponse, ReleaseRequest,
    ReportRequest, ReportResponse, Resume, RunSpec, TrialInfo, WorkerInfo,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use worker::agent::{Agent, AgentConfig};
use worker::TrackerClient;

type Decide = Box<dyn Fn(&ReportRequest) -> Result<&'static str, StatusCode> + Send + Sync>;

/// What the fake protocol hands out and what it was told.
#[derive(Default)]
struct Protocol {
    queue: VecDeque<Assignment>,
    heartbeat_commands: Vec<Command>,
    decide: Option<Decide>,
    reports: Vec<ReportRequest>,
    completes: Vec<CompleteRequest>,
    fails: Vec<FailRequest>,
    releases: Vec<ReleaseRequest>,
    heartbeats: usize,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<Protocol>>);

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut Protocol) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

fn trial_info(n: u64) -> TrialInfo {
    TrialInfo {
        number: n,
        run_id: String::new(),
        state: "complete".into(),
        params: BTreeMap::new(),
        value: None,
        last_step: None,
        attempt: 1,
        worker_id: None,
        checkpoint: None,
        failures: 0,
        lost: 0,
        error: None,
    }
}

fn fake_router(fake: Fake) -> Router {
    async fn register(Json(req): Json<Value>) -> Json<RegisterWorkerResponse> {
        let worker = WorkerInfo {
            worker_id: req["worker_id"].as_str().unwrap_or_default().into(),
            status: "active".into(),
            resources: req["resources"].clone(),
            labels: BTreeMap::new(),
            last_seen: 0,
            quick_failures: 0,
        };
        Json(RegisterWorkerResponse { worker, heartbeat_s: 0.2, lease_ttl_s: 5.0 })
    }
    async fn lease(State(f): State<Fake>) -> Json<LeaseResponse> {
        let assignment = f.with(|p| p.queue.pop_front());
        let more_work = assignment.is_some();
        Json(LeaseResponse { assignment, reason: None, more_work, retry_after_s: 0.05 })
    }
    async fn heartbeat(State(f): State<Fake>, Json(_req): Json<HeartbeatRequest>) -> Json<HeartbeatResponse> {
        Json(f.with(|p| {
            p.heartbeats += 1;
            HeartbeatResponse { commands: std::mem::take(&mut p.heartbeat_commands) }
        }))
    }
    async fn trial_call(State(f): State<Fake>, Path((_study, n, action)): Path<(String, u64, String)>, Json(body): Json<Value>) -> Result<Json<Value>, StatusCode> {
        f.with(|p| match action.as_str() {
            "report" => {
                let req: ReportRequest = serde_json::from_value(body).map_err(|_| StatusCode::BAD_REQUEST)?;
                let decision = p.decide.as_ref().map_or(Ok("continue"), |d| d(&req))?;
                p.reports.push(req);
                Ok(Json(json!(ReportResponse { decision: decision.into(), next_milestone: None, state: "running".into() })))
            }
            "complete" => {
                p.completes.push(serde_json::from_value(body).map_err(|_| StatusCode::BAD_REQUEST)?);
                Ok(Json(json!(trial_info(n))))
            }
            "fail" => {
                p.fails.push(serde_json::from_value(body).map_err(|_| StatusCode::BAD_REQUEST)?);
                Ok(Json(json!(trial_info(n))))
            }
            "release" => {
                p.releases.push(serde_json::from_value(body).map_err(|_| StatusCode::BAD_REQUEST)?);
                Ok(Json(json!(trial_info(n))))
            }
            _ => Err(StatusCode::NOT_FOUND),
        })
    }
    Router::new()
        .route("/api/tracker/workers/register", post(register))
        .route("/api/tracker/workers/lease", post(lease))
        .route("/api/tracker/workers/heartbeat", post(heartbeat))
        .route("/api/tracker/studies/{study}/trials/{n}/{action}", post(trial_call))
        .with_state(fake)
}

/// The real tracker behind the fake protocol routes, on `127.0.0.1:0`; stops when dropped.
struct Server {
    base: String,
    fake: Fake,
    client: TrackerClient,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn start() -> Server {
    use tracker::store::{BackendUri, Store};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&BackendUri::Sqlite(dir.path().join("mlflow.db"))).await.expect("open sqlite store");
    let artifacts = tracker::artifacts::Artifacts::open(dir.path().join("artifacts").to_str().expect("utf-8 temp path")).expect("artifact root");
    let state = tracker::AppState::new(store, artifacts, tracker::auth::Auth::default());
    let fake = Fake(Arc::default());
    // The fake's routes win; everything else (MLflow API, artifacts) is the real tracker's.
    let app = fake_router(fake.clone()).fallback_service(tracker::router(state));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tracker::serve(listener, app, async {
        let _ = rx.await;
    }));
    let client = TrackerClient::new(&base).expect("client");
    Server { base, fake, client, shutdown: Some(tx), _dir: dir }
}

/// A leased trial of a fresh run that runs `sh -c script`.
async fn assignment(server: &Server, trial: u64, script: &str) -> Assignment {
    let exp = server.client.get_or_create_experiment("study-s").await.expect("experiment");
    let run = server.client.create_run(&exp.experiment_id, Some(&format!("trial-{trial}")), [("study", "s")]).await.expect("run");
    Assignment {
        study: "s".into(),
        trial,
        run_id: run.info.run_id,
        experiment_id: exp.experiment_id,
        attempt: 1,
        lease_id: format!("lease-{trial}"),
        params: BTreeMap::from([("lr".to_owned(), json!(0.01))]),
        resume: None,
        last_step: None,
        next_milestone: Some(1),
        max_resource: Some(4),
        objective: Objective { metric: "loss".into(), direction: "minimize".into() },
        run: RunSpec { command: Some(vec!["sh".into(), "-c".into(), script.into()]), ..RunSpec::default() },
        heartbeat_s: 0.2,
    }
}

fn agent(server: &Server, work_dir: &std::path::Path) -> Agent {
    let config = AgentConfig {
        worker_id: "test-0".into(),
        study: None,
        work_dir: work_dir.to_owned(),
        exit_when_done: true,
        stop_grace: Duration::from_secs(2),
        labels: BTreeMap::new(),
        resources: json!({}),
        tracking_uri: server.base.clone(),
        tracking_token: None,
    };
    Agent::new(config, server.client.clone()).expect("agent")
}

async fn run_to_end(agent: &Agent) {
    tokio::time::timeout(Duration::from_secs(60), agent.run(CancellationToken::new())).await.expect("agent finished in time").expect("agent ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_reports_checkpoints_and_complete() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let script = r#"
        set -e
        test "$TRIAL_NUMBER" = 3 && test "$STUDY_NAME" = s && test -n "$MLFLOW_RUN_ID" && test "$TRIAL_MAX_RESOURCE" = 4
        test "$(cat "$TRIAL_PARAMS_FILE" | tr -d ' \n')" = '{"lr":0.01}'
        mkdir -p "$TRIAL_CHECKPOINT_DIR/ck/sub"
        echo weights > "$TRIAL_CHECKPOINT_DIR/ck/sub/w.txt"
        echo '{"step": 1, "value": 0.5, "checkpoint": "ck", "metrics": {"aux": 2.5}}'
        echo 'epoch 1 done'
        echo '{"step": 1, "value": 0.45}'
        echo "$TRIAL_PARAMS" >&2
        echo '{"step": 2, "value": 0.4}'
    "#;
    let a = assignment(&server, 3, script).await;
    let run_id = a.run_id.clone();
    server.fake.with(|p| p.queue.push_back(a));
    run_to_end(&agent(&server, work.path())).await;

    let (reports, completes, fails) = server.fake.with(|p| (p.reports.clone(), p.completes.clone(), p.fails.clone()));
    assert!(fails.is_empty(), "{fails:?}");
    let got: Vec<_> = reports.iter().map(|r| (r.step, r.value, r.checkpoint.clone(), r.log_metric, r.lease_id.as_str())).collect();
    assert_eq!(got, vec![(1, 0.5, Some("checkpoints/step-1".to_owned()), true, "lease-3"), (2, 0.4, None, true, "lease-3")], "a repeated step is skipped");
    assert_eq!(completes, vec![CompleteRequest { lease_id: "lease-3".into(), value: None }]);

    let files = server.client.list_artifacts_recursive(&run_id, "checkpoints").await.unwrap();
    assert_eq!(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), vec!["checkpoints/step-1/sub/w.txt"]);
    let aux = server.client.metric_history(&run_id, "aux").await.unwrap();
    assert_eq!(aux.iter().map(|m| (m.step, m.value)).collect::<Vec<_>>(), vec![(1, 2.5)]);
    assert!(work.path().join("s/trial-3/attempt-1/params.json").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_fails_with_the_stderr_tail() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let a = assignment(&server, 0, "echo '{\"step\": 1, \"value\": 1}'; echo 'ValueError: boom' >&2; exit 3").await;
    server.fake.with(|p| p.queue.push_back(a));
    run_to_end(&agent(&server, work.path())).await;
    let (reports, completes, fails) = server.fake.with(|p| (p.reports.len(), p.completes.len(), p.fails.clone()));
    assert_eq!((reports, completes, fails.len()), (1, 0, 1));
    assert!(fails[0].error.starts_with("exit code 3"), "{}", fails[0].error);
    assert!(fails[0].error.contains("ValueError: boom"), "{}", fails[0].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_decision_kills_the_command_and_ends_the_trial() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    // Reports forever; only the stop decision ends it.
    let a = assignment(&server, 1, "i=1; while true; do echo \"{\\\"step\\\": $i, \\\"value\\\": 1}\"; i=$((i+1)); sleep 0.05; done").await;
    server.fake.with(|p| {
        p.queue.push_back(a);
        p.decide = Some(Box::new(|r| Ok(if r.step >= 3 { "stop" } else { "continue" })));
    });
    let started = std::time::Instant::now();
    run_to_end(&agent(&server, work.path())).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let (steps, completes, fails, releases) =
        server.fake.with(|p| (p.reports.iter().map(|r| r.step).collect::<Vec<_>>(), p.completes.len(), p.fails.len(), p.releases.len()));
    assert_eq!(steps, vec![1, 2, 3]);
    assert_eq!((completes, fails, releases), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_ends_the_trial_silently() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let a = assignment(&server, 2, "echo '{\"step\": 1, \"value\": 1}'; sleep 30").await;
    server.fake.with(|p| {
        p.queue.push_back(a);
        p.decide = Some(Box::new(|_| Err(StatusCode::CONFLICT)));
    });
    let started = std::time::Instant::now();
    run_to_end(&agent(&server, work.path())).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the command was not stopped");
    assert_eq!(server.fake.with(|p| (p.completes.len(), p.fails.len(), p.releases.len())), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_stop_command_ends_the_trial() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let a = assignment(&server, 4, "sleep 30").await;
    server.fake.with(|p| {
        p.heartbeat_commands.push(Command { lease_id: a.lease_id.clone(), action: "stop".into(), reason: "study stopped".into() });
        p.queue.push_back(a);
    });
    let started = std::time::Instant::now();
    run_to_end(&agent(&server, work.path())).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the command was not stopped");
    assert_eq!(server.fake.with(|p| (p.heartbeats > 0, p.completes.len(), p.fails.len(), p.releases.len())), (true, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_preempt_command_stops_the_command_and_releases_the_trial() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let a = assignment(&server, 5, "echo '{\"step\": 1, \"value\": 1}'; sleep 30").await;
    server.fake.with(|p| {
        p.heartbeat_commands.push(Command { lease_id: a.lease_id.clone(), action: "preempt".into(), reason: "worker 'w' is draining".into() });
        p.queue.push_back(a);
    });
    let started = std::time::Instant::now();
    run_to_end(&agent(&server, work.path())).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the command was not stopped");
    let (completes, fails, releases) = server.fake.with(|p| (p.completes.len(), p.fails.len(), p.releases.clone()));
    assert_eq!((completes, fails), (0, 0));
    assert_eq!(releases, vec![ReleaseRequest { lease_id: "lease-5".into(), reason: "preempted: worker 'w' is draining".into() }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_logged_objective_is_forwarded_and_resume_is_downloaded() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    // The checkpoint of an earlier attempt, and the objective points it logged.
    let mut a = assignment(&server, 5, "").await;
    let src = work.path().join("src.txt");
    std::fs::write(&src, "state").unwrap();
    server.client.upload_artifact(&a.run_id, &src, "checkpoints/step-2/nested/state.txt").await.unwrap();
    for step in 1..=2 {
        server.client.log_metric(&a.run_id, "loss", 1.0 / step as f64, step).await.unwrap();
    }
    a.resume = Some(Resume { checkpoint: "checkpoints/step-2".into(), step: 2 });
    a.last_step = Some(2);
    a.attempt = 2;
    // The command checks its resume folder, then logs nothing itself for a while: the test logs
    // the objective "through MLflow" on its behalf, as `mlflow.log_metric` would.
    let script = r#"
        test "$(cat "$TRIAL_RESUME_DIR/nested/state.txt")" = state && test "$TRIAL_RESUME_STEP" = 2 || exit 7
        sleep 1.5
    "#;
    a.run.command = Some(vec!["sh".into(), "-c".into(), script.into()]);
    let run_id = a.run_id.clone();
    server.fake.with(|p| p.queue.push_back(a));
    let agent = agent(&server, work.path());
    let logger = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for step in 3..=4 {
            server.client.log_metric(&run_id, "loss", 0.1 * step as f64, step).await.unwrap();
        }
    };
    tokio::join!(run_to_end(&agent), logger);

    let (reports, completes, fails) = server.fake.with(|p| (p.reports.clone(), p.completes.len(), p.fails.clone()));
    assert!(fails.is_empty(), "{fails:?}");
    let got: Vec<_> = reports.iter().map(|r| (r.step, r.log_metric, r.checkpoint.is_none())).collect();
    assert_eq!(got, vec![(3, false, true), (4, false, true)], "steps up to the resume step are not forwarded again");
    assert_eq!(completes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_command_and_releases_the_trial() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let pid_file = work.path().join("pid");
    let script = format!("echo $$ > {}; echo '{{\"step\": 1, \"value\": 1}}'; sleep 30", pid_file.display());
    let a = assignment(&server, 6, &script).await;
    server.fake.with(|p| p.queue.push_back(a));
    let agent = agent(&server, work.path());
    let shutdown = CancellationToken::new();
    let trigger = async {
        while server.fake.with(|p| p.reports.is_empty()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(20), agent.run(shutdown.clone())), trigger);
    result.expect("agent stopped in time").expect("agent ran");
    let releases = server.fake.with(|p| p.releases.clone());
    assert_eq!(releases, vec![ReleaseRequest { lease_id: "lease-6".into(), reason: "worker shutting down".into() }]);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: signal 0 only checks whether the process exists.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the command survived the shutdown");
}
