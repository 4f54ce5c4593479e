//! Studies: validated specs, trial leases for worker agents, reports and the scheduler's decisions.
//!
//! The tuner decides; this module feeds it the persisted history and applies its answers. Each
//! call opens one [`StudyTx`] (the study's lock), loads the trials and reports, rebuilds the
//! tuner's [`TrialView`]s from them, asks the sampler or scheduler, and writes the outcome in the
//! same transaction. Because samplers and schedulers are pure functions of `(seed, history)`, a
//! restarted tracker, or another replica, makes the same decisions from the same rows.
//!
//! Trial states: `queued` (requeued after a lost or failed attempt; served before anything else),
//! `running` (leased), `paused` (at an ASHA rung, waiting for promotion), and the final `complete`,
//! `pruned`, `failed` and `stopped`. Every trial is a run of the study's experiment; its state is
//! mirrored in the run status and the `tracker.*` tags.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::studies::{
    Assignment, Command, CompleteRequest, FailRequest, HeartbeatRequest, HeartbeatResponse, LeaseRequest, LeaseResponse, Params,
    RegisterSpec, RegisterWorker, RegisterWorkerResponse, RegisteredVersion, ReleaseRequest, ReportRequest, ReportResponse, Resume, StudyInfo, StudySpec, TrialInfo,
    WorkerInfo,
};
use serde_json::Value;
use tuner::scheduler::{AshaConfig, AshaMode, AshaScheduler};
use tuner::{Decision, Direction, History, SamplerKind, Scheduler, SchedulerKind, SearchSpace};

use crate::error::{Error, Result};
use crate::store::studies::{ReportRow, StudyRow, StudyTx, TrialRow, WorkerRow};
use crate::store::audit::ChangeBy;
use crate::store::promotion::Promotion;
use crate::store::registry::NewModelVersion;
use crate::store::{now_ms, Store};
use crate::app::App;

/// Tags of a model version registered by a study: the study, the trial, the promotion's outcome.
const STUDY_TAG: &str = "tracker.study";
const TRIAL_TAG: &str = "tracker.trial";
const PROMOTION_TAG: &str = "tracker.promotion";

/// How long leases live and how often workers beat.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// A lease without a report or heartbeat for this long is lost.
    pub lease_ttl: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming { lease_ttl: Duration::from_secs(60) }
    }
}

impl LeaseTiming {
    /// Heartbeat period: a third of the TTL, so two beats may be missed before a lease is lost.
    pub fn heartbeat(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// A trial that fails this soon after its lease started counts as a quick failure of its worker.
const QUICK_FAILURE_MS: i64 = 60_000;
/// Quick failures in a row after which a worker is paused (the W&B agent's flapping rule).
const MAX_QUICK_FAILURES: i64 = 3;
/// How long an idle worker waits before asking again.
const IDLE_RETRY_S: f64 = 2.0;
/// How stale a worker's `last_seen` may get before a lease refreshes it.
const LAST_SEEN_RESOLUTION_MS: i64 = 5_000;
/// Longest error message kept for a failed attempt.
const MAX_ERROR_CHARS: usize = 4000;

/// A spec checked and turned into the tuner's types.
#[derive(Clone)]
pub struct Plan {
    /// The spec as given.
    pub spec: StudySpec,
    space: SearchSpace,
    direction: Direction,
    sampler: SamplerKind,
    scheduler: SchedulerKind,
    /// Milestones of single-bracket ASHA (for rung tags and resume milestones).
    milestones: Vec<u64>,
}

fn field_error(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidParameter(format!("Invalid study spec: `{field}`: {msg}"))
}

impl Plan {
    /// Validates a spec; every error names the offending field.
    pub fn compile(spec: StudySpec) -> Result<Plan> {
        check_name(&spec.name).map_err(|m| field_error("name", m))?;
        if let Some(e) = &spec.experiment {
            if e.trim().is_empty() {
                return Err(field_error("experiment", "must not be empty"));
            }
        }
        if spec.objective.metric.trim().is_empty() {
            return Err(field_error("objective.metric", "must not be empty"));
        }
        let direction = match spec.objective.direction.as_str() {
            "minimize" => Direction::Minimize,
            "maximize" => Direction::Maximize,
            other => return Err(field_error("objective.direction", format!("'{other}' is neither 'minimize' nor 'maximize'"))),
        };
        let space = SearchSpace::from_json(&spec.space).map_err(|e| field_error("space", e))?;
        let sampler: SamplerKind = spec.sampler.parse().map_err(|e: String| field_error("sampler", e))?;
        if spec.max_trials == 0 {
            return Err(field_error("max_trials", "must be at least 1"));
        }
        if spec.max_concurrent == Some(0) {
            return Err(field_error("max_concurrent", "must be at least 1"));
        }
        let s = &spec.scheduler;
        let asha = || -> Result<AshaConfig> {
            let c = AshaConfig {
                min_resource: s.min_resource.unwrap_or(1),
                max_resource: s.max_resource.ok_or_else(|| field_error("scheduler.max_resource", format!("is required by '{}'", s.kind)))?,
                reduction_factor: s.reduction_factor.unwrap_or(3),
                extrapolate: s.extrapolate.unwrap_or(false),
            };
            if c.reduction_factor < 2 {
                return Err(field_error("scheduler.reduction_factor", "must be at least 2"));
            }
            if c.min_resource == 0 || c.min_resource >= c.max_resource {
                return Err(field_error("scheduler.min_resource", format!("must be in 1..{} (below max_resource)", c.max_resource)));
            }
            Ok(c)
        };
        if s.extrapolate == Some(true) && matches!(s.kind.as_str(), "fifo" | "median") {
            return Err(field_error("scheduler.extrapolate", format!("'{}' has no rungs to judge; use it with asha, asha_promote, hyperband or hyperband_promote", s.kind)));
        }
        let (scheduler, milestones) = match s.kind.as_str() {
            "fifo" => (SchedulerKind::Fifo, Vec::new()),
            "median" => (SchedulerKind::Median, Vec::new()),
            "asha" | "asha_promote" | "hyperband" | "hyperband_promote" => {
                let c = asha()?;
                let milestones = AshaScheduler::new(c, AshaMode::Stop).milestones().to_vec();
                let kind = match s.kind.as_str() {
                    "asha" => SchedulerKind::AshaStop(c),
                    "asha_promote" => SchedulerKind::AshaPromote(c),
                    "hyperband" => SchedulerKind::Hyperband(c),
                    _ => SchedulerKind::HyperbandPromote(c),
                };
                (kind, milestones)
            }
            other => {
                return Err(field_error(
                    "scheduler.kind",
                    format!("unknown scheduler '{other}'; use fifo, asha, asha_promote, hyperband, hyperband_promote or median"),
                ))
            }
        };
        let run = &spec.run;
        match (&run.command, &run.trainer) {
            (Some(_), Some(_)) => return Err(field_error("run", "give either `command` or `trainer`, not both")),
            (None, None) => return Err(field_error("run", "give a `command` to run or a built-in `trainer`")),
            (Some(c), None) if c.is_empty() || c[0].trim().is_empty() => return Err(field_error("run.command", "must name a program")),
            (None, Some(t)) if t.trim().is_empty() => return Err(field_error("run.trainer", "must not be empty")),
            _ => {}
        }
        for key in run.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(field_error("run.env", format!("'{key}' is not a valid environment variable name")));
            }
        }
        if let Some(register) = &spec.register {
            check_register(register)?;
        }
        Ok(Plan { spec, space, direction, sampler, scheduler, milestones })
    }

