//! The exec trainer: runs the study's `run.command` as a child process and turns its stdout into
//! reports.
//!
//! # The command's contract
//!
//! Environment (on top of the worker's own and the study's `run.env`):
//!
//! | variable | value |
//! |---|---|
//! | `TRIAL_PARAMS` | the params as a JSON object |
//! | `TRIAL_DIR` | `<work dir>/<study>/trial-<n>/attempt-<a>`, the attempt's own folder |
//! | `TRIAL_PARAMS_FILE` | `<attempt dir>/params.json`, the same object |
//! | `TRIAL_NUMBER`, `TRIAL_ATTEMPT`, `STUDY_NAME` | the trial number, the attempt (from 1), the study |
//! | `TRIAL_CHECKPOINT_DIR` | `<attempt dir>/checkpoints`, created, for checkpoints |
//! | `TRIAL_RESUME_DIR`, `TRIAL_RESUME_STEP` | when resuming: the downloaded checkpoint folder and its step |
//! | `TRIAL_MAX_RESOURCE`, `TRIAL_NEXT_MILESTONE` | when the scheduler set them: train up to / report at |
//! | `MLFLOW_TRACKING_URI`, `MLFLOW_RUN_ID`, `MLFLOW_EXPERIMENT_ID` | the trial's run, for `mlflow` |
//! | `MLFLOW_TRACKING_TOKEN` | the worker's token, when it has one |
//!
//! Stdout is a JSON-lines channel: a line that is a JSON object with a numeric `step` and
//! `value` is a report, e.g.
//!
//! ```text
//! {"step": 9, "value": 0.42, "checkpoint": "step-9", "metrics": {"train_loss": 0.40, "lr": 0.0003}}
//! ```
//!
//! `checkpoint` (optional) is a file or folder relative to `TRIAL_CHECKPOINT_DIR`, complete on
//! disk before the line is printed; it is uploaded to the run's `checkpoints/step-<step>/` (a
//! folder's contents beneath it, a file by its name) and a resumed attempt finds the same layout
//! in `TRIAL_RESUME_DIR`. `metrics` (optional) are logged to the run at that step. Every other line
//! is only logged. Exit code 0 completes the trial; anything else fails the attempt, with the exit
//! code and the last lines of stderr as the error.
//!
//! The command runs in the worker's working directory (relative paths in `run.command` resolve as
//! they do for whoever started the worker).
//!
//! The child runs in its own process group, which is signalled as a whole: SIGTERM when the trial
//! must stop, SIGKILL after the grace period. It is also killed (`PR_SET_PDEATHSIG`) when the
//! worker dies, even by SIGKILL. Grandchildren that leave the process group survive a worker
//! SIGKILL; that needs a cgroup, which is the container runtime's job.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::trainer::{Decision, Reporter, TrainOutcome, Trainer, TrialContext, TrialReport};

/// Lines of stderr kept for the failure message.
const STDERR_TAIL_LINES: usize = 40;
/// How long, after the command exited, its last reports may take to reach the tracker (checkpoint
/// uploads included) before they are abandoned. Also bounds a stray process that keeps the pipe
/// open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `run.command` of the assignment. See the module docs for the contract.
#[derive(Debug, Clone, Default)]
pub struct ExecTrainer;

