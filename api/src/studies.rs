//! Studies and the worker protocol (`/api/tracker/...`): the tracker's own endpoints, beside the
//! MLflow API.
//!
//! A study is an experiment plus a [`StudySpec`]. Its trials are MLflow runs of that experiment.
//! Worker agents pull trials through leases:
//!
//! ```text
//! POST /api/tracker/workers/register   RegisterWorker        -> RegisterWorkerResponse
//! POST /api/tracker/workers/lease      LeaseRequest          -> LeaseResponse
//! POST /api/tracker/workers/heartbeat  HeartbeatRequest      -> HeartbeatResponse
//! POST /api/tracker/studies/{study}/trials/{n}/report    ReportRequest   -> ReportResponse
//! POST /api/tracker/studies/{study}/trials/{n}/complete  CompleteRequest -> TrialInfo
//! POST /api/tracker/studies/{study}/trials/{n}/fail      FailRequest     -> TrialInfo
//! POST /api/tracker/studies/{study}/trials/{n}/release   ReleaseRequest  -> TrialInfo
//! ```
//!
//! Every trial call carries the `lease_id` of the assignment (the fencing token). A call with a
//! lease that is no longer the trial's current one gets 409 `RESOURCE_CONFLICT` and changes
//! nothing, so a worker that lost its lease cannot corrupt the study.
//!
//! Study administration:
//!
//! ```text
//! POST /api/tracker/studies/create     {"spec": StudySpec}   -> {"study": StudyInfo}
//! GET  /api/tracker/studies/list                             -> {"studies": [StudyInfo]}
//! GET  /api/tracker/studies/get?name=  -> {"study": StudyInfo, "trials": [TrialInfo]}
//! POST /api/tracker/studies/pause|resume|stop  {"name": ..}  -> {"study": StudyInfo}
//! GET  /api/tracker/workers/list                             -> {"workers": [WorkerInfo]}
//! POST /api/tracker/workers/resume     {"worker_id": ..}     -> {"worker": WorkerInfo}
//! POST /api/tracker/workers/drain      {"worker_id": ..}     -> {"worker": WorkerInfo}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Params of a trial: parameter name to value (number, string or bool), as the tuner samples them.
pub type Params = BTreeMap<String, Value>;

/// What a study optimizes and how. Unknown fields are refused, so a typo is an error that names
/// the field rather than a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// Unique study name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The experiment that holds the trials' runs; the study name when absent. Created if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The objective metric and its direction.
    pub objective: Objective,
    /// The search space, in the SPACE JSON of the tuner (`{"lr": {"type": "float", "low": ..,
    /// "high": .., "log": true}, ...}`), with optional `condition`s.
    pub space: Value,
    /// `random`, `grid`, `qmc`, `tpe`, `gp` or `auto` (the default).
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Early stopping; FIFO (none) when absent.
    #[serde(default)]
    pub scheduler: SchedulerSpec,
    /// Trials to run in total.
    pub max_trials: u64,
    /// Trials leased at once; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Seed of every sampling decision.
    #[serde(default)]
    pub seed: u64,
    /// Attempts a trial may fail (non-zero exit, error) before it is marked failed.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Attempts a trial may lose to dead or preempted workers before it is marked failed. Kept
    /// apart from `max_failures`: a spot preemption is not the trial's fault.
    #[serde(default = "default_max_lost")]
    pub max_lost: u32,
    /// What a worker runs for each trial.
    pub run: RunSpec,
    /// Register the best trial's artifacts (its adapter) as a new model version when the study
    /// finishes; nothing is registered when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<RegisterSpec>,
}

/// Where a finished study registers its best trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    /// The registered model; created when missing.
    pub model: String,
    /// The folder of the best trial's run artifacts that becomes the version's source
    /// (`runs:/<run>/<artifact_path>`); the `korean-lora` trainer uploads its adapter as `adapter`.
    #[serde(default = "default_register_artifact_path")]
    pub artifact_path: String,
    /// Promote the new version to this alias, through the model's promotion rules. A refused
    /// promotion leaves the version registered but unaliased and says why in its
    /// `tracker.promotion` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

fn default_register_artifact_path() -> String {
    "adapter".into()
}

fn default_sampler() -> String {
    "auto".into()
}
fn default_max_failures() -> u32 {
    3
}
fn default_max_lost() -> u32 {
    20
}