    /// The ASHA milestones (rungs below the full resource); empty for FIFO and median.
    pub fn milestones(&self) -> &[u64] {
        &self.milestones
    }

    fn max_resource(&self) -> Option<u64> {
        self.spec.scheduler.max_resource
    }

    fn scheduler(&self) -> Box<dyn Scheduler> {
        self.scheduler.build(self.spec.seed)
    }

    /// The index of the highest milestone `step` has reached.
    fn rung(&self, step: u64) -> Option<usize> {
        self.milestones.iter().rposition(|m| step >= *m)
    }

    /// The first milestone after `step`.
    fn milestone_after(&self, step: u64) -> Option<u64> {
        self.milestones.iter().copied().find(|m| *m > step)
    }

    /// Parses a stored spec.
    fn from_stored(study: &StudyRow) -> Result<Plan> {
        let spec: StudySpec = serde_json::from_str(&study.spec).map_err(|e| Error::Internal(anyhow::anyhow!("stored spec of {}: {e}", study.name)))?;
        Plan::compile(spec)
    }
}

/// The `register` section: a model name, an artifact folder inside the run, a valid alias.
fn check_register(register: &RegisterSpec) -> Result<()> {
    if register.model.trim().is_empty() || register.model.chars().any(char::is_control) {
        return Err(field_error("register.model", "must name a registered model"));
    }
    let path = &register.artifact_path;
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(field_error("register.artifact_path", format!("'{path}' must be a relative folder of the run's artifacts, such as 'adapter'")));
    }
    if let Some(alias) = &register.alias {
        crate::http::registry::alias_name(&Some(alias.clone())).map_err(|e| field_error("register.alias", e))?;
    }
    Ok(())
}

/// Study names become run names and URL path segments: keep them plain.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err("must have 1 to 100 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!("'{name}' may hold only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// The file formats of a study spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Toml,
    Yaml,
    Json,
}

impl SpecFormat {
    /// The format of a spec file, by its extension (`.toml`, `.yaml` or `.yml`, `.json`); for
    /// any other name, JSON when the text starts with `{`, else TOML.
    pub fn of(path: &std::path::Path, text: &str) -> SpecFormat {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("toml") => SpecFormat::Toml,
            Some("yaml" | "yml") => SpecFormat::Yaml,
            Some("json") => SpecFormat::Json,
            _ if text.trim_start().starts_with('{') => SpecFormat::Json,
            _ => SpecFormat::Toml,
        }
    }
}

/// Parses a spec; an error names the offending field and, for TOML and YAML, where it is.
pub fn parse_spec(text: &str, format: SpecFormat) -> Result<StudySpec> {
    let parsed = match format {
        SpecFormat::Toml => toml::from_str::<StudySpec>(text).map_err(|e| e.to_string()),
        SpecFormat::Yaml => yaml_serde::from_str::<StudySpec>(text).map_err(|e| e.to_string()),
        SpecFormat::Json => serde_json::from_str::<StudySpec>(text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| Error::InvalidParameter(format!("Invalid study spec: {e}")))
}

fn is_final(state: &str) -> bool {
    matches!(state, "complete" | "pruned" | "failed" | "stopped")
}

/// A param value as a run param string: strings as they are, numbers and booleans as JSON.
fn param_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn run_status(state: &str) -> &'static str {
    match state {
        "running" => "RUNNING",
        "complete" => "FINISHED",
        "failed" => "FAILED",
        "pruned" | "stopped" => "KILLED",
        _ => "SCHEDULED",
    }
}

/// Runs [`Studies::sweep_expired_leases`] every heartbeat period until the app is dropped.
pub(crate) fn sweep_expired_leases_in_background(app: &Arc<App>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no Tokio runtime: expired leases are swept only when workers ask for work");
        return;
    };
    let app = Arc::downgrade(app);
    runtime.spawn(async move {
        loop {
            let period = match app.upgrade() {
                Some(app) => {
                    if let Err(e) = Studies::new(&app.store, app.lease_timing).sweep_expired_leases().await {
                        tracing::warn!(error = %e, "sweeping expired leases failed; retrying at the next period");
                    }
                    app.lease_timing.heartbeat()
                }
                None => return,
            };
            tokio::time::sleep(period.max(Duration::from_millis(100))).await;
        }
    });
}

/// The status of a worker that `tracker worker drain` took out of service.
const WORKER_DRAINING: &str = "draining";

/// Clears the lease holder of a trial (the lease id stays as the last fencing token).
fn release(t: &mut TrialRow) {
    t.worker_id = None;
    t.lease_expires = None;
}

/// The studies service: the one entry point of handlers and the CLI.
pub struct Studies<'a> {
    store: &'a Store,
    timing: LeaseTiming,
}

impl<'a> Studies<'a> {
    /// Over a store with these lease timings.
    pub fn new(store: &'a Store, timing: LeaseTiming) -> Self {
        Studies { store, timing }
    }