#[async_trait::async_trait]
impl Trainer for ExecTrainer {
    async fn train(&self, ctx: &TrialContext, reporter: Reporter, cancel: CancellationToken) -> anyhow::Result<TrainOutcome> {
        let a = &ctx.assignment;
        let argv = a.run.command.as_deref().filter(|c| !c.is_empty()).context("the study's `run.command` is empty")?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            // The worker's own working directory, so a relative path in `run.command` resolves
            // as it does for whoever started the worker; the trial's folder is `TRIAL_DIR`.
            .envs(trial_env(ctx))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that stopping it reaches what it started (data loader workers,
            // a shell's children), and a Ctrl-C on the worker's terminal reaches the worker only:
            // the worker then stops the trial in order.
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        // Spawned from this async task, on a runtime worker thread: PR_SET_PDEATHSIG fires when
        // the *thread* that forked exits, and runtime workers live as long as the runtime. Never
        // spawn from `spawn_blocking`, whose threads exit when idle and would kill the command.
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Ok(TrainOutcome::Failed(format!("cannot start {:?}: {e}", argv[0]))),
        };
        let pgid = child.id().context("the command has no pid")? as libc::pid_t;
        let label = format!("{}/{}", a.study, a.trial);
        tracing::info!(trial = %label, pid = pgid, command = ?argv, "command started");

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let stderr = child.stderr.take().context("stderr not piped")?;
        let stderr_task = tokio::spawn(read_stderr(stderr, label.clone(), Arc::clone(&tail)));
        let stdout = child.stdout.take().context("stdout not piped")?;
        let stdout_task = tokio::spawn(read_stdout(stdout, label.clone(), ctx.checkpoint_dir.clone(), reporter));

        let status = tokio::select! {
            status = child.wait() => status.context("waiting for the command")?,
            () = cancel.cancelled() => {
                terminate(&mut child, pgid, ctx.stop_grace, &label).await;
                signal_group(pgid, libc::SIGKILL);
                stdout_task.abort();
                stderr_task.abort();
                return Ok(TrainOutcome::Cancelled);
            }
        };
        // Whatever it left running in its group goes with it.
        signal_group(pgid, libc::SIGKILL);
        tracing::info!(trial = %label, %status, "command exited");

        // The reports it printed before exiting must reach the tracker before `complete`.
        tokio::select! {
            r = tokio::time::timeout(DRAIN_TIMEOUT, stdout_task) => {
                if r.is_err() {
                    tracing::warn!(trial = %label, "stdout still open {DRAIN_TIMEOUT:?} after the command exited; dropping the rest");
                }
            }
            () = cancel.cancelled() => return Ok(TrainOutcome::Cancelled),
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), stderr_task).await;

        if status.success() {
            Ok(TrainOutcome::Succeeded)
        } else {
            let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            Ok(TrainOutcome::Failed(failure_message(status, tail.iter().map(String::as_str))))
        }
    }
}

/// The command's environment on top of the worker's own: `run.env`, then the trial's variables
/// (which win, so a study cannot point a trial at another run by accident).
pub(crate) fn trial_env(ctx: &TrialContext) -> BTreeMap<String, String> {
    let a = &ctx.assignment;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env = a.run.env.clone();
    let params = serde_json::to_string(&a.params).unwrap_or_else(|_| "{}".into());
    env.insert("TRIAL_PARAMS".into(), params);
    env.insert("TRIAL_DIR".into(), path(&ctx.attempt_dir));
    env.insert("TRIAL_PARAMS_FILE".into(), path(&ctx.params_file));
    env.insert("TRIAL_NUMBER".into(), a.trial.to_string());
    env.insert("TRIAL_ATTEMPT".into(), a.attempt.to_string());
    env.insert("STUDY_NAME".into(), a.study.clone());
    env.insert("TRIAL_CHECKPOINT_DIR".into(), path(&ctx.checkpoint_dir));
    if let (Some(dir), Some(resume)) = (&ctx.resume_dir, &a.resume) {
        env.insert("TRIAL_RESUME_DIR".into(), path(dir));
        env.insert("TRIAL_RESUME_STEP".into(), resume.step.to_string());
    }
    if let Some(m) = a.max_resource {
        env.insert("TRIAL_MAX_RESOURCE".into(), m.to_string());
    }
    if let Some(m) = a.next_milestone {
        env.insert("TRIAL_NEXT_MILESTONE".into(), m.to_string());
    }
    env.insert("MLFLOW_TRACKING_URI".into(), ctx.tracking_uri.clone());
    env.insert("MLFLOW_RUN_ID".into(), a.run_id.clone());
    env.insert("MLFLOW_EXPERIMENT_ID".into(), a.experiment_id.clone());
    if let Some(token) = &ctx.tracking_token {
        env.insert("MLFLOW_TRACKING_TOKEN".into(), token.clone());
    }
    env
}

