//! End to end, over real TCP on 127.0.0.1: the real tracker (in-process, a temp SQLite file, a
//! 2 s lease TTL) and real `worker` processes running a small python3 objective, under faults:
//! a worker killed with SIGKILL mid-trial, and a tracker restarted mid-study.
//!
//! The objective (`OBJECTIVE_PY`) trains "one step" per `STEP_SLEEP_S`, computes a value that
//! depends only on the params and the step ([`loss`] here computes the same), checkpoints
//! `{"step", "trained"}` atomically into `step-<s>/state.json`, and resumes from
//! `TRIAL_RESUME_DIR/state.json`. `trained` lists every (step, attempt) the trial went through, so
//! the final checkpoint shows whether an attempt really resumed from its predecessor's checkpoint.
//!
//! Every wait polls with a deadline and fails with the study's state and the tail of each
//! worker's log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use api::studies::TrialInfo;
use serde_json::{json, Value};
use tracker::artifacts::Artifacts;
use tracker::auth::Auth;
use tracker::store::{BackendUri, Store};
use tracker::studies::LeaseTiming;
use worker::{StudyDetail, TrackerClient};

const LEASE_TTL: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);
/// How long a study of these tests may take to finish; it takes seconds when all is well.
const STUDY_DEADLINE: Duration = Duration::from_secs(90);
/// How long workers may take to exit once the study finished (they ask every 2 s).
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
const METRIC: &str = "loss";
const MAX_RESOURCE: u64 = 9;

const OBJECTIVE_PY: &str = r#"
import json, math, os, shutil, sys, time

params = json.loads(os.environ["TRIAL_PARAMS"])
checkpoints = os.environ["TRIAL_CHECKPOINT_DIR"]
max_resource = int(os.environ["TRIAL_MAX_RESOURCE"])
attempt = int(os.environ["TRIAL_ATTEMPT"])
pause = float(os.environ.get("STEP_SLEEP_S", "0.15"))

pid_dir = os.environ.get("E2E_PID_DIR")
if pid_dir:
    name = "%s-%s-%s.pid" % (os.environ["STUDY_NAME"], os.environ["TRIAL_NUMBER"], attempt)
    with open(os.path.join(pid_dir, name + ".tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(pid_dir, name + ".tmp"), os.path.join(pid_dir, name))

state = {"step": 0, "trained": []}
if os.environ.get("TRIAL_RESUME_STEP"):
    with open(os.path.join(os.environ["TRIAL_RESUME_DIR"], "state.json")) as f:
        state = json.load(f)
    if state["step"] != int(os.environ["TRIAL_RESUME_STEP"]):
        print("resume step %s but the checkpoint is at step %s" % (os.environ["TRIAL_RESUME_STEP"], state["step"]), file=sys.stderr)
        sys.exit(3)

def loss(step):
    x = math.log10(params["lr"]) + 2.5
    return x * x + 1.0 / params["layers"] + 2.0 / step

for step in range(state["step"] + 1, max_resource + 1):
    time.sleep(pause)
    value = loss(step)
    state["step"] = step
    state["trained"].append([step, attempt])
    final = os.path.join(checkpoints, "step-%d" % step)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f)
    os.rename(tmp, final)
    print(json.dumps({"step": step, "value": value, "checkpoint": "step-%d" % step}), flush=True)
"#;

/// The objective of `OBJECTIVE_PY`, for checking the values the tracker recorded.
fn loss(params: &api::studies::Params, step: u64) -> f64 {
    let lr = params["lr"].as_f64().expect("lr is a number");
    let layers = params["layers"].as_f64().expect("layers is a number");
    let x = lr.log10() + 2.5;
    x * x + 1.0 / layers + 2.0 / step as f64
}

// ---------------------------------------------------------------------------------------------
// The tracker, in-process.

struct Tracker {
    addr: SocketAddr,
    uri: BackendUri,
    artifact_root: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Tracker {
    /// A fresh database and artifact root under `dir`, served on an ephemeral port.
    async fn start(dir: &Path) -> Tracker {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .try_init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let artifact_root = dir.join("artifacts");
        std::fs::create_dir_all(&artifact_root).expect("artifact root");
        let mut t = Tracker {
            addr: listener.local_addr().expect("local addr"),
            uri: BackendUri::Sqlite(dir.join("tracker.db")),
            artifact_root,
            shutdown: None,
            task: None,
        };
        t.serve(listener).await;
        t
    }

    /// Serves on `listener` with a freshly opened store: nothing in memory carries over.
    async fn serve(&mut self, listener: tokio::net::TcpListener) {
        let store = Store::open(&self.uri).await.expect("open the sqlite store");
        let artifacts = Artifacts::open(self.artifact_root.to_str().expect("utf-8 temp path")).expect("open the artifact root");
        let state = tracker::AppState::with_lease_timing(store, artifacts, Auth::default(), LeaseTiming { lease_ttl: LEASE_TTL });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.task = Some(tokio::spawn(tracker::serve(listener, tracker::router(state), async {
            let _ = rx.await;
        })));
        self.shutdown = Some(tx);
    }

    /// Stops the server and waits until it has let go of its connections (graceful shutdown).
    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(20), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("the tracker ended with an error: {e}"),
                Ok(Err(e)) => panic!("the tracker task panicked: {e}"),
                Err(_) => panic!("the tracker did not shut down within 20 s (graceful shutdown stuck on a connection?)"),
            }
        }
    }

    /// Serves again on the same port, retrying the bind for up to 10 s.
    async fn restart_on_same_port(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "rebind failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("could not bind {} again within 10 s: {e}", self.addr),
            }
        };
        self.serve(listener).await;
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self) -> TrackerClient {
        TrackerClient::new(&self.base()).expect("client")
    }

    async fn create_study(&self, spec: Value) {
        self.post("studies/create", json!({ "spec": spec })).await;
    }

    /// POSTs `body` to `/api/tracker/{path}` and expects a success.
    async fn post(&self, path: &str, body: Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/tracker/{path}", self.base()))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status}: {text}");
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker processes.