    /// Creates a study (and its experiment when missing).
    pub async fn create(&self, spec: StudySpec) -> Result<StudyInfo> {
        let plan = Plan::compile(spec)?;
        let spec = plan.spec;
        match self.store.get_study(&spec.name).await {
            Ok(_) => return Err(Error::AlreadyExists(format!("Study '{}' already exists.", spec.name))),
            Err(crate::store::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let exp_name = spec.experiment.clone().unwrap_or_else(|| spec.name.clone());
        let exp = match self.store.get_experiment_by_name(&exp_name).await {
            Ok(e) => e,
            Err(crate::store::Error::NotFound(_)) => {
                let tags = [("tracker.study".to_owned(), spec.name.clone())];
                let id = match self.store.create_experiment(&exp_name, None, &tags).await {
                    Ok(id) => id,
                    // Created concurrently by another request: use it.
                    Err(crate::store::Error::AlreadyExists(_)) => self.store.get_experiment_by_name(&exp_name).await?.experiment_id,
                    Err(e) => return Err(e.into()),
                };
                self.store.get_experiment(&id).await?
            }
            Err(e) => return Err(e.into()),
        };
        if exp.lifecycle_stage != "active" {
            return Err(field_error("experiment", format!("experiment '{exp_name}' is deleted")));
        }
        let exp_id: i64 = exp.experiment_id.parse().map_err(|_| Error::Internal(anyhow::anyhow!("experiment id {}", exp.experiment_id)))?;
        let json = serde_json::to_string(&spec).map_err(|e| Error::Internal(e.into()))?;
        self.store.insert_study(&spec.name, exp_id, &json).await?;
        self.info(&spec.name).await
    }

    /// A study with its trial counts, best trial and registered version.
    pub async fn info(&self, name: &str) -> Result<StudyInfo> {
        let study = self.store.get_study(name).await?;
        let trials = self.store.list_trials(name).await?;
        self.with_registered(study_info(&study, &trials)?).await
    }

    /// A study and all its trials.
    pub async fn get(&self, name: &str) -> Result<(StudyInfo, Vec<TrialInfo>)> {
        let study = self.store.get_study(name).await?;
        let trials = self.store.list_trials(name).await?;
        let infos = trials.iter().map(trial_info).collect::<Result<Vec<_>>>()?;
        Ok((self.with_registered(study_info(&study, &trials)?).await?, infos))
    }

    /// All studies, newest first.
    pub async fn list(&self) -> Result<Vec<StudyInfo>> {
        let mut out = Vec::new();
        for s in self.store.list_studies().await? {
            let trials = self.store.list_trials(&s.name).await?;
            out.push(self.with_registered(study_info(&s, &trials)?).await?);
        }
        Ok(out)
    }

    /// Fills in the version registered from the study, found by its `tracker.study` tag.
    async fn with_registered(&self, mut info: StudyInfo) -> Result<StudyInfo> {
        let Some(register) = &info.spec.register else { return Ok(info) };
        let Some(version) = self.store.find_model_version_by_tag(&register.model, STUDY_TAG, &info.name).await? else { return Ok(info) };
        let tag = |key: &str| version.tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
        info.registered = Some(RegisteredVersion {
            model: version.name.clone(),
            version: version.version.clone(),
            trial: tag(TRIAL_TAG).and_then(|t| t.parse().ok()).unwrap_or_default(),
            promotion: tag(PROMOTION_TAG).unwrap_or_default(),
        });
        Ok(info)
    }

    /// Registers the best trial of every finished study that asks for it and has not got it yet:
    /// what a crash between a study's end and its registration left undone. Run at start-up.
    pub async fn register_finished(&self) -> Result<()> {
        for name in self.store.study_names_with_status(&["finished"]).await? {
            self.register_best(&name).await;
        }
        Ok(())
    }

    /// Registers the best trial of a finished study (see [`StudySpec::register`]). A failure is
    /// logged, not returned: the trial call that finished the study has succeeded, and
    /// [`Studies::register_finished`] retries at the next start.
    async fn register_best(&self, name: &str) {
        match self.try_register_best(name).await {
            Ok(Some(r)) => tracing::info!(study = name, model = %r.model, version = %r.version, trial = r.trial, promotion = %r.promotion, "registered the best trial"),
            Ok(None) => {}
            Err(e) => tracing::warn!(study = name, error = %e, "registering the best trial failed; it is retried when the tracker restarts"),
        }
    }

    /// Idempotent: the version carries the study's name in its `tracker.study` tag and the
    /// promotion's outcome in `tracker.promotion`, so each step runs once even after a crash.
    async fn try_register_best(&self, name: &str) -> Result<Option<RegisteredVersion>> {
        let info = self.info(name).await?;
        let Some(register) = info.spec.register.clone() else { return Ok(None) };
        if info.status != "finished" {
            return Ok(None);
        }
        let registered = match info.registered {
            Some(r) => r,
            None => {
                let Some(best) = &info.best else {
                    tracing::warn!(study = name, "the study finished without a complete trial: nothing to register");
                    return Ok(None);
                };
                match self.store.create_registered_model(&register.model, None, &[]).await {
                    Ok(_) | Err(crate::store::Error::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                let value = best.value.map_or_else(|| "-".to_owned(), |v| v.to_string());
                let version = self
                    .store
                    .create_model_version(NewModelVersion {
                        name: register.model.clone(),
                        source: format!("runs:/{}/{}", best.run_id, register.artifact_path),
                        run_id: Some(best.run_id.clone()),
                        description: Some(format!("Best trial {} of study '{name}': {} = {value}", best.number, info.spec.objective.metric)),
                        tags: vec![(STUDY_TAG.into(), name.to_owned()), (TRIAL_TAG.into(), best.number.to_string())],
                        ..Default::default()
                    })
                    .await?;
                RegisteredVersion { model: version.name, version: version.version, trial: best.number, promotion: String::new() }
            }
        };
        let (Some(alias), true) = (&register.alias, registered.promotion.is_empty()) else { return Ok(Some(registered)) };
        let why = format!("best trial {} of study '{name}'", registered.trial);
        let by = ChangeBy::new(format!("study:{name}"), Some(&why));
        let promotion = match self.store.promote(&registered.model, &registered.version, alias, &by).await? {
            Promotion::Promoted { .. } => format!("promoted to alias '{alias}'"),
            Promotion::Refused { failed, .. } => {
                crate::http::promotion::refusal_message(&registered.model, &registered.version, alias, &failed.rule, &failed.detail)
            }
        };
        self.store.set_model_version_tag(&registered.model, &registered.version, PROMOTION_TAG, &promotion).await?;
        Ok(Some(RegisteredVersion { promotion, ..registered }))
    }

    /// `pause` (no new leases; running trials go on), `resume`, or `stop` (every unfinished trial
    /// is stopped and its worker told so at its next heartbeat or report).
    pub async fn control(&self, name: &str, action: &str) -> Result<StudyInfo> {
        let mut tx = self.store.begin_study(name).await?;
        let status = tx.study.status.clone();
        match (action, status.as_str()) {
            ("pause", "running") => tx.set_status("paused").await?,
            ("resume", "paused") => tx.set_status("running").await?,
            ("stop", "running" | "paused") => {
                for i in 0..tx.trials.len() {
                    if !is_final(&tx.trials[i].state) {
                        let t = &mut tx.trials[i];
                        t.state = "stopped".into();
                        release(t);
                        let run = t.run_uuid.clone();
                        tx.save_trial(i).await?;
                        tx.set_run_state(&run, "KILLED", &[("tracker.state".into(), "stopped".into())]).await?;
                    }
                }
                tx.set_status("stopped").await?;
            }
            // Asking for the state a study is already in changes nothing.
            ("pause", "paused") | ("resume", "running") | ("stop", "stopped") => {}
            ("pause" | "resume" | "stop", _) => {
                return Err(Error::InvalidParameter(format!("Cannot {action} study '{name}': it is {status}.")));
            }
            _ => return Err(Error::InvalidParameter(format!("Unknown study action '{action}'; use pause, resume or stop."))),
        }
        tx.commit().await?;
        self.info(name).await
    }

    /// Registers (or re-registers) a worker.
    pub async fn register(&self, req: RegisterWorker) -> Result<RegisterWorkerResponse> {
        check_worker_id(&req.worker_id)?;
        let resources = serde_json::to_string(&req.resources).map_err(|e| Error::Internal(e.into()))?;
        let labels = serde_json::to_string(&req.labels).map_err(|e| Error::Internal(e.into()))?;
        let row = self.store.upsert_worker(&req.worker_id, &resources, &labels).await?;
        Ok(RegisterWorkerResponse {
            worker: worker_info(&row)?,
            heartbeat_s: self.timing.heartbeat().as_secs_f64(),
            lease_ttl_s: self.timing.lease_ttl.as_secs_f64(),
        })
    }

    /// All workers.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.store.list_workers().await?.iter().map(worker_info).collect()
    }

    /// Lets a paused worker lease again.
    pub async fn resume_worker(&self, worker_id: &str) -> Result<WorkerInfo> {
        self.store.get_worker(worker_id).await?;
        self.store.set_worker_health(worker_id, "active", 0).await?;
        worker_info(&self.store.get_worker(worker_id).await?)
    }

    /// Drains a worker, for node maintenance or a spot instance's notice: at its next heartbeat
    /// each trial it runs gets a `preempt` command (the agent stops the command and releases the
    /// trial, which resumes elsewhere from its last checkpoint, charged to `max_lost`), and it
    /// leases nothing until [`Studies::resume_worker`].
    pub async fn drain_worker(&self, worker_id: &str) -> Result<WorkerInfo> {
        let w = self.store.get_worker(worker_id).await?;
        self.store.set_worker_health(worker_id, WORKER_DRAINING, w.quick_failures).await?;
        tracing::info!(worker = worker_id, "worker draining");
        worker_info(&self.store.get_worker(worker_id).await?)
    }

    fn expires(&self, now: i64) -> i64 {
        now + self.timing.lease_ttl.as_millis() as i64
    }

    /// Hands a worker its next trial: its current lease if it holds one (idempotent), else a
    /// requeued trial, a promotion, or a new trial, from the oldest running study first.
    pub async fn lease(&self, req: LeaseRequest) -> Result<LeaseResponse> {
        let worker = self.store.get_worker(&req.worker_id).await.map_err(|e| match e {
            crate::store::Error::NotFound(m) => Error::NotFound(format!("{m} Register it first (workers/register).")),
            e => e.into(),
        })?;
        let now = now_ms();
        // `last_seen` is for operators; refreshing it once per few seconds is enough. It is
        // written with the lease's decision when there is one, else on its own below.
        let mut touch = (now - worker.last_seen > LAST_SEEN_RESOLUTION_MS).then_some(now);
        let response = self.lease_for(&req, &worker, now, &mut touch).await;
        if let Some(now) = touch {
            self.store.touch_worker(&worker.worker_id, now).await?;
        }
        response
    }

    /// [`Studies::lease`] once the worker is known. `touch`, when set, is the `last_seen` to
    /// write with the first decision that commits; it is taken when that decision commits.
    async fn lease_for(&self, req: &LeaseRequest, worker: &WorkerRow, now: i64, touch: &mut Option<i64>) -> Result<LeaseResponse> {
        if let Some(held) = self.store.active_lease_of_worker(&worker.worker_id, now).await? {
            let mut tx = self.store.begin_study(&held.study).await?;
            let plan = Plan::from_stored(&tx.study)?;
            let index = held.number as usize;
            let expires = self.expires(now);
            if let Some(t) = tx.trials.get_mut(index).filter(|t| t.lease_id == held.lease_id && t.state == "running") {
                t.lease_expires = Some(expires);
                let t = t.clone();
                tx.save_trial(index).await?;
                let experiment_id = tx.study.experiment_id;
                commit_touching(tx, &worker.worker_id, touch).await?;
                return Ok(self.assigned(&plan, &t, experiment_id));
            }
        }
        if worker.status == WORKER_DRAINING {
            // `more_work` as for any worker, so an agent run with `--exit-when-done` still exits
            // when the studies end.
            return Ok(LeaseResponse {
                assignment: None,
                reason: Some(format!("worker '{}' is draining: it takes no trial until `tracker worker resume {}`.", worker.worker_id, worker.worker_id)),
                more_work: self.more_work(req.study.as_deref()).await?,
                retry_after_s: IDLE_RETRY_S,
            });
        }
        if worker.status == "paused" {
            return Ok(LeaseResponse {
                assignment: None,
                reason: Some(format!(
                    "worker '{}' is paused: its last {} trials failed within a minute of starting. Fix it, then `tracker worker resume {}`.",
                    worker.worker_id, worker.quick_failures, worker.worker_id
                )),
                more_work: true,
                retry_after_s: 30.0,
            });
        }
        let names = match &req.study {
            Some(s) => vec![self.store.get_study(s).await?.name],
            None => self.store.study_names_with_status(&["running"]).await?,
        };
        let mut reason = "no running study".to_owned();
        // A study whose decision lock another call holds (here, or in another replica: Postgres'
        // `FOR UPDATE SKIP LOCKED`) is passed over at first, so a busy study does not hold up
        // leases from the others; it is waited for only when no other study had a trial. With
        // one study there is nothing to pass over to, so its lock is waited for at once.
        let mut busy = Vec::new();
        for name in &names {
            let tx = if names.len() == 1 { Some(self.store.begin_study(name).await?) } else { self.store.begin_study_unless_busy(name).await? };
            match tx {
                Some(tx) => {
                    if let Some(t) = self.lease_in(tx, &worker.worker_id, now, &mut reason, touch).await? {
                        return Ok(t);
                    }
                }
                None => busy.push(name),
            }
        }
        for name in busy {
            let tx = self.store.begin_study(name).await?;
            if let Some(t) = self.lease_in(tx, &worker.worker_id, now, &mut reason, touch).await? {
                return Ok(t);
            }
        }
        let more_work = self.more_work(req.study.as_deref()).await?;
        Ok(LeaseResponse { assignment: None, reason: Some(reason), more_work, retry_after_s: IDLE_RETRY_S })
    }

    /// Leases a trial of the study locked by `tx` to the worker, or commits and says in `reason`
    /// why there is none (finishing the study when nothing more can run).
    async fn lease_in(&self, mut tx: StudyTx, worker_id: &str, now: i64, reason: &mut String, touch: &mut Option<i64>) -> Result<Option<LeaseResponse>> {
        let name = tx.study.name.clone();
        if tx.study.status != "running" {
            *reason = format!("study '{name}' is {}", tx.study.status);
            commit_touching(tx, worker_id, touch).await?;
            return Ok(None);
        }
        let plan = Plan::from_stored(&tx.study)?;
        self.sweep_expired(&mut tx, &plan, now).await?;
        match self.pick(&mut tx, &plan, worker_id, now).await? {
            Some(t) => {
                let experiment_id = tx.study.experiment_id;
                commit_touching(tx, worker_id, touch).await?;
                Ok(Some(self.assigned(&plan, &t, experiment_id)))
            }
            None => {
                let finished = finish_if_done(&mut tx, &plan).await?;
                *reason = format!("study '{name}' has no trial to start now");
                commit_touching(tx, worker_id, touch).await?;
                if finished {
                    self.register_best(&name).await;
                }
                Ok(None)
            }
        }
    }

    /// Whether the study (or any study) may still hand out trials: it is running or paused.
    async fn more_work(&self, study: Option<&str>) -> Result<bool> {
        Ok(match study {
            Some(s) => {
                let st = self.store.get_study(s).await?.status;
                st == "running" || st == "paused"
            }
            None => !self.store.study_names_with_status(&["running", "paused"]).await?.is_empty(),
        })
    }

    /// Marks the attempts whose lease ran out as lost and requeues their trials, in every study,
    /// without waiting for a worker to ask for work, so that the UI and `/metrics` never show a
    /// dead worker's trial as running. [`sweep_expired_leases_in_background`] calls it every
    /// heartbeat period; a lease or report about the study does the same sweep on its way.
    pub async fn sweep_expired_leases(&self) -> Result<()> {
        let now = now_ms();
        let names = self.store.studies_with_expired_leases(now).await?;
        for name in &names {
            let mut tx = self.store.begin_study(name).await?;
            let plan = Plan::from_stored(&tx.study)?;
            self.sweep_expired(&mut tx, &plan, now).await?;
            let finished = finish_if_done(&mut tx, &plan).await?;
            tx.commit().await?;
            if finished {
                self.register_best(name).await;
            }
        }
        Ok(())
    }

    /// Marks expired leases lost and requeues their trials (or fails them past `max_lost`).
    async fn sweep_expired(&self, tx: &mut StudyTx, plan: &Plan, now: i64) -> Result<()> {
        for i in tx.expired.clone().into_iter().map(|n| n as usize) {
            let t = &mut tx.trials[i];
            if t.state == "running" {
                tracing::info!(study = %t.study, trial = t.number, worker = ?t.worker_id, attempt = t.attempt, "lease expired; attempt lost");
                t.lost += 1;
                release(t);
                if t.lost > plan.spec.max_lost as i64 {
                    t.state = "failed".into();
                    t.error = Some(format!("lost {} attempts to dead or preempted workers (max_lost = {})", t.lost, plan.spec.max_lost));
                } else {
                    t.state = "queued".into();
                    t.queued_time = Some(now);
                }
                let (run, state) = (t.run_uuid.clone(), t.state.clone());
                tx.save_trial(i).await?;
                tx.set_run_state(&run, run_status(&state), &[("tracker.state".into(), state)]).await?;
            }
        }
        Ok(())
    }

    /// Chooses the work for a worker in one study, and leases it.
    async fn pick(&self, tx: &mut StudyTx, plan: &Plan, worker_id: &str, now: i64) -> Result<Option<TrialRow>> {
        let active = tx.trials.iter().filter(|t| t.state == "running").count() as u64;
        if plan.spec.max_concurrent.is_some_and(|m| active >= m) {
            return Ok(None);
        }
        // 1. Requeued trials first, oldest requeue first: they hold compute already spent.
        let requeued = tx.trials.iter().filter(|t| t.state == "queued").min_by_key(|t| (t.queued_time, t.number)).map(|t| t.number);
        let mut chosen: Option<(usize, Option<i64>)> = requeued.map(|n| (n as usize, None));
        // 2. A promotion of a paused trial (ASHA's get_job), 3. else a new trial.
        if chosen.is_none() {
            let history = History::new(plan.direction, &tx.views);
            if let Some((n, until)) = plan.scheduler().promote(&history) {
                chosen = Some((n as usize, Some(until as i64)));
            } else if (tx.trials.len() as u64) < plan.spec.max_trials {
                let number = tx.trials.len() as u64;
                let sampler = plan.sampler.build(plan.spec.seed, Some(plan.spec.max_trials as usize));
                let mut rng = tuner::trial_rng(plan.spec.seed, number);
                let params = sampler.sample(&plan.space, &history, number, &mut rng);
                // Inserted already leased, with its final tags: one write per row instead of an
                // insert followed by updates of the trial and its run.
                let attempt = 1;
                let row = TrialRow {
                    study: plan.spec.name.clone(),
                    number: number as i64,
                    run_uuid: uuid::Uuid::new_v4().simple().to_string(),
                    params: serde_json::to_string(&params).map_err(|e| Error::Internal(e.into()))?,
                    state: "running".into(),
                    value: None,
                    last_step: None,
                    last_value: None,
                    checkpoint: None,
                    checkpoint_step: None,
                    target_step: None,
                    attempt,
                    lease_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                    worker_id: Some(worker_id.to_owned()),
                    lease_expires: Some(self.expires(now)),
                    leased_time: Some(now),
                    queued_time: None,
                    failures: 0,
                    lost: 0,
                    error: None,
                };
                let artifact_location = tx.artifact_location().await?;
                let run_params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.clone(), param_string(v))).collect();
                let tags = vec![
                    ("tracker.study".to_owned(), plan.spec.name.clone()),
                    ("tracker.trial".to_owned(), number.to_string()),
                    ("tracker.state".to_owned(), "running".to_owned()),
                    ("tracker.worker".to_owned(), worker_id.to_owned()),
                    ("tracker.attempt".to_owned(), attempt.to_string()),
                ];
                let experiment_id = tx.study.experiment_id;
                tx.insert_trial(row.clone(), experiment_id, &artifact_location, &run_params, &tags).await?;
                tracing::info!(study = %row.study, trial = row.number, attempt, worker = worker_id, "trial leased");
                return Ok(Some(row));
            }
        }
        let Some((index, target)) = chosen else { return Ok(None) };
        let t = &mut tx.trials[index];
        t.state = "running".into();
        t.attempt += 1;
        t.lease_id = Some(uuid::Uuid::new_v4().simple().to_string());
        t.worker_id = Some(worker_id.to_owned());
        t.leased_time = Some(now);
        t.lease_expires = Some(self.expires(now));
        if target.is_some() {
            t.target_step = target;
        }
        let t = t.clone();
        tx.save_trial(index).await?;
        tx.set_run_state(
            &t.run_uuid,
            "RUNNING",
            &[
                ("tracker.state".into(), "running".into()),
                ("tracker.worker".into(), worker_id.to_owned()),
                ("tracker.attempt".into(), t.attempt.to_string()),
            ],
        )
        .await?;
        tracing::info!(study = %t.study, trial = t.number, attempt = t.attempt, worker = worker_id, "trial leased");
        Ok(Some(t))
    }

    fn assigned(&self, plan: &Plan, t: &TrialRow, experiment_id: i64) -> LeaseResponse {
        let params: Params = serde_json::from_str(&t.params).unwrap_or_default();
        let resume = match (&t.checkpoint, t.checkpoint_step) {
            (Some(c), Some(s)) => Some(Resume { checkpoint: c.clone(), step: s as u64 }),
            _ => None,
        };
        let from = t.last_step.map(|s| s as u64);
        let next_milestone = match from {
            None => plan.scheduler().first_milestone(t.number as u64),
            Some(s) => plan.milestone_after(s),
        };
        let max_resource = t.target_step.map(|s| s as u64).or(plan.max_resource());
        LeaseResponse {
            assignment: Some(Assignment {
                study: t.study.clone(),
                trial: t.number as u64,
                run_id: t.run_uuid.clone(),
                experiment_id: experiment_id.to_string(),
                attempt: t.attempt as u32,
                lease_id: t.lease_id.clone().unwrap_or_default(),
                params,
                resume,
                last_step: from,
                next_milestone,
                max_resource,
                objective: plan.spec.objective.clone(),
                run: plan.spec.run.clone(),
                heartbeat_s: self.timing.heartbeat().as_secs_f64(),
            }),
            reason: None,
            more_work: true,
            retry_after_s: 0.0,
        }
    }

    /// Opens the study, sweeps expired leases, and returns the trial if `lease_id` is its current
    /// or last fencing token. A trial with another token gets 409.
    async fn fenced(&self, study: &str, number: u64, lease_id: &str) -> Result<(StudyTx, Plan)> {
        let mut tx = self.store.begin_study(study).await?;
        let plan = Plan::from_stored(&tx.study)?;
        self.sweep_expired(&mut tx, &plan, now_ms()).await?;
        let Some(t) = tx.trials.get(number as usize) else {
            return Err(Error::NotFound(format!("Trial {number} of study '{study}' does not exist.")));
        };
        if t.lease_id.as_deref() != Some(lease_id) {
            let attempt = t.attempt;
            // Commit the sweep: the requeue must survive even though this call is refused.
            tx.commit().await?;
            return Err(Error::Conflict(format!(
                "Lease '{lease_id}' is not the current lease of trial {number} of study '{study}' (attempt {attempt} holds it); the worker must stop this attempt."
            )));
        }
        Ok((tx, plan))
    }

    /// Records an intermediate value, renews the lease and answers the scheduler's decision.
    pub async fn report(&self, study: &str, number: u64, req: ReportRequest) -> Result<ReportResponse> {
        if !req.value.is_finite() {
            return Err(Error::InvalidParameter(format!(
                "Report value must be finite, got {}; fail the trial instead if training diverged.",
                req.value
            )));
        }
        let step = i64::try_from(req.step).map_err(|_| Error::InvalidParameter("`step` is too large".into()))?;
        let (mut tx, plan) = self.fenced(study, number, &req.lease_id).await?;
        let idx = number as usize;
        // A retried report gets the answer it got the first time.
        let previous = tx.reports.iter().find(|r| r.number == number as i64 && r.step == step).cloned();
        if let Some(prev) = previous.filter(|p| p.value == req.value && p.attempt == tx.trials[idx].attempt) {
            let state = tx.trials[idx].state.clone();
            tx.commit().await?;
            return Ok(ReportResponse { decision: prev.decision, next_milestone: prev.next_milestone.map(|m| m as u64), state });
        }
        let t = &tx.trials[idx];
        if t.state != "running" {
            let state = t.state.clone();
            tx.commit().await?;
            return Err(Error::Conflict(format!("Trial {number} of study '{study}' is {state}; its lease is no longer active.")));
        }
        if let Some(last) = t.last_step.filter(|last| step <= *last) {
            return Err(Error::InvalidParameter(format!(
                "Report steps must increase: trial {number} already reported step {last}, got step {step}."
            )));
        }
        // The scheduler judges the report as part of the history; the tx's copy is discarded if
        // anything below fails.
        tx.views[idx].intermediate.insert(req.step, req.value);
        let history = History::new(plan.direction, &tx.views);
        let decision = plan.scheduler().on_report(&history, number, req.step, req.value);
        let expires = self.expires(now_ms());
        let t = &mut tx.trials[idx];
        let previous_rung = t.last_step.and_then(|s| plan.rung(s as u64));
        t.last_step = Some(step);
        t.last_value = Some(req.value);
        if let Some(c) = &req.checkpoint {
            t.checkpoint = Some(c.clone());
            t.checkpoint_step = Some(step);
        }
        t.lease_expires = Some(expires);
        let (decision_name, next) = match decision {
            Decision::Continue { next_milestone } => ("continue", next_milestone),
            Decision::Stop => {
                if plan.max_resource().is_some_and(|m| req.step >= m) {
                    t.state = "complete".into();
                    t.value = Some(req.value);
                } else {
                    t.state = "pruned".into();
                }
                release(t);
                ("stop", None)
            }
            Decision::Pause => {
                t.state = "paused".into();
                release(t);
                ("pause", None)
            }
        };
        let t = t.clone();
        tx.save_trial(idx).await?;
        tx.insert_report(ReportRow {
            number: t.number,
            step,
            value: req.value,
            attempt: t.attempt,
            decision: decision_name.into(),
            next_milestone: next.map(|m| m as i64),
        })
        .await?;
        if req.log_metric {
            tx.log_metric(&t.run_uuid, &plan.spec.objective.metric, req.value, step).await?;
        }
        // The run's status and tags change only when the trial's state or rung does; most
        // reports touch neither, so they cost no extra writes.
        let rung = plan.rung(req.step);
        if t.state != "running" || rung != previous_rung {
            let mut tags = vec![("tracker.state".to_owned(), t.state.clone())];
            if let Some(rung) = rung {
                tags.push(("tracker.rung".into(), rung.to_string()));
            }
            tx.set_run_state(&t.run_uuid, run_status(&t.state), &tags).await?;
        }
        let finished = finish_if_done(&mut tx, &plan).await?;
        tx.commit().await?;
        if finished {
            self.register_best(&plan.spec.name).await;
        }
        Ok(ReportResponse { decision: decision_name.into(), next_milestone: next, state: t.state })
    }

    /// The command finished: the trial is complete with `value` or its last reported value.
    pub async fn complete(&self, study: &str, number: u64, req: CompleteRequest) -> Result<TrialInfo> {
        if let Some(v) = req.value.filter(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter(format!("`value` must be finite, got {v}")));
        }
        let (mut tx, plan) = self.fenced(study, number, &req.lease_id).await?;
        let idx = number as usize;
        let t = &tx.trials[idx];
        if t.state == "complete" && (req.value.is_none() || req.value == t.value) {
            let info = trial_info(t)?;
            tx.commit().await?;
            return Ok(info);
        }
        if t.state != "running" {
            let state = t.state.clone();
            tx.commit().await?;
            return Err(Error::Conflict(format!("Trial {number} of study '{study}' is {state}; it cannot be completed.")));
        }
        let Some(value) = req.value.or(t.last_value) else {
            return Err(Error::InvalidParameter(format!(
                "Trial {number} reported no value: pass `value`, or report '{}' before completing.",
                plan.spec.objective.metric
            )));
        };
        if req.value.is_some() && t.last_value != req.value {
            let (run, step) = (t.run_uuid.clone(), t.last_step.unwrap_or(0));
            tx.log_metric(&run, &plan.spec.objective.metric, value, step).await?;
        }
        let t = &mut tx.trials[idx];
        let worker = t.worker_id.clone();
        t.state = "complete".into();
        t.value = Some(value);
        release(t);
        let t = t.clone();
        tx.save_trial(idx).await?;
        tx.set_run_state(&t.run_uuid, "FINISHED", &[("tracker.state".into(), "complete".into())]).await?;
        let finished = finish_if_done(&mut tx, &plan).await?;
        tx.commit().await?;
        if finished {
            self.register_best(&plan.spec.name).await;
        }
        if let Some(w) = worker {
            self.store.set_worker_health(&w, "active", 0).await?;
        }
        trial_info(&t)
    }