/// The objective of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// Metric name that trials report, e.g. `eval_loss`.
    pub metric: String,
    /// `minimize` or `maximize`.
    pub direction: String,
}

/// Early-stopping scheduler of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSpec {
    /// `fifo`, `asha` (Ray's stopping rule), `asha_promote` (pause and resume), `hyperband`,
    /// `hyperband_promote` or `median`.
    #[serde(default = "default_scheduler_kind")]
    pub kind: String,
    /// First milestone (Ray's `grace_period`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resource: Option<u64>,
    /// Full training length in steps (Ray's `max_t`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resource: Option<u64>,
    /// Reduction factor `eta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction_factor: Option<u64>,
    /// ASHA and Hyperband: judge a trial at a rung by the value its reported curve
    /// extrapolates to at `max_resource` rather than by its value there (default false). Needs
    /// at least 6 reports up to the rung; a trial with fewer is judged by its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extrapolate: Option<bool>,
}

fn default_scheduler_kind() -> String {
    "fifo".into()
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        SchedulerSpec { kind: default_scheduler_kind(), min_resource: None, max_resource: None, reduction_factor: None, extrapolate: None }
    }
}

/// What a worker runs per trial: a command, or a trainer built into the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// A command and its arguments (`["python3", "train.py"]`), run by the exec trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The name of a built-in trainer (e.g. `lora`), instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<String>,
    /// Fixed configuration of the built-in trainer, merged under the trial's params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Extra environment variables for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A study as the tracker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInfo {
    /// Study name.
    pub name: String,
    /// The experiment holding its runs.
    pub experiment_id: String,
    /// `running`, `paused` (no new leases), `stopped` (by a user) or `finished`.
    pub status: String,
    /// The spec it was created with.
    pub spec: StudySpec,
    /// Milliseconds since the epoch.
    pub created_time: i64,
    /// Trials by state (`queued`, `running`, `paused`, `complete`, `pruned`, `failed`, `stopped`).
    pub trial_counts: BTreeMap<String, u64>,
    /// The best complete trial so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialInfo>,
    /// The model version registered from the best trial when the study finished (see
    /// [`StudySpec::register`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<RegisteredVersion>,
}

/// A model version that a study registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredVersion {
    /// Registered model name.
    pub model: String,
    /// Version number.
    pub version: String,
    /// The trial it came from.
    pub trial: u64,
    /// What became of the promotion asked for by `register.alias` (empty when none was asked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub promotion: String,
}

/// A trial as the tracker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialInfo {
    /// Trial number within the study, from 0.
    pub number: u64,
    /// Its MLflow run.
    pub run_id: String,
    /// `queued`, `running`, `paused`, `complete`, `pruned`, `failed` or `stopped`.
    pub state: String,
    /// Its params.
    pub params: Params,
    /// Final objective value (complete trials), or the last reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Last reported step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<u64>,
    /// Attempts started so far.
    pub attempt: u32,
    /// Worker holding the current lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Artifact path (in the run) of the last checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Attempts that failed.
    pub failures: u32,
    /// Attempts lost to dead or preempted workers.
    pub lost: u32,
    /// Why the trial failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `workers/register`: announce a worker. Registering again with the same id is an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    /// Stable id, kept across restarts of the agent (e.g. host name plus GPU index).
    pub worker_id: String,
    /// Free-form resources, e.g. `{"gpus": 1, "cpus": 8}`.
    #[serde(default)]
    pub resources: Value,
    /// Labels, e.g. `{"zone": "a"}`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The tracker's timing rules for a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterWorkerResponse {
    /// The registered worker.
    pub worker: WorkerInfo,
    /// Seconds between heartbeats while a trial runs.
    pub heartbeat_s: f64,
    /// Seconds a lease lives without a report or heartbeat.
    pub lease_ttl_s: f64,
}

/// A worker as the tracker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Stable id.
    pub worker_id: String,
    /// `active`, or `paused` after trials kept failing at once on it.
    pub status: String,
    /// As registered.
    pub resources: Value,
    /// As registered.
    pub labels: BTreeMap<String, String>,
    /// Last contact, ms since the epoch.
    pub last_seen: i64,
    /// Trials that failed in a row within a minute of starting on this worker.
    pub quick_failures: u32,
}