struct WorkerProc {
    id: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl WorkerProc {
    fn spawn(tracker: &Tracker, id: &str, root: &Path) -> WorkerProc {
        let work_dir = root.join("work").join(id);
        let log = root.join("logs").join(format!("{id}.log"));
        std::fs::create_dir_all(log.parent().unwrap()).expect("logs dir");
        let out = std::fs::File::create(&log).expect("worker log");
        let err = out.try_clone().expect("worker log");
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["--tracking-uri", &tracker.base(), "--worker-id", id, "--exit-when-done", "--stop-grace-s", "2", "--work-dir"])
            .arg(&work_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the worker binary");
        WorkerProc { id: id.to_owned(), child, log, status: None }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on a worker");
        }
        self.status
    }

    /// SIGKILL, and reap it.
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.status = Some(self.child.wait().expect("reap the worker"));
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).unwrap_or_default().contains(needle)
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A test's temp folder, tracker, workers and study, with the failure diagnostics.
struct Harness {
    dir: tempfile::TempDir,
    tracker: Tracker,
    client: TrackerClient,
    study: String,
    workers: Vec<WorkerProc>,
}

impl Harness {
    async fn new(study: &str) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let tracker = Tracker::start(dir.path()).await;
        let client = tracker.client();
        std::fs::create_dir_all(dir.path().join("pids")).expect("pid dir");
        std::fs::write(dir.path().join("objective.py"), OBJECTIVE_PY).expect("write the objective");
        Harness { dir, tracker, client, study: study.to_owned(), workers: Vec::new() }
    }

    fn pid_dir(&self) -> PathBuf {
        self.dir.path().join("pids")
    }

    /// Creates the study: `scheduler` and `max_trials` as given, a step every `step_sleep_s`.
    async fn create_study(&self, scheduler: Value, max_trials: u64, step_sleep_s: f64) {
        let spec = json!({
            "name": self.study,
            "objective": {"metric": METRIC, "direction": "minimize"},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": true}, "layers": {"type": "int", "low": 1, "high": 4}},
            "sampler": "random",
            "scheduler": scheduler,
            "max_trials": max_trials,
            "seed": 11,
            "run": {
                "command": ["python3", self.dir.path().join("objective.py").to_str().expect("utf-8 temp path")],
                "env": {"STEP_SLEEP_S": step_sleep_s.to_string(), "E2E_PID_DIR": self.pid_dir().to_str().expect("utf-8 temp path")},
            },
        });
        self.tracker.create_study(spec).await;
    }

    fn spawn_worker(&mut self, id: &str) {
        let w = WorkerProc::spawn(&self.tracker, id, self.dir.path());
        self.workers.push(w);
    }

    fn worker(&mut self, id: &str) -> &mut WorkerProc {
        self.workers.iter_mut().find(|w| w.id == id).expect("a worker of this test")
    }

    /// What went wrong, with context: the message, the study as last seen, and each worker's
    /// exit status and log tail.
    fn failure(&mut self, msg: &str, last: Option<&StudyDetail>) -> String {
        let mut out = format!("{msg}\n");
        if let Some(d) = last {
            out += &format!("study {} status {} counts {:?}\n", d.study.name, d.study.status, d.study.trial_counts);
            for t in &d.trials {
                out += &format!(
                    "  trial {} {} last_step {:?} attempt {} lost {} failures {} worker {:?} error {:?}\n",
                    t.number, t.state, t.last_step, t.attempt, t.lost, t.failures, t.worker_id, t.error
                );
            }
        }
        for w in &mut self.workers {
            let status = w.try_status();
            out += &format!("--- worker {} ({status:?}), last lines of {}:\n{}\n", w.id, w.log.display(), w.log_tail(25));
        }
        out
    }

    /// Polls the study until `done` holds for it, or fails after `timeout`. Tracker errors (it may
    /// be restarting) count as "not yet".
    async fn wait_study(&mut self, what: &str, timeout: Duration, done: impl Fn(&StudyDetail) -> bool) -> StudyDetail {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.client.get_study(&self.study).await {
                Ok(d) if done(&d) => return d,
                Ok(d) => last = Some(d),
                Err(e) => tracing::debug!(error = %e, "study get failed; polling on"),
            }
            if Instant::now() > deadline {
                let msg = format!("timed out after {timeout:?} waiting for {what}");
                panic!("{}", self.failure(&msg, last.as_ref()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_finished(&mut self) -> StudyDetail {
        self.wait_study("the study to finish", STUDY_DEADLINE, |d| d.study.status == "finished").await
    }

    /// Waits for every worker still running to exit, and checks that each exited 0 (except those
    /// in `killed`).
    async fn wait_workers_exit(&mut self, killed: &[&str], study: &StudyDetail) {
        let deadline = Instant::now() + EXIT_DEADLINE;
        while self.workers.iter_mut().any(|w| w.try_status().is_none()) {
            if Instant::now() > deadline {
                panic!("{}", self.failure("workers did not exit within 30 s of the study's end (--exit-when-done)", Some(study)));
            }
            tokio::time::sleep(POLL).await;
        }
        let bad: Vec<String> = self
            .workers
            .iter()
            .filter(|w| !killed.contains(&w.id.as_str()) && w.status.is_none_or(|s| !s.success()))
            .map(|w| format!("{} exited with {:?}", w.id, w.status))
            .collect();
        if !bad.is_empty() {
            panic!("{}", self.failure(&format!("workers failed: {bad:?}"), Some(study)));
        }
    }

    /// The steps a trial's last checkpoint says were trained, each with the attempt that trained
    /// it: `(step, attempt)`.
    async fn trained_steps(&self, t: &TrialInfo) -> Vec<(u64, u32)> {
        let dest = self.dir.path().join(format!("final-checkpoint-{}", t.number));
        let checkpoint = t.checkpoint.clone().unwrap_or_default();
        self.client.download_artifact_dir(&t.run_id, &checkpoint, &dest).await.unwrap_or_else(|e| panic!("download {checkpoint}: {e}"));
        let state: Value = serde_json::from_str(&std::fs::read_to_string(dest.join("state.json")).expect("state.json")).expect("json");
        state["trained"].as_array().expect("trained").iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap() as u32)).collect()
    }

    /// The objective's history of a trial, as (step, value) in the order the tracker returns.
    async fn history(&self, t: &TrialInfo) -> Vec<(i64, f64)> {
        let points = self.client.metric_history(&t.run_id, METRIC).await.expect("metric history");
        points.iter().map(|m| (m.step, m.value)).collect()
    }

    /// Checks a finished trial's objective history: steps `1..=last_step`, each exactly once, each
    /// with the value the objective computes for the trial's params (no other trial's, no stale
    /// attempt's). Returns value by step.
    async fn check_history(&mut self, t: &TrialInfo, study: &StudyDetail) -> BTreeMap<u64, f64> {
        let history = self.history(t).await;
        let mut steps: Vec<i64> = history.iter().map(|(s, _)| *s).collect();
        steps.sort_unstable();
        let last = t.last_step.unwrap_or(0) as i64;
        let expected: Vec<i64> = (1..=last).collect();
        if steps != expected {
            let msg = format!("trial {} ({}, last_step {:?}): history steps {steps:?}, expected each of 1..={last} once", t.number, t.state, t.last_step);
            panic!("{}", self.failure(&msg, Some(study)));
        }
        let mut by_step = BTreeMap::new();
        for (step, value) in history {
            let want = loss(&t.params, step as u64);
            if (value - want).abs() > 1e-9 * want.abs().max(1.0) {
                let msg = format!("trial {} step {step}: value {value}, but the objective gives {want} for {:?}", t.number, t.params);
                panic!("{}", self.failure(&msg, Some(study)));
            }
            by_step.insert(step as u64, value);
        }
        by_step
    }
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

fn asha() -> Value {
    json!({"kind": "asha", "min_resource": 1, "max_resource": MAX_RESOURCE, "reduction_factor": 3})
}

/// The checks every finished ASHA study of these tests must pass: every trial complete (at the
/// maximum resource, with its value there) or pruned at a milestone (1 or 3) where it was not
/// the best of the rung, and every history without gaps, duplicates or foreign values.
async fn check_asha_study(h: &mut Harness, d: &StudyDetail, max_trials: u64) -> usize {
    if d.trials.len() as u64 != max_trials {
        panic!("{}", h.failure(&format!("{} trials, expected {max_trials}", d.trials.len()), Some(d)));
    }
    let mut by_trial = BTreeMap::new();
    for t in &d.trials {
        let values = h.check_history(t, d).await;
        by_trial.insert(t.number, values);
    }
    let mut pruned = 0;
    for t in &d.trials {
        let ok = match t.state.as_str() {
            "complete" => t.last_step == Some(MAX_RESOURCE) && t.value.is_some_and(|v| (v - loss(&t.params, MAX_RESOURCE)).abs() < 1e-9),
            "pruned" => {
                pruned += 1;
                let m = t.last_step.unwrap_or(0);
                // ASHA (stopping form) stops a trial only when it is worse than the 1/eta quantile
                // of the trials that reached the rung before it, so never when it is the best of
                // all trials at that rung.
                let mine = by_trial[&t.number][&m];
                let best_other = by_trial.iter().filter(|(n, _)| **n != t.number).filter_map(|(_, v)| v.get(&m)).copied().fold(f64::INFINITY, f64::min);
                (m == 1 || m == 3) && mine > best_other
            }
            _ => false,
        };
        if !ok {
            let msg = format!("trial {} ended {} at step {:?} with value {:?}: not an ASHA outcome", t.number, t.state, t.last_step, t.value);
            panic!("{}", h.failure(&msg, Some(d)));
        }
    }
    let counts: u64 = ["complete", "pruned"].iter().filter_map(|s| d.study.trial_counts.get(*s)).sum();
    if counts != max_trials {
        panic!("{}", h.failure("trial counts do not add up to max_trials complete or pruned", Some(d)));
    }
    pruned
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Three workers run an ASHA study to its end: every trial complete or pruned at a milestone,
/// at least one pruned, histories exact, and every worker exits 0 when no work is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asha_study_with_three_workers_finishes() {
    let started = Instant::now();
    let mut h = Harness::new("e2e-asha").await;
    h.create_study(asha(), 9, 0.1).await;
    for id in ["w0", "w1", "w2"] {
        h.spawn_worker(id);
    }
    let d = h.wait_finished().await;
    h.wait_workers_exit(&[], &d).await;
    let pruned = check_asha_study(&mut h, &d, 9).await;
    if pruned == 0 {
        panic!("{}", h.failure("no trial was pruned: ASHA with eta 3 over 9 random trials should prune some", Some(&d)));
    }
    // The work was shared (not all three: a worker slow to start on a loaded machine may find
    // the study done).
    let busy = h.workers.iter().filter(|w| w.log_contains("leased a trial")).count();
    if busy < 2 {
        panic!("{}", h.failure(&format!("only {busy} worker(s) leased a trial"), Some(&d)));
    }
    eprintln!("asha_study_with_three_workers_finishes: {pruned} of 9 pruned, {:?}", started.elapsed());
}

/// A worker killed with SIGKILL mid-trial: its command dies with it, its lease expires, and the
/// trial resumes on another worker from its last checkpoint, ending with each step once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_trial_resumes_from_its_checkpoint_elsewhere() {
    let started = Instant::now();
    let mut h = Harness::new("e2e-kill").await;
    // FIFO: no trial is pruned before the victim has reached step 2.
    h.create_study(json!({"kind": "fifo", "max_resource": MAX_RESOURCE}), 5, 0.2).await;
    // The victim starts alone so that it surely gets a trial; the others join once it has.
    h.spawn_worker("victim");
    h.wait_study("the victim worker to lease a trial", Duration::from_secs(30), |d| {
        d.trials.iter().any(|t| t.worker_id.as_deref() == Some("victim") && t.state == "running")
    })
    .await;
    h.spawn_worker("w1");
    h.spawn_worker("w2");
    let d = h
        .wait_study("a trial of the victim worker to report step 2", Duration::from_secs(30), |d| {
            d.trials.iter().any(|t| t.worker_id.as_deref() == Some("victim") && t.state == "running" && t.last_step.is_some_and(|s| s >= 2))
        })
        .await;
    h.worker("victim").kill9();
    let t = d.trials.iter().find(|t| t.worker_id.as_deref() == Some("victim") && t.state == "running").expect("the victim's trial").clone();
    let (trial, attempt) = (t.number, t.attempt);
    eprintln!("killed the victim during trial {trial} attempt {attempt} at step >= {:?} ({:?} in)", t.last_step, started.elapsed());

    // Its command dies with it (PR_SET_PDEATHSIG), so nothing reports for the dead attempt.
    let pid_file = h.pid_dir().join(format!("{}-{trial}-{attempt}.pid", h.study));
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display())).trim().parse().expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_gone(pid) {
        if Instant::now() > deadline {
            panic!("{}", h.failure(&format!("the killed worker's command (pid {pid}) is still alive after 10 s"), Some(&d)));
        }
        tokio::time::sleep(POLL).await;
    }

    let d = h.wait_finished().await;
    h.wait_workers_exit(&["victim"], &d).await;
    for t in &d.trials {
        h.check_history(t, &d).await;
        if t.state != "complete" || t.last_step != Some(MAX_RESOURCE) {
            panic!("{}", h.failure(&format!("trial {} ended {} at {:?}; FIFO trials all complete", t.number, t.state, t.last_step), Some(&d)));
        }
    }
    let t = d.trials.iter().find(|t| t.number == trial).expect("the victim's trial").clone();
    if t.lost < 1 || t.attempt < 2 || t.worker_id.as_deref() == Some("victim") {
        panic!("{}", h.failure(&format!("trial {trial} should have been lost once and resumed: lost {} attempt {}", t.lost, t.attempt), Some(&d)));
    }
    // The final checkpoint: every step trained once, the dead attempt's steps by it and the rest
    // by a later attempt that resumed from its checkpoint (not from scratch).
    let trained = h.trained_steps(&t).await;
    let steps: Vec<u64> = trained.iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=MAX_RESOURCE).collect::<Vec<_>>(), "trained steps in the final checkpoint: {trained:?}");
    assert!(trained.iter().any(|p| p.1 == attempt), "the killed attempt's steps are kept: {trained:?}");
    assert!(trained.iter().any(|p| p.1 > attempt), "a later attempt finished the trial: {trained:?}");
    eprintln!("killed_worker_trial_resumes_from_its_checkpoint_elsewhere: trial {trial} lost {} attempt {}, {:?}", t.lost, t.attempt, started.elapsed());
}