    /// The attempt failed: retried from its checkpoint, or failed for good past `max_failures`.
    pub async fn fail(&self, study: &str, number: u64, req: FailRequest) -> Result<TrialInfo> {
        let (mut tx, plan) = self.fenced(study, number, &req.lease_id).await?;
        let now = now_ms();
        let idx = number as usize;
        let t = &mut tx.trials[idx];
        if t.state != "running" {
            let state = t.state.clone();
            tx.commit().await?;
            return Err(Error::Conflict(format!("Trial {number} of study '{study}' is {state}; it cannot fail now.")));
        }
        let worker = t.worker_id.clone();
        let quick = t.leased_time.is_some_and(|l| now - l < QUICK_FAILURE_MS);
        t.failures += 1;
        t.error = Some(req.error.chars().take(MAX_ERROR_CHARS).collect());
        release(t);
        if t.failures >= plan.spec.max_failures as i64 {
            t.state = "failed".into();
        } else {
            t.state = "queued".into();
            t.queued_time = Some(now);
        }
        let t = t.clone();
        tx.save_trial(idx).await?;
        tx.set_run_state(&t.run_uuid, run_status(&t.state), &[("tracker.state".into(), t.state.clone())]).await?;
        let finished = finish_if_done(&mut tx, &plan).await?;
        tx.commit().await?;
        if finished {
            self.register_best(&plan.spec.name).await;
        }
        if let Some(w) = worker {
            let row = self.store.get_worker(&w).await?;
            let quick_failures = if quick { row.quick_failures + 1 } else { 0 };
            let status = if quick_failures >= MAX_QUICK_FAILURES { "paused" } else { row.status.as_str() };
            if status == "paused" && row.status != "paused" {
                tracing::warn!(worker = %w, quick_failures, "pausing a worker whose trials keep failing at once");
            }
            self.store.set_worker_health(&w, status, quick_failures).await?;
        }
        trial_info(&t)
    }

