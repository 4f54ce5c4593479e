//! The worker agent: register, lease a trial, run it with a [`Trainer`] while heartbeating,
//! report, and complete, fail or release it; then lease the next one.
//!
//! The agent knows the lease protocol (`api::studies`) and nothing about how training happens;
//! trainers know nothing about leases. Everything the tracker says that ends a trial (a `stop` or
//! `pause` decision, a `stop` command on a heartbeat, a 409 for a stale lease) and the worker's
//! own shutdown fire one cancellation token per trial, which the trainer obeys.
//!
//! The tracker may be down for a while (a restart, a deploy): every call rides that out with
//! backoff ([`retry`]); the agent itself only stops on a shutdown signal, on `--exit-when-done`
//! when no work is left, or when the tracker refuses its credentials.

pub mod exec;
mod retry;
mod session;
pub mod trainer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api::studies::{Assignment, CompleteRequest, FailRequest, HeartbeatRequest, LeaseRequest, RegisterWorker, ReleaseRequest};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::retry::{retrying, Backoff, Retry};
use self::session::{EndReason, HistoryBaseline, TrialSession};
pub use self::exec::ExecTrainer;
pub use self::trainer::{Decision, Reporter, TrainOutcome, Trainer, TrialContext, TrialReport};
use crate::TrackerClient;

/// How long the calls that close a trial (`complete`, `fail`, `release`) may keep retrying once
/// the worker is shutting down: the lease expires on its own if the tracker stays away.
const SHUTDOWN_CALL_BUDGET: Duration = Duration::from_secs(10);
/// Bounds on the tracker's `retry_after_s`, so a bad value neither spins nor sleeps for hours.
const MIN_LEASE_WAIT: Duration = Duration::from_millis(100);
const MAX_LEASE_WAIT: Duration = Duration::from_secs(300);

/// The release reason when the worker stops.
pub const SHUTDOWN_REASON: &str = "worker shutting down";

/// What an agent is and how it behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Stable worker id (host name plus slot by default), kept across restarts of the agent.
    pub worker_id: String,
    /// Only lease trials of this study.
    pub study: Option<String>,
    /// Where trial folders go (`<work_dir>/<study>/trial-<n>/attempt-<a>`).
    pub work_dir: PathBuf,
    /// Exit once the tracker says no more work will come.
    pub exit_when_done: bool,
    /// How long a stopped command may take to exit before it is killed.
    pub stop_grace: Duration,
    /// Labels sent at registration.
    pub labels: BTreeMap<String, String>,
    /// Resources sent at registration (`{"slot": 0, "cpus": 16}`).
    pub resources: Value,
    /// The tracker's URI, passed on to trials as `MLFLOW_TRACKING_URI`.
    pub tracking_uri: String,
    /// The bearer token passed on to trials as `MLFLOW_TRACKING_TOKEN`.
    pub tracking_token: Option<String>,
}

/// A worker agent: one trial at a time.
pub struct Agent {
    config: AgentConfig,
    client: TrackerClient,
    exec: Arc<dyn Trainer>,
    builtins: BTreeMap<String, Arc<dyn Trainer>>,
}

impl Agent {
    /// An agent with the exec trainer, talking to the tracker through `client`. A relative
    /// `work_dir` is made absolute, so the paths trials get stay valid wherever they `cd`.
    pub fn new(mut config: AgentConfig, client: TrackerClient) -> anyhow::Result<Self> {
        config.work_dir = std::path::absolute(&config.work_dir).with_context(|| format!("work dir {}", config.work_dir.display()))?;
        Ok(Agent { config, client, exec: Arc::new(ExecTrainer), builtins: BTreeMap::new() })
    }

    /// Adds a built-in trainer, used for studies whose `run.trainer` is `name`.
    pub fn with_trainer(mut self, name: impl Into<String>, trainer: Arc<dyn Trainer>) -> Self {
        self.builtins.insert(name.into(), trainer);
        self
    }

    /// Replaces the trainer of `run.command` studies (tests use a fake).
    pub fn with_exec_trainer(mut self, trainer: Arc<dyn Trainer>) -> Self {
        self.exec = trainer;
        self
    }