/// A line of the command's stdout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StdoutLine {
    /// Anything that is not a report: only logged.
    Text,
    /// A report. `checkpoint` is relative to the checkpoint folder and checked not to leave it.
    Report { step: u64, value: f64, checkpoint: Option<PathBuf>, metrics: BTreeMap<String, f64>, warnings: Vec<String> },
    /// A JSON object with `step` and `value` that cannot be a report; the reason is logged.
    Invalid(String),
}

/// Reads one stdout line (without its line break).
pub(crate) fn parse_line(line: &str) -> StdoutLine {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return StdoutLine::Text;
    }
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(trimmed) else {
        return StdoutLine::Text;
    };
    let (Some(step), Some(value)) = (obj.get("step"), obj.get("value")) else {
        return StdoutLine::Text;
    };
    let Some(step) = step.as_u64().or_else(|| step.as_f64().filter(|s| *s >= 0.0 && s.fract() == 0.0 && *s < 2f64.powi(53)).map(|s| s as u64)) else {
        return StdoutLine::Invalid(format!("`step` must be a non-negative integer, got {step}"));
    };
    let Some(value) = value.as_f64() else {
        return StdoutLine::Invalid(format!("`value` must be a number, got {value}"));
    };
    let mut warnings = Vec::new();
    let checkpoint = match obj.get("checkpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => match relative_inside(p) {
            Some(p) => Some(p),
            None => {
                warnings.push(format!("`checkpoint` {p:?} must be a relative path inside TRIAL_CHECKPOINT_DIR; ignored"));
                None
            }
        },
        Some(other) => {
            warnings.push(format!("`checkpoint` must be a string, got {other}; ignored"));
            None
        }
    };
    let mut metrics = BTreeMap::new();
    match obj.get("metrics") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v.as_f64() {
                    Some(x) => {
                        metrics.insert(k.clone(), x);
                    }
                    None => warnings.push(format!("metric `{k}` must be a number, got {v}; ignored")),
                }
            }
        }
        Some(other) => warnings.push(format!("`metrics` must be an object of numbers, got {other}; ignored")),
    }
    StdoutLine::Report { step, value, checkpoint, metrics, warnings }
}

/// `p` as a relative path with no `..`, `/` or prefix components, or `None`.
fn relative_inside(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The error sent with `fail`: how it ended, then the stderr tail.
pub(crate) fn failure_message<'a>(status: ExitStatus, tail: impl Iterator<Item = &'a str>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    let mut msg = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("exited: {status}"),
    };
    let lines: Vec<&str> = tail.collect();
    if !lines.is_empty() {
        msg.push_str("\nstderr (last lines):\n");
        msg.push_str(&lines.join("\n"));
    }
    msg
}

/// Logs stdout and hands its reports to the reporter, in order. After the trial ends the rest is
/// only logged (and drained, so the command never blocks on a full pipe).
async fn read_stdout(stdout: impl AsyncRead + Unpin, label: String, checkpoint_dir: PathBuf, reporter: Reporter) {
    let mut lines = Lines::new(stdout);
    let mut ended = false;
    while let Some(line) = lines.next().await {
        tracing::info!(target: "trial::stdout", trial = %label, "{line}");
        match parse_line(&line) {
            StdoutLine::Report { .. } if ended => {}
            StdoutLine::Report { step, value, checkpoint, metrics, warnings } => {
                for w in warnings {
                    tracing::warn!(trial = %label, step, "{w}");
                }
                let checkpoint = checkpoint.map(|rel| checkpoint_dir.join(rel));
                ended = reporter.report(TrialReport { step, value, checkpoint, metrics }).await == Decision::End;
            }
            StdoutLine::Invalid(why) => tracing::warn!(trial = %label, "stdout line not taken as a report: {why}"),
            StdoutLine::Text => {}
        }
    }
}