    /// The worker gives the trial back without fault; it is requeued at the front.
    pub async fn release(&self, study: &str, number: u64, req: ReleaseRequest) -> Result<TrialInfo> {
        let (mut tx, plan) = self.fenced(study, number, &req.lease_id).await?;
        let idx = number as usize;
        let t = &mut tx.trials[idx];
        if t.state != "running" {
            // Already stopped, pruned or paused by a decision: nothing to give back.
            let info = trial_info(t)?;
            tx.commit().await?;
            return Ok(info);
        }
        tracing::info!(study, trial = number, reason = %req.reason, "trial released by its worker");
        t.lost += 1;
        release(t);
        if t.lost > plan.spec.max_lost as i64 {
            t.state = "failed".into();
            t.error = Some(format!("lost {} attempts (max_lost = {}); last: {}", t.lost, plan.spec.max_lost, req.reason));
        } else {
            t.state = "queued".into();
            t.queued_time = Some(now_ms());
        }
        let t = t.clone();
        tx.save_trial(idx).await?;
        tx.set_run_state(&t.run_uuid, run_status(&t.state), &[("tracker.state".into(), t.state.clone())]).await?;
        let finished = finish_if_done(&mut tx, &plan).await?;
        tx.commit().await?;
        if finished {
            self.register_best(&plan.spec.name).await;
        }
        trial_info(&t)
    }