    /// Runs until `shutdown` fires (the running trial is then stopped and released), until no
    /// work is left with `exit_when_done`, or until the tracker refuses the credentials (an error).
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let cfg = &self.config;
        let register = RegisterWorker { worker_id: cfg.worker_id.clone(), resources: cfg.resources.clone(), labels: cfg.labels.clone() };
        let lease_req = LeaseRequest { worker_id: cfg.worker_id.clone(), study: cfg.study.clone() };
        let mut registered = false;
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            if !registered {
                match retrying("register", &shutdown, None, || self.client.register_worker(&register)).await {
                    Ok(r) => {
                        tracing::info!(worker_id = %r.worker.worker_id, status = %r.worker.status, heartbeat_s = r.heartbeat_s, lease_ttl_s = r.lease_ttl_s, "registered");
                        registered = true;
                    }
                    Err(Retry::Cancelled) => break,
                    Err(Retry::Failed(e)) if e.is_auth() => return Err(e).context("the tracker refused the worker's credentials"),
                    Err(Retry::Failed(e)) => {
                        let delay = backoff.next_delay();
                        tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "register failed");
                        sleep_or(&shutdown, delay).await;
                        continue;
                    }
                }
            }
            let lease = match retrying("lease", &shutdown, None, || self.client.lease(&lease_req)).await {
                Ok(l) => l,
                Err(Retry::Cancelled) => break,
                Err(Retry::Failed(e)) if e.is_auth() => return Err(e).context("the tracker refused the worker's credentials"),
                Err(Retry::Failed(e)) => {
                    // An unknown worker (the tracker lost its registration): register again.
                    registered = !e.is_not_found();
                    let delay = backoff.next_delay();
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "lease failed");
                    sleep_or(&shutdown, delay).await;
                    continue;
                }
            };
            backoff.reset();
            match lease.assignment {
                Some(assignment) => self.run_trial(assignment, &shutdown).await,
                None if cfg.exit_when_done && !lease.more_work => {
                    tracing::info!(reason = ?lease.reason, "no more work; exiting");
                    return Ok(());
                }
                None => {
                    let wait = Duration::try_from_secs_f64(lease.retry_after_s).unwrap_or(MIN_LEASE_WAIT).clamp(MIN_LEASE_WAIT, MAX_LEASE_WAIT);
                    tracing::debug!(reason = ?lease.reason, wait_ms = wait.as_millis() as u64, "no work");
                    sleep_or(&shutdown, wait).await;
                }
            }
        }
        tracing::info!("shut down");
        Ok(())
    }

    /// Runs one leased trial to its end, whatever that end is; never fails (errors are reported to
    /// the tracker or logged).
    async fn run_trial(&self, a: Assignment, shutdown: &CancellationToken) {
        tracing::info!(study = %a.study, trial = a.trial, attempt = a.attempt, run_id = %a.run_id, params = ?a.params, resume = ?a.resume, "leased a trial");
        let cancel = shutdown.child_token();
        let baseline = self.history_baseline(&a, &cancel).await;
        let session = Arc::new(TrialSession::new(self.client.clone(), a, cancel.clone(), baseline));
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(self.client.clone(), self.config.worker_id.clone(), Arc::clone(&session), heartbeat_stop.clone()));

        let outcome = match self.prepare(&session.assignment, &cancel).await {
            Ok(ctx) => self.train(ctx, &session).await,
            Err(e) => Err(e),
        };
        // Whatever the trainer or the preparation made of it, a cancelled trial has no result of
        // its own: it ended for a reason recorded in the session, or for the shutdown.
        let outcome = if cancel.is_cancelled() { Ok(TrainOutcome::Cancelled) } else { outcome };
        heartbeat_stop.cancel();
        let _ = heartbeat.await;

        let a = &session.assignment;
        if let Some(EndReason::Preempted(why)) = session.end_reason() {
            tracing::info!(study = %a.study, trial = a.trial, reason = %why, "trial preempted; releasing it");
            let req = ReleaseRequest { lease_id: a.lease_id.clone(), reason: format!("preempted: {why}") };
            match retrying("release", &CancellationToken::new(), Some(SHUTDOWN_CALL_BUDGET), || self.client.release(&a.study, a.trial, &req)).await {
                Ok(info) => tracing::info!(study = %a.study, trial = a.trial, state = %info.state, "release: done"),
                Err(e) => tracing::warn!(study = %a.study, trial = a.trial, error = ?e, "release failed; the lease will expire and the trial resume elsewhere"),
            }
            return;
        }
        if let Some(reason) = session.end_reason() {
            // Stopped, paused or lost: the tracker already knows; nothing more to say.
            tracing::info!(study = %a.study, trial = a.trial, ?reason, "trial ended by the tracker");
            return;
        }
        // `complete`/`fail` also go out while shutting down when the command ended on its own, but
        // with a short budget; a trial that was cancelled by the shutdown is given back.
        let (call_cancel, budget) = if shutdown.is_cancelled() { (CancellationToken::new(), Some(SHUTDOWN_CALL_BUDGET)) } else { (shutdown.clone(), None) };
        let (what, result) = match outcome {
            Ok(TrainOutcome::Succeeded) => {
                // Points the trial logged through MLflow after the last heartbeat.
                session.forward_history().await;
                if let Some(reason) = session.end_reason() {
                    tracing::info!(study = %a.study, trial = a.trial, ?reason, "trial ended by the tracker");
                    return;
                }
                tracing::info!(study = %a.study, trial = a.trial, "trial succeeded");
                let req = CompleteRequest { lease_id: a.lease_id.clone(), value: None };
                ("complete", retrying("complete", &call_cancel, budget, || self.client.complete(&a.study, a.trial, &req)).await)
            }
            Ok(TrainOutcome::Cancelled) => {
                tracing::info!(study = %a.study, trial = a.trial, "trial stopped for shutdown; releasing it");
                let req = ReleaseRequest { lease_id: a.lease_id.clone(), reason: SHUTDOWN_REASON.into() };
                let cancel = CancellationToken::new();
                ("release", retrying("release", &cancel, Some(SHUTDOWN_CALL_BUDGET), || self.client.release(&a.study, a.trial, &req)).await)
            }
            Ok(TrainOutcome::Failed(error)) => self.fail(a, error, &call_cancel, budget).await,
            Err(e) => self.fail(a, format!("{e:#}"), &call_cancel, budget).await,
        };
        match result {
            Ok(info) => tracing::info!(study = %a.study, trial = a.trial, state = %info.state, "{what}: done"),
            Err(Retry::Failed(e)) if e.is_conflict() => tracing::warn!(study = %a.study, trial = a.trial, error = %e, "{what}: the lease was lost"),
            Err(Retry::Failed(e)) => tracing::error!(study = %a.study, trial = a.trial, error = %e, "{what} failed"),
            Err(Retry::Cancelled) => tracing::warn!(study = %a.study, trial = a.trial, "{what}: abandoned for shutdown; the lease will expire"),
        }
    }

    async fn fail(
        &self,
        a: &Assignment,
        error: String,
        cancel: &CancellationToken,
        budget: Option<Duration>,
    ) -> (&'static str, Result<api::studies::TrialInfo, Retry>) {
        tracing::warn!(study = %a.study, trial = a.trial, %error, "trial failed");
        let req = FailRequest { lease_id: a.lease_id.clone(), error };
        ("fail", retrying("fail", cancel, budget, || self.client.fail(&a.study, a.trial, &req)).await)
    }

    /// The objective points already in the run (logged by earlier attempts, or by an earlier run
    /// of this attempt before the agent restarted), which the MLflow channel must not forward as
    /// this attempt's. Where to start reporting is the tracker's `last_step`; this only keeps a
    /// point an earlier attempt logged above it (and never got reported) from being reported now.
    /// Empty when it cannot be read (logged): the tracker still refuses steps it already has.
    async fn history_baseline(&self, a: &Assignment, cancel: &CancellationToken) -> HistoryBaseline {
        // Read before the heartbeat loop starts, so it may take at most one heartbeat period: the
        // lease must not run out while the tracker is slow to answer.
        let budget = Duration::try_from_secs_f64(a.heartbeat_s).unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
        match retrying("metric history", cancel, Some(budget), || self.client.metric_history(&a.run_id, &a.objective.metric)).await {
            Ok(points) => HistoryBaseline::new(points.iter().map(|m| (m.step, m.value, m.timestamp))),
            Err(e) => {
                tracing::warn!(study = %a.study, trial = a.trial, error = ?e, "cannot read the run's objective history");
                HistoryBaseline::default()
            }
        }
    }

    /// Creates the attempt folder, writes the params and downloads the resume checkpoint.
    async fn prepare(&self, a: &Assignment, cancel: &CancellationToken) -> anyhow::Result<TrialContext> {
        let attempt_dir = attempt_dir(&self.config.work_dir, a);
        let checkpoint_dir = attempt_dir.join("checkpoints");
        tokio::fs::create_dir_all(&checkpoint_dir).await.with_context(|| format!("creating {}", checkpoint_dir.display()))?;
        let params_file = attempt_dir.join("params.json");
        let params = serde_json::to_vec_pretty(&a.params).context("encoding the params")?;
        tokio::fs::write(&params_file, params).await.with_context(|| format!("writing {}", params_file.display()))?;
        let resume_dir = match &a.resume {
            Some(resume) => {
                let dir = attempt_dir.join("resume");
                // A leftover of an earlier try at this attempt may be partial.
                if tokio::fs::metadata(&dir).await.is_ok() {
                    tokio::fs::remove_dir_all(&dir).await.with_context(|| format!("clearing {}", dir.display()))?;
                }
                let files = match retrying("checkpoint download", cancel, None, || self.client.download_artifact_dir(&a.run_id, &resume.checkpoint, &dir)).await {
                    Ok(n) => n,
                    Err(Retry::Cancelled) => anyhow::bail!("cancelled while downloading the checkpoint"),
                    Err(Retry::Failed(e)) => return Err(e).with_context(|| format!("downloading checkpoint '{}'", resume.checkpoint)),
                };
                tracing::info!(study = %a.study, trial = a.trial, checkpoint = %resume.checkpoint, step = resume.step, files, "resume checkpoint downloaded");
                Some(dir)
            }
            None => None,
        };
        Ok(TrialContext {
            assignment: a.clone(),
            worker_id: self.config.worker_id.clone(),
            attempt_dir,
            params_file,
            checkpoint_dir,
            resume_dir,
            tracking_uri: self.config.tracking_uri.clone(),
            tracking_token: self.config.tracking_token.clone(),
            stop_grace: self.config.stop_grace,
        })
    }

    async fn train(&self, ctx: TrialContext, session: &Arc<TrialSession>) -> anyhow::Result<TrainOutcome> {
        let run = &ctx.assignment.run;
        let trainer = match (&run.command, &run.trainer) {
            (Some(_), _) => Arc::clone(&self.exec),
            (None, Some(name)) => match self.builtins.get(name) {
                Some(t) => Arc::clone(t),
                None => anyhow::bail!("worker {} has no built-in trainer '{name}'", self.config.worker_id),
            },
            (None, None) => anyhow::bail!("the study's `run` names neither a command nor a trainer"),
        };
        let reporter = Reporter { session: Arc::clone(session) };
        trainer.train(&ctx, reporter, session.cancel.clone()).await
    }
}

