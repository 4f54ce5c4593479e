//! The seam between the agent and whatever trains: the [`Trainer`] trait, what a trainer is given
//! ([`TrialContext`]) and how it talks back ([`Reporter`]).
//!
//! Trainers know nothing about leases, heartbeats or HTTP: they train, report values through the
//! [`Reporter`] and stop when the cancellation token fires. The exec trainer
//! ([`super::exec::ExecTrainer`]) runs a command; a built-in (burn) trainer can plug in later
//! through [`super::Agent::with_trainer`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::studies::Assignment;
use tokio_util::sync::CancellationToken;

use super::session::TrialSession;

/// Everything a trainer needs to know about the trial it runs.
#[derive(Debug, Clone)]
pub struct TrialContext {
    /// The lease as the tracker handed it out.
    pub assignment: Assignment,
    /// This worker's id.
    pub worker_id: String,
    /// `<work dir>/<study>/trial-<n>/attempt-<a>`, absolute; the command's working directory.
    pub attempt_dir: PathBuf,
    /// `<attempt dir>/params.json`: the trial's params.
    pub params_file: PathBuf,
    /// `<attempt dir>/checkpoints`, created: where the trainer writes checkpoints.
    pub checkpoint_dir: PathBuf,
    /// `<attempt dir>/resume`, holding the downloaded checkpoint, when the trial resumes.
    pub resume_dir: Option<PathBuf>,
    /// The tracker's URI, for the trainer's own MLflow logging.
    pub tracking_uri: String,
    /// The bearer token the worker uses (`MLFLOW_TRACKING_TOKEN`), passed on to the trainer.
    pub tracking_token: Option<String>,
    /// How long a stopped trainer may take to exit before it is killed.
    pub stop_grace: Duration,
}

/// An intermediate result of a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialReport {
    /// Training step (resource used so far).
    pub step: u64,
    /// The objective value at that step.
    pub value: f64,
    /// A local checkpoint (file or folder) taken at this step, complete on disk; the reporter
    /// uploads it to `checkpoints/step-<step>/` of the run before reporting.
    pub checkpoint: Option<PathBuf>,
    /// Further metrics to log to the run at this step.
    pub metrics: BTreeMap<String, f64>,
}

/// What the trainer should do after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep training; report next at `next_milestone` when the scheduler named one.
    Continue {
        /// Next step at which the scheduler wants a report.
        next_milestone: Option<u64>,
    },
    /// Stop training now (pruned, paused, finished, the lease lost or the worker shutting down).
    /// The cancellation token given to [`Trainer::train`] fires too.
    End,
}

/// How a trainer's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainOutcome {
    /// Training finished normally (exit code 0).
    Succeeded,
    /// Training failed; the message goes to the tracker (`trials/{n}/fail`).
    Failed(String),
    /// Training was ended because the cancellation token fired.
    Cancelled,
}

/// Something that trains one trial.
#[async_trait::async_trait]
pub trait Trainer: Send + Sync {
    /// Trains the trial described by `ctx`, reporting through `reporter`, until done or until
    /// `cancel` fires (then it must stop promptly, within `ctx.stop_grace`, and return
    /// [`TrainOutcome::Cancelled`]). An `Err` is reported as a failure of the attempt.
    async fn train(&self, ctx: &TrialContext, reporter: Reporter, cancel: CancellationToken) -> anyhow::Result<TrainOutcome>;
}

/// The trainer's handle for reporting intermediate values. Cheap to clone.
///
/// Reports reach the tracker with strictly increasing steps: a report at a step already reported
/// (for example forwarded from the run's metric history) is skipped.
#[derive(Clone)]
pub struct Reporter {
    pub(super) session: Arc<TrialSession>,
}

impl Reporter {
    /// Uploads the report's checkpoint, logs its metrics and reports the value; returns what the
    /// scheduler decided. Transient tracker errors are retried until the trial ends; other errors
    /// are logged and read as [`Decision::Continue`], so a flaky report never kills training.
    pub async fn report(&self, report: TrialReport) -> Decision {
        self.session.report_from_trainer(report).await
    }

    /// [`Self::report`] for trainers that run on a blocking thread (`spawn_blocking`), such as a
    /// training loop on the CPU or GPU. Must not be called from an async task.
    pub fn report_blocking(&self, report: TrialReport) -> Decision {
        tokio::runtime::Handle::current().block_on(self.report(report))
    }

    /// The next step at which the scheduler wants a report, as last announced.
    pub fn next_milestone(&self) -> Option<u64> {
        self.session.next_milestone()
    }

    /// Whether the trial is ending (stopped, paused, lease lost or shutdown).
    pub fn is_ending(&self) -> bool {
        self.session.is_ending()
    }
}