    /// Renews the worker's leases; a lease that is no longer current gets a `stop` command, and
    /// every lease of a draining worker a `preempt` command.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatResponse> {
        let worker = self.store.get_worker(&req.worker_id).await?;
        let now = now_ms();
        self.store.touch_worker(&req.worker_id, now).await?;
        let mut commands = Vec::new();
        for lease in &req.leases {
            // Renewed even when draining: the lease must outlive the release that follows.
            if self.store.renew_lease(lease, &req.worker_id, now, self.expires(now)).await? {
                if worker.status == WORKER_DRAINING {
                    let reason = format!("worker '{}' is draining", worker.worker_id);
                    commands.push(Command { lease_id: lease.clone(), action: "preempt".into(), reason });
                }
                continue;
            }
            let reason = match self.store.trial_by_lease(lease).await? {
                None => "unknown lease".to_owned(),
                Some(t) if t.worker_id.as_deref() != Some(req.worker_id.as_str()) && t.state == "running" => {
                    "the lease expired and the trial runs elsewhere".to_owned()
                }
                Some(t) if t.state == "running" => "the lease expired".to_owned(),
                Some(t) => format!("trial {} of study '{}' is {}", t.number, t.study, t.state),
            };
            commands.push(Command { lease_id: lease.clone(), action: "stop".into(), reason });
        }
        Ok(HeartbeatResponse { commands })
    }
}