/// `tracker worker drain` mid-trial: the drained agent stops its command at the next heartbeat
/// and releases the trial, which another worker resumes from its checkpoint; the drained agent
/// takes no other trial and still exits when the study is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_worker_hands_its_trial_to_another_from_its_checkpoint() {
    let mut h = Harness::new("e2e-drain").await;
    // Steps of 0.5 s: the trial is still running when the drain reaches it (heartbeats every 0.67 s).
    h.create_study(json!({"kind": "fifo", "max_resource": MAX_RESOURCE}), 3, 0.5).await;
    h.spawn_worker("drained");
    let d = h
        .wait_study("the drained worker to report step 2", Duration::from_secs(30), |d| {
            d.trials.iter().any(|t| t.worker_id.as_deref() == Some("drained") && t.state == "running" && t.last_step.is_some_and(|s| s >= 2))
        })
        .await;
    let t = d.trials.iter().find(|t| t.worker_id.as_deref() == Some("drained") && t.state == "running").expect("the drained worker's trial").clone();
    h.tracker.post("workers/drain", json!({"worker_id": "drained"})).await;
    h.wait_study("the drained worker to release its trial", Duration::from_secs(15), |d| d.trials.iter().all(|x| x.worker_id.as_deref() != Some("drained"))).await;
    h.spawn_worker("w1");

    let d = h.wait_finished().await;
    h.wait_workers_exit(&[], &d).await;
    for x in &d.trials {
        h.check_history(x, &d).await;
        if x.state != "complete" || x.last_step != Some(MAX_RESOURCE) {
            panic!("{}", h.failure(&format!("trial {} ended {} at {:?}; FIFO trials all complete", x.number, x.state, x.last_step), Some(&d)));
        }
    }
    let done = d.trials.iter().find(|x| x.number == t.number).expect("the preempted trial").clone();
    if done.lost != 1 || done.attempt != t.attempt + 1 || done.failures != 0 {
        panic!("{}", h.failure(&format!("trial {} should have been released once and resumed: {done:?}", t.number), Some(&d)));
    }
    // Every step trained once: the preempted attempt's steps by it, the rest by the next one,
    // which resumed from the checkpoint instead of starting over.
    let trained = h.trained_steps(&done).await;
    assert_eq!(trained.iter().map(|p| p.0).collect::<Vec<_>>(), (1..=MAX_RESOURCE).collect::<Vec<_>>(), "{trained:?}");
    assert!(trained.iter().any(|p| p.1 == t.attempt) && trained.iter().any(|p| p.1 > t.attempt), "{trained:?}");
    assert!(d.trials.iter().all(|x| x.number == t.number || x.attempt == 1), "the drained worker started nothing else");
    assert!(h.worker("drained").log_contains("trial preempted; releasing it"), "{}", h.worker("drained").log_tail(20));
}