/// Every `heartbeat_s`: renews the lease (obeying a `stop` or `preempt` command) and forwards
/// the objective points the trial logged through MLflow.
async fn heartbeat_loop(client: TrackerClient, worker_id: String, session: Arc<TrialSession>, stop: CancellationToken) {
    let a = &session.assignment;
    let period = Duration::try_from_secs_f64(a.heartbeat_s).unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
    let req = HeartbeatRequest { worker_id, leases: vec![a.lease_id.clone()] };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match client.heartbeat(&req).await {
            Ok(resp) => {
                for c in resp.commands {
                    if c.lease_id == a.lease_id && c.action == "stop" {
                        session.end(EndReason::Stopped(format!("tracker command: {}", c.reason)));
                    } else if c.lease_id == a.lease_id && c.action == "preempt" {
                        session.end(EndReason::Preempted(c.reason));
                    } else {
                        tracing::debug!(lease_id = %c.lease_id, action = %c.action, reason = %c.reason, "command ignored");
                    }
                }
            }
            Err(e) if e.is_conflict() => session.end(EndReason::LeaseLost(e.to_string())),
            // The next tick tries again; the lease TTL covers a few missed beats.
            Err(e) => tracing::warn!(study = %a.study, trial = a.trial, error = %e, "heartbeat failed"),
        }
        if session.is_ending() || stop.is_cancelled() {
            return;
        }
        session.forward_history().await;
    }
}

/// `<work_dir>/<study>/trial-<n>/attempt-<a>`.
pub(crate) fn attempt_dir(work_dir: &Path, a: &Assignment) -> PathBuf {
    work_dir.join(path_safe(&a.study)).join(format!("trial-{}", a.trial)).join(format!("attempt-{}", a.attempt))
}

/// A study name as one path component. Study names are restricted to `[A-Za-z0-9._-]` by the
/// tracker; this keeps a bad one (`..`, a slash) from escaping the work folder anyway.
fn path_safe(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        format!("study-{}", cleaned.len())
    } else {
        cleaned
    }
}

async fn sleep_or(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_dirs_stay_inside_the_work_dir() {
        assert_eq!(path_safe("lora-sweep_1.2"), "lora-sweep_1.2");
        assert_eq!(path_safe("../x"), ".._x");
        assert_eq!(path_safe(".."), "study-2");
        assert_eq!(path_safe("a/b"), "a_b");
    }
}