/// Commits `tx`, writing the worker's `last_seen` with it when `touch` holds one (then taken).
async fn commit_touching(mut tx: StudyTx, worker_id: &str, touch: &mut Option<i64>) -> Result<()> {
    if let Some(now) = *touch {
        tx.touch_worker(worker_id, now);
    }
    tx.commit().await?;
    *touch = None;
    Ok(())
}

/// Marks the study finished when no trial can run any more; paused trials that no promotion
/// will take are pruned at their rung. True when this call finished it.
async fn finish_if_done(tx: &mut StudyTx, plan: &Plan) -> Result<bool> {
    if !matches!(tx.study.status.as_str(), "running" | "paused") || (tx.trials.len() as u64) < plan.spec.max_trials {
        return Ok(false);
    }
    if tx.trials.iter().any(|t| t.state == "running" || t.state == "queued") {
        return Ok(false);
    }
    if tx.trials.iter().any(|t| t.state == "paused") {
        if plan.scheduler().promote(&History::new(plan.direction, &tx.views)).is_some() {
            return Ok(false);
        }
        for i in 0..tx.trials.len() {
            if tx.trials[i].state == "paused" {
                tx.trials[i].state = "pruned".into();
                let run = tx.trials[i].run_uuid.clone();
                tx.save_trial(i).await?;
                tx.set_run_state(&run, "KILLED", &[("tracker.state".into(), "pruned".into())]).await?;
            }
        }
    }
    tracing::info!(study = %tx.study.name, "study finished");
    tx.set_status("finished").await?;
    Ok(true)
}

fn check_worker_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidParameter("`worker_id` must have 1 to 200 printable characters".into()));
    }
    Ok(())
}

fn trial_info(t: &TrialRow) -> Result<TrialInfo> {
    let params: Params = serde_json::from_str(&t.params).map_err(|e| Error::Internal(anyhow::anyhow!("stored params: {e}")))?;
    Ok(TrialInfo {
        number: t.number as u64,
        run_id: t.run_uuid.clone(),
        state: t.state.clone(),
        params,
        value: t.value.or(t.last_value),
        last_step: t.last_step.map(|s| s as u64),
        attempt: t.attempt as u32,
        worker_id: t.worker_id.clone(),
        checkpoint: t.checkpoint.clone(),
        failures: t.failures as u32,
        lost: t.lost as u32,
        error: t.error.clone(),
    })
}