/// Logs stderr and keeps its last lines.
async fn read_stderr(stderr: impl AsyncRead + Unpin, label: String, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = Lines::new(stderr);
    while let Some(line) = lines.next().await {
        tracing::info!(target: "trial::stderr", trial = %label, "{line}");
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// Lines of a pipe, decoded as lossy UTF-8 (a stray byte must not end the channel), without
/// their line breaks.
struct Lines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(input: R) -> Self {
        Lines { reader: BufReader::new(input), buf: Vec::new() }
    }

    /// The next line; `None` at EOF or on a read error.
    async fn next(&mut self) -> Option<String> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&self.buf).trim_end_matches(['\n', '\r']).to_owned()),
        }
    }
}

/// SIGTERM to the group, then SIGKILL once `grace` has passed.
async fn terminate(child: &mut Child, pgid: libc::pid_t, grace: Duration, label: &str) {
    tracing::info!(trial = %label, grace_s = grace.as_secs_f64(), "stopping the command (SIGTERM)");
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(trial = %label, "the command outlived its grace period; SIGKILL");
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: killpg only sends a signal; ESRCH (the group is gone) is the expected outcome once
    // everything in it has exited.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Asks the kernel to SIGKILL the child when the worker dies, however it dies.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only prctl and getppid,
    // both async-signal-safe; it allocates nothing.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the worker exited before the command started"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;
    use api::studies::{Assignment, Objective, Resume, RunSpec};

    fn report(line: &str) -> (u64, f64, Option<PathBuf>, BTreeMap<String, f64>, Vec<String>) {
        match parse_line(line) {
            StdoutLine::Report { step, value, checkpoint, metrics, warnings } => (step, value, checkpoint, metrics, warnings),
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn report_lines_need_numeric_step_and_value() {
        let (step, value, ckpt, metrics, warnings) = report(r#"{"step": 3, "value": 0.25}"#);
        assert_eq!((step, value, ckpt, metrics.len(), warnings.len()), (3, 0.25, None, 0, 0));
        assert_eq!(report(r#"  {"value": 1e-3, "step": 10.0, "epoch": 2}  "#).0, 10);
        for text in ["epoch 3 loss 0.2", "", "{not json", r#"{"step": 1}"#, r#"{"loss": 0.5, "value": 1}"#, "[1, 2]", r#""{\"step\":1}""#] {
            assert_eq!(parse_line(text), StdoutLine::Text, "{text:?}");
        }
        for text in [r#"{"step": -1, "value": 1}"#, r#"{"step": 1.5, "value": 1}"#, r#"{"step": "1", "value": 1}"#, r#"{"step": 1, "value": "nan"}"#, r#"{"step": 1, "value": null}"#] {
            assert!(matches!(parse_line(text), StdoutLine::Invalid(_)), "{text:?}");
        }
    }

    #[test]
    fn report_lines_carry_checkpoints_and_metrics() {
        let (_, _, ckpt, metrics, warnings) = report(r#"{"step": 9, "value": 0.4, "checkpoint": "./step-9/model", "metrics": {"train_loss": 0.5, "lr": 3e-4}}"#);
        assert_eq!(ckpt, Some(PathBuf::from("step-9/model")));
        assert_eq!(metrics, BTreeMap::from([("lr".to_owned(), 3e-4), ("train_loss".to_owned(), 0.5)]));
        assert!(warnings.is_empty());

        for bad in [r#""../escape""#, r#""/etc""#, r#""a/../../b""#, r#""""#, "3"] {
            let (_, _, ckpt, _, warnings) = report(&format!(r#"{{"step": 1, "value": 1, "checkpoint": {bad}}}"#));
            assert_eq!(ckpt, None, "{bad}");
            assert_eq!(warnings.len(), 1, "{bad}");
        }
        let (_, _, _, metrics, warnings) = report(r#"{"step": 1, "value": 1, "metrics": {"ok": 1, "bad": "x"}}"#);
        assert_eq!(metrics.keys().collect::<Vec<_>>(), vec!["ok"]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(report(r#"{"step": 1, "value": 1, "metrics": [1]}"#).4.len(), 1);
    }

    fn context(resume: Option<Resume>) -> TrialContext {
        let assignment = Assignment {
            study: "s1".into(),
            trial: 7,
            run_id: "run7".into(),
            experiment_id: "3".into(),
            attempt: 2,
            lease_id: "lease".into(),
            params: BTreeMap::from([("lr".to_owned(), serde_json::json!(0.001)), ("opt".to_owned(), serde_json::json!("adam"))]),
            resume,
            last_step: None,
            next_milestone: Some(3),
            max_resource: None,
            objective: Objective { metric: "loss".into(), direction: "minimize".into() },
            run: RunSpec {
                command: Some(vec!["python3".into(), "train.py".into()]),
                env: BTreeMap::from([("EXTRA".to_owned(), "1".to_owned()), ("MLFLOW_RUN_ID".to_owned(), "spoofed".to_owned())]),
                ..RunSpec::default()
            },
            heartbeat_s: 5.0,
        };
        let dir = PathBuf::from("/w/s1/trial-7/attempt-2");
        TrialContext {
            assignment,
            worker_id: "host-0".into(),
            params_file: dir.join("params.json"),
            checkpoint_dir: dir.join("checkpoints"),
            resume_dir: None,
            attempt_dir: dir,
            tracking_uri: "http://127.0.0.1:5000".into(),
            tracking_token: Some("trk_x".into()),
            stop_grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn env_names_the_trial_and_its_run() {
        let env = trial_env(&context(None));
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("TRIAL_PARAMS"), Some(r#"{"lr":0.001,"opt":"adam"}"#));
        assert_eq!(get("TRIAL_PARAMS_FILE"), Some("/w/s1/trial-7/attempt-2/params.json"));
        assert_eq!(get("TRIAL_NUMBER"), Some("7"));
        assert_eq!(get("TRIAL_ATTEMPT"), Some("2"));
        assert_eq!(get("STUDY_NAME"), Some("s1"));
        assert_eq!(get("TRIAL_CHECKPOINT_DIR"), Some("/w/s1/trial-7/attempt-2/checkpoints"));
        assert_eq!(get("TRIAL_NEXT_MILESTONE"), Some("3"));
        assert_eq!(get("TRIAL_MAX_RESOURCE"), None);
        assert_eq!(get("TRIAL_RESUME_DIR"), None);
        assert_eq!(get("TRIAL_RESUME_STEP"), None);
        assert_eq!(get("MLFLOW_TRACKING_URI"), Some("http://127.0.0.1:5000"));
        assert_eq!(get("MLFLOW_RUN_ID"), Some("run7"), "run.env must not override the trial's run");
        assert_eq!(get("MLFLOW_EXPERIMENT_ID"), Some("3"));
        assert_eq!(get("MLFLOW_TRACKING_TOKEN"), Some("trk_x"));
        assert_eq!(get("EXTRA"), Some("1"));
    }

    #[test]
    fn env_of_a_resumed_trial_points_at_the_checkpoint() {
        let mut ctx = context(Some(Resume { checkpoint: "checkpoints/step-9".into(), step: 9 }));
        ctx.resume_dir = Some(ctx.attempt_dir.join("resume"));
        ctx.assignment.max_resource = Some(27);
        ctx.tracking_token = None;
        let env = trial_env(&ctx);
        assert_eq!(env["TRIAL_RESUME_DIR"], "/w/s1/trial-7/attempt-2/resume");
        assert_eq!(env["TRIAL_RESUME_STEP"], "9");
        assert_eq!(env["TRIAL_MAX_RESOURCE"], "27");
        assert!(!env.contains_key("MLFLOW_TRACKING_TOKEN"));
    }

    #[test]
    fn failure_messages_name_the_exit_and_stderr() {
        use std::os::unix::process::ExitStatusExt as _;
        let msg = failure_message(ExitStatus::from_raw(3 << 8), ["Traceback", "ValueError: boom"].into_iter());
        assert_eq!(msg, "exit code 3\nstderr (last lines):\nTraceback\nValueError: boom");
        assert_eq!(failure_message(ExitStatus::from_raw(9), std::iter::empty()), "killed by signal 9");
    }
}
