//! The built-in trainer `korean-lora`: runs a study's trial through [`super::training::train`].
//!
//! A study names it with `run.trainer = "korean-lora"`; `run.config` is a [`TrainConfig`] (TOML
//! tables as JSON objects) and the trial's params override its tunable fields (see
//! [`TrainConfig::with_params`]). `max_steps` is the scheduler's `max_resource` when it has one, so
//! milestones are optimizer steps. At each milestone the trainer evaluates, checkpoints, and
//! reports the study's objective metric (for example `eval_exact_match` or `eval_loss`); a
//! `stop` or `pause` ends training at once. A resumed attempt continues from the checkpoint the
//! tracker hands over, at the exact step and data position. The final adapter is uploaded to the
//! run's `adapter/` artifacts in PEFT format.

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
    error: Option<String>,
}

impl Observer for TrialObserver<'_> {
    fn wants_eval(&mut self, step: u64) -> bool {
        self.reporter.next_milestone().is_some_and(|m| step >= m && step > self.last_reported)
    }

    fn on_eval(&mut self, step: u64, metrics: &BTreeMap<String, f64>, checkpoint: &Path) -> bool {
        let Some(&value) = metrics.get(self.objective) else {
            let known: Vec<&String> = metrics.keys().collect();
            self.error = Some(format!("the objective metric `{}` is not one the korean-lora trainer logs ({known:?})", self.objective));
            return false;
        };
        self.last_reported = step;
        let report = TrialReport { step, value, checkpoint: Some(checkpoint.to_owned()), metrics: metrics.clone() };
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
        let token = cancel.clone();
        let job = config.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut observer = TrialObserver { reporter, cancel: token, objective: &objective, last_reported, error: None };
            let device = Default::default();
            let summary = train::<TrainBackend>(&job, &device, resume.as_deref(), &mut observer);
            (summary, observer.error)
        })
        .await?;
        match result {
            (_, Some(error)) => Ok(TrainOutcome::Failed(error)),
            (Err(e), None) => Ok(TrainOutcome::Failed(e.to_string())),
            (Ok(_), None) if cancel.is_cancelled() => Ok(TrainOutcome::Cancelled),
            (Ok(summary), None) => {
                if !summary.finished {
                    return Ok(TrainOutcome::Cancelled);
                }
                let client = TrackerClient::new(&ctx.tracking_uri)?;
                let client = match &ctx.tracking_token {
                    Some(token) => client.with_token(token.clone()),
                    None => client,
                };
                client.upload_artifact_tree(&ctx.assignment.run_id, &config.output_dir.join("adapter"), "adapter").await?;
                client.upload_artifact(&ctx.assignment.run_id, &config.output_dir.join("metrics.json"), "metrics.json").await?;
                Ok(TrainOutcome::Succeeded)
            }
        }
    }
}