/// The tracker restarts mid-study (a fresh store on the same SQLite file, the same port): the
/// workers ride it out and the study finishes with exact histories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_restart_mid_study_is_ridden_out() {
    let started = Instant::now();
    let mut h = Harness::new("e2e-restart").await;
    h.create_study(asha(), 9, 0.15).await;
    for id in ["w0", "w1", "w2"] {
        h.spawn_worker(id);
    }
    h.wait_study("trials to be running and reporting", Duration::from_secs(30), |d| {
        d.trials.iter().filter(|t| t.last_step.is_some()).count() >= 2 && d.trials.iter().any(|t| t.state == "running")
    })
    .await;
    h.tracker.stop().await;
    eprintln!("tracker stopped ({:?} in)", started.elapsed());
    // A deliberate outage: longer than the client's own retries (1.5 s), so the agent's retry
    // loop has to ride it out, and longer than the lease TTL, so the leases running at the stop
    // expire and their trials resume from their checkpoints once the tracker is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.tracker.restart_on_same_port().await;
    eprintln!("tracker serving again ({:?} in)", started.elapsed());

    let d = h.wait_finished().await;
    h.wait_workers_exit(&[], &d).await;
    check_asha_study(&mut h, &d, 9).await;
    // The outage was felt (and ridden out) by at least one worker.
    if !h.workers.iter().any(|w| w.log_contains("tracker unavailable") || w.log_contains("heartbeat failed")) {
        panic!("{}", h.failure("no worker noticed the tracker's outage", Some(&d)));
    }
    let lost: u32 = d.trials.iter().map(|t| t.lost).sum();
    eprintln!("tracker_restart_mid_study_is_ridden_out: {lost} attempts lost, {:?}", started.elapsed());
}