/// `workers/lease`: ask for work. Idempotent: while the worker holds an unexpired lease, the same
/// assignment comes back (renewed), so a worker that restarts or retries does not start a second
/// trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The registered worker.
    pub worker_id: String,
    /// Only lease trials of this study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The trial to run, if there is work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
    /// When there is none: why (e.g. "all trials are leased", "worker paused").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When there is none: whether work may still come (false once every matching study has
    /// finished or stopped, so an agent told to exit when done can exit).
    pub more_work: bool,
    /// Seconds to wait before asking again.
    pub retry_after_s: f64,
}

/// One leased trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Study name.
    pub study: String,
    /// Trial number.
    pub trial: u64,
    /// The trial's MLflow run.
    pub run_id: String,
    /// The study's experiment.
    pub experiment_id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Fencing token: every call about this trial must carry it.
    pub lease_id: String,
    /// Params of the trial.
    pub params: Params,
    /// Where to resume from, when an earlier attempt or rung left a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// The last step the trial reported (in any attempt): the next report must be above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<u64>,
    /// First step at which the scheduler wants a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_milestone: Option<u64>,
    /// Train up to this step (the scheduler's maximum resource, or a promotion's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resource: Option<u64>,
    /// The objective metric and direction.
    pub objective: Objective,
    /// What to run.
    pub run: RunSpec,
    /// Seconds between heartbeats.
    pub heartbeat_s: f64,
}

/// A checkpoint to resume from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Artifact path in the trial's run (a folder), e.g. `checkpoints/step-9`.
    pub checkpoint: String,
    /// The step the checkpoint was taken at; training continues after it.
    pub step: u64,
}

/// `trials/{n}/report`: an intermediate objective value. Renews the lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Fencing token of the assignment.
    pub lease_id: String,
    /// Training step (resource used so far); strictly increasing per trial.
    pub step: u64,
    /// Objective value at that step; must be finite.
    pub value: f64,
    /// Artifact path of a checkpoint taken at this step, already uploaded to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Whether the tracker logs the value as the run's objective metric. False when the trial
    /// logged it itself (through `mlflow.log_metric`) and the worker only forwards it.
    #[serde(default = "default_true")]
    pub log_metric: bool,
}

fn default_true() -> bool {
    true
}

/// The scheduler's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// `continue`, `stop` (the trial is finished: pruned, or complete at the maximum resource) or
    /// `pause` (kept at its checkpoint for a later promotion). After `stop` and `pause` the lease
    /// has ended: the worker ends the command and sends nothing more about this attempt.
    pub decision: String,
    /// Next step at which to report, when continuing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_milestone: Option<u64>,
    /// The trial's state after the report.
    pub state: String,
}

/// `trials/{n}/complete`: the command finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Fencing token.
    pub lease_id: String,
    /// Final objective value; the last reported value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// `trials/{n}/fail`: the attempt failed (non-zero exit, crash). The trial is retried from its
/// last checkpoint until its `max_failures` budget is spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// Fencing token.
    pub lease_id: String,
    /// What went wrong (e.g. the exit code and the last lines of stderr).
    pub error: String,
}

/// `trials/{n}/release`: the worker gives the trial back without fault (it is being preempted or
/// shut down). The trial is requeued at the front and charged to the `max_lost` budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// Fencing token.
    pub lease_id: String,
    /// Why, for the record.
    #[serde(default)]
    pub reason: String,
}

/// `workers/heartbeat`: renews the leases a worker holds and fetches commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The worker.
    pub worker_id: String,
    /// Lease ids the worker is running.
    #[serde(default)]
    pub leases: Vec<String>,
}

/// Commands for a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// One per lease that must end now.
    pub commands: Vec<Command>,
}

/// A command about one lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The lease concerned.
    pub lease_id: String,
    /// `stop`: end the command now (SIGTERM, then SIGKILL after a grace period) and report
    /// nothing more: the lease is no longer valid (study stopped, lease expired and reassigned).
    /// `preempt`: end the command the same way, then release the trial (`trials/{n}/release`):
    /// the worker is draining, and the trial resumes elsewhere from its last checkpoint.
    pub action: String,
    /// Why.
    pub reason: String,
}
