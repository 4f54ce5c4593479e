//! The built-in trainer `korean-lora`: runs a study's trial through [`super::training::train`].
//!
//! A study names it with `run.trainer = "korean-lora"`; `run.config` is a [`TrainConfig`] (TOML
//! tables as JSON objects) and the trial's params override its tunable fields (see
//! [`TrainConfig::with_params`]). `max_steps` is the scheduler's `max_resource` when it has one, so
//! milestones are optimizer steps. At each milestone the trainer evaluates, checkpoints, and
//! reports the study's objective metric (for example `eval_exact_match` or `eval_loss`); a
//! `stop` or `pause` ends training at once. A resumed attempt continues from the checkpoint the
//! tracker hands over, at the exact step and data position. The last step's adapter is uploaded
//! to the run's `adapter/` artifacts in PEFT format before its report.

use std::collections::BTreeMap;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::training::{train, Observer, TrainConfig};
use super::TrainBackend;
use crate::agent::{Decision, Reporter, TrainOutcome, Trainer, TrialContext, TrialReport};
use crate::TrackerClient;

/// The name studies use in `run.trainer`.
pub const TRAINER_NAME: &str = "korean-lora";

/// The `korean-lora` trainer (CPU backend; CUDA with the `cuda` feature).
#[derive(Debug, Default)]
pub struct KoreanLoraTrainer;

/// Reads the trial's config: `run.config` under the trial's params, `max_steps` from the
/// scheduler, outputs in the attempt folder.
pub fn trial_config(ctx: &TrialContext) -> anyhow::Result<TrainConfig> {
    let a = &ctx.assignment;
    let base = a.run.config.clone().unwrap_or_else(|| serde_json::json!({}));
    let mut config: TrainConfig = serde_json::from_value(base).map_err(|e| anyhow::anyhow!("`run.config`: {e}"))?;
    if let Some(max) = a.max_resource {
        config.train.max_steps = max;
    }
    let params = serde_json::to_value(&a.params)?;
    let params = params.as_object().cloned().unwrap_or_default();
    let mut config = config.with_params(&params)?;
    config.output_dir = ctx.attempt_dir.join("output");
    // Milestones decide when to evaluate; no extra evaluations in between.
    config.train.eval_every = 0;
    Ok(config)
}

/// Reports at the tracker's milestones and stops when told.
struct TrialObserver<'a> {
    reporter: Reporter,
    cancel: CancellationToken,
    objective: &'a str,
    last_reported: u64,
    /// The last step: its adapter goes to the run's `adapter/` before the final report, since
    /// the tracker may end the trial (complete) in its answer to that report.
    final_step: u64,
    client: TrackerClient,
    run_id: String,
    error: Option<String>,
}

impl TrialObserver<'_> {
    fn upload_adapter(&self, checkpoint: &Path) -> Result<(), String> {
        let handle = tokio::runtime::Handle::current();
        for file in [super::peft::CONFIG_FILE, super::peft::WEIGHTS_FILE] {
            handle.block_on(self.client.upload_artifact(&self.run_id, &checkpoint.join(file), &format!("adapter/{file}"))).map_err(|e| format!("uploading the adapter: {e}"))?;
        }
        Ok(())
    }
}

impl Observer for TrialObserver<'_> {
    fn wants_eval(&mut self, step: u64) -> bool {
        self.reporter.next_milestone().is_some_and(|m| step >= m && step > self.last_reported)
    }

    fn on_eval(&mut self, step: u64, metrics: &BTreeMap<String, f64>, checkpoint: &Path) -> bool {
        let mut metrics = metrics.clone();
        // The objective reaches the run as the report's value; logging it again would double it.
        let Some(value) = metrics.remove(self.objective) else {
            let known: Vec<&String> = metrics.keys().collect();
            self.error = Some(format!("the objective metric `{}` is not one the korean-lora trainer logs ({known:?})", self.objective));
            return false;
        };
        if step >= self.final_step {
            if let Err(e) = self.upload_adapter(checkpoint) {
                self.error = Some(e);
                return false;
            }
        }
        self.last_reported = step;
        let report = TrialReport { step, value, checkpoint: Some(checkpoint.to_owned()), metrics };
        matches!(self.reporter.report_blocking(report), Decision::Continue { .. })
    }

    fn should_stop(&mut self) -> bool {
        self.cancel.is_cancelled() || self.reporter.is_ending()
    }
}

#[async_trait::async_trait]
impl Trainer for KoreanLoraTrainer {
    async fn train(&self, ctx: &TrialContext, reporter: Reporter, cancel: CancellationToken) -> anyhow::Result<TrainOutcome> {
        let config = match trial_config(ctx) {
            Ok(config) => config,
            Err(e) => return Ok(TrainOutcome::Failed(format!("{e:#}"))),
        };
        let objective = ctx.assignment.objective.metric.clone();
        let resume = ctx.resume_dir.clone();
        let last_reported = ctx.assignment.last_step.unwrap_or(0);
        let client = TrackerClient::new(&ctx.tracking_uri)?;
        let client = match &ctx.tracking_token {
            Some(token) => client.with_token(token.clone()),
            None => client,
        };
        let run_id = ctx.assignment.run_id.clone();
        let token = cancel.clone();
        let result = tokio::task::spawn_blocking(move || {
            let final_step = config.train.max_steps;
            let mut observer = TrialObserver { reporter, cancel: token, objective: &objective, last_reported, final_step, client, run_id, error: None };
            let device = Default::default();
            let summary = train::<TrainBackend>(&config, &device, resume.as_deref(), &mut observer);
            (summary, observer.error)
        })
        .await?;
        Ok(match result {
            (_, Some(error)) => TrainOutcome::Failed(error),
            (Err(e), None) => TrainOutcome::Failed(e.to_string()),
            // Ended by the tracker (pruned, paused, completed at the last report) or the worker.
            (Ok(summary), None) if cancel.is_cancelled() || !summary.finished => TrainOutcome::Cancelled,
            (Ok(_), None) => TrainOutcome::Succeeded,
        })
    }
}