/// The built-in `korean-lora` trainer runs a study's trials: two workers, ASHA over the learning
/// rate and rank, real LoRA training on the built-in base. Every trial ends complete or pruned,
/// each report is the objective (`eval_loss`) logged at a milestone, and a completed trial's run
/// holds its adapter in PEFT format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_lora_trainer_runs_a_study() {
    let mut h = Harness::new("e2e-korean-lora").await;
    let spec = json!({
        "name": h.study,
        "objective": {"metric": "eval_loss", "direction": "minimize"},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 2e-2, "log": true}, "rank": {"type": "categorical", "choices": [2, 4]}},
        "sampler": "random",
        "scheduler": {"kind": "asha", "min_resource": 2, "max_resource": 4, "reduction_factor": 2},
        "max_trials": 3,
        "seed": 5,
        "run": {
            "trainer": "korean-lora",
            "config": {
                "data": {"tasks": ["native"], "train_per_task": 64, "test_per_task": 4, "max_seq_len": 48},
                "lora": {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"]},
                "train": {"batch_size": 4, "warmup_steps": 1},
            },
        },
        "register": {"model": "e2e-ko-lora", "alias": "production"},
    });
    h.tracker.create_study(spec).await;
    h.spawn_worker("lora0");
    h.spawn_worker("lora1");
    let d = h.wait_study("the korean-lora study to finish", Duration::from_secs(240), |d| d.study.status == "finished").await;
    h.wait_workers_exit(&[], &d).await;
    let mut completed = 0;
    for t in &d.trials {
        let history = h.client.metric_history(&t.run_id, "eval_loss").await.expect("eval_loss history");
        let steps: Vec<i64> = history.iter().map(|m| m.step).collect();
        match t.state.as_str() {
            "complete" => {
                completed += 1;
                if steps != [2, 4] || t.value != history.last().map(|m| m.value) {
                    panic!("{}", h.failure(&format!("trial {}: eval_loss steps {steps:?}, value {:?}", t.number, t.value), Some(&d)));
                }
                let files = h.client.list_artifacts_recursive(&t.run_id, "adapter").await.expect("adapter artifacts");
                let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                if !(names.contains(&"adapter/adapter_config.json") && names.contains(&"adapter/adapter_model.safetensors")) {
                    panic!("{}", h.failure(&format!("trial {}: adapter artifacts {names:?}", t.number), Some(&d)));
                }
            }
            "pruned" if steps == [2] => {}
            _ => panic!("{}", h.failure(&format!("trial {} ended {} with eval_loss steps {steps:?}", t.number, t.state), Some(&d))),
        }
    }
    if completed == 0 {
        panic!("{}", h.failure("no trial completed", Some(&d)));
    }

    // The best trial's adapter became version 1 of the model and holds `production`; served from
    // there, it answers.
    let best = d.study.best.as_ref().expect("a best trial");
    // Registered just after the study's last transaction commits: wait for it.
    let d = h.wait_study("the best trial to be registered", Duration::from_secs(30), |d| d.study.registered.is_some()).await;
    let registered = d.study.registered.clone().expect("registered");
    assert_eq!((registered.model.as_str(), registered.version.as_str(), registered.trial), ("e2e-ko-lora", "1", best.number), "{registered:?}");
    assert_eq!(registered.promotion, "promoted to alias 'production'");
    let version = h.client.get_model_version_by_alias("e2e-ko-lora", "production").await.expect("the alias resolves");
    assert_eq!((version.version.as_str(), version.run_id.as_str()), ("1", best.run_id.as_str()));
    let config = worker::serve::ServeConfig {
        model: "models:/e2e-ko-lora@production".parse().expect("model uri"),
        base: None,
        cache_dir: h.dir.path().join("serve-cache"),
        poll: Duration::from_secs(5),
        max_concurrent: 1,
    };
    let server = worker::serve::Server::start(h.client.clone(), config).await.expect("serving the registered adapter starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/generate", listener.local_addr().expect("addr"));
    tokio::spawn(worker::serve::run(server, listener, std::future::pending()));
    let reply: Value = reqwest::Client::new()
        .post(url)
        .json(&json!({"prompt": "하나, 둘, 셋 다음은?", "max_new_tokens": 8}))
        .send()
        .await
        .expect("generate")
        .json()
        .await
        .expect("json reply");
    assert_eq!(reply["model_version"], "1", "{reply}");
    assert!(reply["tokens_generated"].as_u64().is_some_and(|n| n <= 8), "{reply}");
}