fn study_info(s: &StudyRow, trials: &[TrialRow]) -> Result<StudyInfo> {
    let spec: StudySpec = serde_json::from_str(&s.spec).map_err(|e| Error::Internal(anyhow::anyhow!("stored spec: {e}")))?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for t in trials {
        *counts.entry(t.state.clone()).or_default() += 1;
    }
    let sign = if spec.objective.direction == "maximize" { -1.0 } else { 1.0 };
    let best = trials
        .iter()
        .filter(|t| t.state == "complete")
        .filter_map(|t| t.value.map(|v| (sign * v, t)))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.number.cmp(&b.1.number)))
        .map(|(_, t)| trial_info(t))
        .transpose()?;
    Ok(StudyInfo {
        name: s.name.clone(),
        experiment_id: s.experiment_id.to_string(),
        status: s.status.clone(),
        spec,
        created_time: s.created_time,
        trial_counts: counts,
        best,
        registered: None,
    })
}

fn worker_info(w: &WorkerRow) -> Result<WorkerInfo> {
    Ok(WorkerInfo {
        worker_id: w.worker_id.clone(),
        status: w.status.clone(),
        resources: serde_json::from_str(&w.resources).unwrap_or(Value::Null),
        labels: serde_json::from_str(&w.labels).unwrap_or_default(),
        last_seen: w.last_seen,
        quick_failures: w.quick_failures as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> StudySpec {
        serde_json::from_value(json!({
            "name": "s1",
            "objective": {"metric": "loss", "direction": "minimize"},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": true}},
            "scheduler": {"kind": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
            "max_trials": 4,
            "run": {"command": ["true"]}
        }))
        .unwrap()
    }

    fn err(spec: StudySpec) -> String {
        match Plan::compile(spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spec accepted"),
        }
    }

    #[test]
    fn valid_spec_compiles_with_asha_milestones() {
        let plan = Plan::compile(spec()).unwrap();
        assert_eq!(plan.milestones, vec![1, 3]);
        assert_eq!(plan.rung(0), None);
        assert_eq!(plan.rung(4), Some(1));
        assert_eq!(plan.milestone_after(1), Some(3));
    }

    #[test]
    fn spec_errors_name_the_field() {
        let mut s = spec();
        s.name = "bad name".into();
        assert!(err(s).contains("`name`"));
        let mut s = spec();
        s.objective.direction = "up".into();
        assert!(err(s).contains("`objective.direction`"));
        let mut s = spec();
        s.space = json!({"lr": {"type": "float", "low": 1.0, "high": 0.5}});
        assert!(err(s).contains("`space`"));
        let mut s = spec();
        s.scheduler.max_resource = None;
        assert!(err(s).contains("`scheduler.max_resource`"));
        let mut s = spec();
        s.scheduler.kind = "pbt".into();
        assert!(err(s).contains("`scheduler.kind`"));
        let mut s = spec();
        s.sampler = "cmaes".into();
        assert!(err(s).contains("`sampler`"));
        let mut s = spec();
        s.run.command = None;
        assert!(err(s).contains("`run`"));
        let mut s = spec();
        s.max_trials = 0;
        assert!(err(s).contains("`max_trials`"));
        let mut s = spec();
        s.scheduler = api::studies::SchedulerSpec { kind: "fifo".into(), extrapolate: Some(true), ..Default::default() };
        assert!(err(s).contains("`scheduler.extrapolate`"));
    }

    #[test]
    fn extrapolate_reaches_the_asha_rule() {
        let plan = Plan::compile(spec()).unwrap();
        assert!(matches!(plan.scheduler, SchedulerKind::AshaStop(c) if !c.extrapolate));
        let mut s = spec();
        s.scheduler.extrapolate = Some(true);
        let plan = Plan::compile(s).unwrap();
        assert!(matches!(plan.scheduler, SchedulerKind::AshaStop(c) if c.extrapolate && c.max_resource == 9));
        let json: StudySpec = serde_json::from_value(json!({
            "name": "s2", "objective": {"metric": "loss", "direction": "minimize"}, "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "scheduler": {"kind": "asha_promote", "max_resource": 81, "extrapolate": true}, "max_trials": 4, "run": {"command": ["true"]}
        }))
        .unwrap();
        assert!(matches!(Plan::compile(json).unwrap().scheduler, SchedulerKind::AshaPromote(c) if c.extrapolate));
    }

    #[test]
    fn toml_specs_parse_and_unknown_fields_are_named() {
        let toml = r#"
            name = "lora"
            max_trials = 8
            [objective]
            metric = "eval_loss"
            direction = "minimize"
            [space.lr]
            type = "float"
            low = 1e-5
            high = 1e-2
            log = true
            [run]
            command = ["python3", "train.py"]
        "#;
        let s = parse_spec(toml, SpecFormat::Toml).unwrap();
        assert_eq!(s.name, "lora");
        assert_eq!(s.sampler, "auto");
        Plan::compile(s).unwrap();
        let e = parse_spec(&toml.replace("max_trials", "max_trails"), SpecFormat::Toml).unwrap_err().to_string();
        assert!(e.contains("max_trails"), "{e}");
    }

    #[test]
    fn yaml_and_json_specs_mean_what_the_toml_one_does() {
        let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/study/spec.toml")).unwrap();
        let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/study/spec.yaml")).unwrap();
        let from_toml = parse_spec(&toml, SpecFormat::Toml).unwrap();
        let from_yaml = parse_spec(&yaml, SpecFormat::Yaml).unwrap();
        assert_eq!(serde_json::to_value(&from_yaml).unwrap(), serde_json::to_value(&from_toml).unwrap());
        let json = serde_json::to_string(&from_toml).unwrap();
        assert_eq!(serde_json::to_value(parse_spec(&json, SpecFormat::Json).unwrap()).unwrap(), serde_json::to_value(&from_toml).unwrap());

        let e = parse_spec(&yaml.replace("max_trials:", "max_trails:"), SpecFormat::Yaml).unwrap_err().to_string();
        assert!(e.contains("max_trails") && e.contains("line"), "the field and where it is: {e}");
        // Exponents without a dot are floats too, as people write them.
        let short = parse_spec(&yaml.replace("1.0e-5", "1e-5"), SpecFormat::Yaml).unwrap();
        assert_eq!(serde_json::to_value(&short).unwrap(), serde_json::to_value(&from_toml).unwrap());
        let e = parse_spec("name: [unclosed", SpecFormat::Yaml).unwrap_err().to_string();
        assert!(e.starts_with("Invalid study spec"), "{e}");

        use std::path::Path;
        assert_eq!(SpecFormat::of(Path::new("s.YML"), ""), SpecFormat::Yaml);
        assert_eq!(SpecFormat::of(Path::new("s.yaml"), "{"), SpecFormat::Yaml);
        assert_eq!(SpecFormat::of(Path::new("s.json"), ""), SpecFormat::Json);
        assert_eq!(SpecFormat::of(Path::new("spec"), " {\"name\": 1}"), SpecFormat::Json);
        assert_eq!(SpecFormat::of(Path::new("spec"), "name = 1"), SpecFormat::Toml);
    }
}
