//! One leased trial while it runs: the lease's fencing token, the last step reported, why the
//! trial is ending. Owns every report the worker sends, from both channels (the trainer's own
//! reports and the objective metric the trial logged through MLflow), so that steps reach the
//! tracker strictly increasing and never twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use api::studies::{Assignment, ReportRequest};
use tokio_util::sync::CancellationToken;

use super::retry::{retrying, Retry};
use super::trainer::{Decision, TrialReport};
use crate::{metric, TrackerClient};

/// Why a trial is ending before its trainer finished on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The scheduler said `stop` (pruned, or done at the maximum resource), or the tracker sent a
    /// `stop` command.
    Stopped(String),
    /// The scheduler said `pause`: the trial checkpointed and a later lease resumes it.
    Paused,
    /// The tracker answered 409: the lease is no longer the trial's.
    LeaseLost(String),
    /// The tracker sent a `preempt` command (the worker is draining): the trial is given back,
    /// to resume elsewhere from its last checkpoint.
    Preempted(String),
}

pub(crate) struct TrialSession {
    client: TrackerClient,
    pub(crate) assignment: Assignment,
    /// Fires when the trial must end; a child of the worker's shutdown token.
    pub(crate) cancel: CancellationToken,
    /// The last step the tracker has, or was sent. A tokio mutex because it is held across the
    /// report call: that is what serializes the two channels (a history point and a trainer report
    /// racing for the same step would otherwise both be sent).
    last_step: tokio::sync::Mutex<Option<u64>>,
    /// The objective points already in the run when this attempt started (logged by earlier
    /// attempts), which the MLflow channel must not forward as this attempt's.
    baseline: HistoryBaseline,
    // std mutexes: never held across an `.await`.
    end: Mutex<Option<EndReason>>,
    next_milestone: Mutex<Option<u64>>,
}

impl TrialSession {
    /// A session that reports after `assignment.last_step` (see [`initial_last_step`]); the MLflow
    /// channel ignores the `baseline` points.
    pub(crate) fn new(client: TrackerClient, assignment: Assignment, cancel: CancellationToken, baseline: HistoryBaseline) -> Self {
        let next_milestone = assignment.next_milestone;
        let last_step = initial_last_step(assignment.last_step, assignment.resume.as_ref().map(|r| r.step));
        TrialSession {
            client,
            assignment,
            cancel,
            last_step: tokio::sync::Mutex::new(last_step),
            baseline,
            end: Mutex::new(None),
            next_milestone: Mutex::new(next_milestone),
        }
    }

    /// Ends the trial: records why (the first reason wins) and fires the cancellation token.
    pub(crate) fn end(&self, reason: EndReason) {
        {
            let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
            if end.is_none() {
                tracing::info!(study = %self.assignment.study, trial = self.assignment.trial, ?reason, "trial ending");
                *end = Some(reason);
            }
        }
        self.cancel.cancel();
    }

    pub(crate) fn end_reason(&self) -> Option<EndReason> {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn is_ending(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub(crate) fn next_milestone(&self) -> Option<u64> {
        *self.next_milestone.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn continue_decision(&self) -> Decision {
        Decision::Continue { next_milestone: self.next_milestone() }
    }

    /// A report from the trainer (stdout channel): metrics, checkpoint upload, then the report
    /// with `log_metric: true`.
    pub(crate) async fn report_from_trainer(&self, report: TrialReport) -> Decision {
        let a = &self.assignment;
        let mut last = self.last_step.lock().await;
        if self.is_ending() {
            return Decision::End;
        }
        if !report.metrics.is_empty() {
            let step = i64::try_from(report.step).unwrap_or(i64::MAX);
            let points: Vec<_> = report.metrics.iter().map(|(k, v)| metric(k.as_str(), *v, step)).collect();
            if let Err(e) = self.client.log_batch(&a.run_id, &points, &[], &[]).await {
                tracing::warn!(study = %a.study, trial = a.trial, step = report.step, error = %e, "cannot log the report's metrics");
            }
        }
        if last.is_some_and(|l| report.step <= l) {
            tracing::warn!(
                study = %a.study, trial = a.trial, step = report.step, last_step = ?*last,
                "report skipped: the step was already reported (reports must increase strictly in step)"
            );
            return self.continue_decision();
        }
        let checkpoint = match &report.checkpoint {
            Some(local) => self.upload_checkpoint(local, report.step).await,
            None => None,
        };
        if self.is_ending() {
            return Decision::End;
        }
        self.send_report(&mut last, report.step, report.value, checkpoint, true).await
    }

    /// Forwards the points of the objective metric the trial logged itself (through MLflow) at
    /// steps above the last reported one, with `log_metric: false`. Where a step was logged more
    /// than once, the last value logged counts. Points an earlier attempt logged (the baseline)
    /// are not this attempt's: a step it logged but never got reported is only forwarded once
    /// this attempt logs it again.
    pub(crate) async fn forward_history(&self) {
        let a = &self.assignment;
        let history = match self.client.metric_history(&a.run_id, &a.objective.metric).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(study = %a.study, trial = a.trial, error = %e, "cannot read the objective's metric history");
                return;
            }
        };
        let by_step = points_by_step(self.baseline.new_points(history.iter().map(|m| (m.step, m.value, m.timestamp))));
        let mut last = self.last_step.lock().await;
        for (step, value) in by_step {
            if self.is_ending() {
                return;
            }
            if last.is_some_and(|l| step <= l) {
                continue;
            }
            if self.send_report(&mut last, step, value, None, false).await == Decision::End {
                return;
            }
        }
    }

    /// Uploads a local checkpoint to `checkpoints/step-<step>` and returns that artifact path, or
    /// `None` (logged) when there was nothing to upload or the upload failed: the value is still
    /// worth reporting without it.
    async fn upload_checkpoint(&self, local: &std::path::Path, step: u64) -> Option<String> {
        let a = &self.assignment;
        let artifact_dir = format!("checkpoints/step-{step}");
        let uploaded = retrying("checkpoint upload", &self.cancel, None, || self.client.upload_artifact_tree(&a.run_id, local, &artifact_dir)).await;
        match uploaded {
            Ok(0) => {
                tracing::warn!(study = %a.study, trial = a.trial, step, path = %local.display(), "checkpoint folder is empty; reporting without it");
                None
            }
            Ok(files) => {
                tracing::info!(study = %a.study, trial = a.trial, step, files, artifact = %artifact_dir, "checkpoint uploaded");
                Some(artifact_dir)
            }
            Err(Retry::Cancelled) => None,
            Err(Retry::Failed(e)) => {
                tracing::warn!(study = %a.study, trial = a.trial, step, path = %local.display(), error = %e, "checkpoint upload failed; reporting without it");
                None
            }
        }
    }

    /// Sends one report and applies the decision. `last` is the held `last_step` guard.
    async fn send_report(&self, last: &mut Option<u64>, step: u64, value: f64, checkpoint: Option<String>, log_metric: bool) -> Decision {
        let a = &self.assignment;
        if !value.is_finite() {
            tracing::warn!(study = %a.study, trial = a.trial, step, value, "report skipped: the value is not finite");
            return self.continue_decision();
        }
        let req = ReportRequest { lease_id: a.lease_id.clone(), step, value, checkpoint, log_metric };
        let answer = retrying("report", &self.cancel, None, || self.client.report(&a.study, a.trial, &req)).await;
        match answer {
            Ok(resp) => {
                *last = Some(step);
                tracing::info!(study = %a.study, trial = a.trial, step, value, decision = %resp.decision, state = %resp.state, "reported");
                match resp.decision.as_str() {
                    "continue" => {
                        *self.next_milestone.lock().unwrap_or_else(|e| e.into_inner()) = resp.next_milestone;
                        Decision::Continue { next_milestone: resp.next_milestone }
                    }
                    "stop" => {
                        self.end(EndReason::Stopped(format!("scheduler decision at step {step} (trial {})", resp.state)));
                        Decision::End
                    }
                    "pause" => {
                        self.end(EndReason::Paused);
                        Decision::End
                    }
                    other => {
                        tracing::warn!(study = %a.study, trial = a.trial, decision = other, "unknown decision; continuing");
                        self.continue_decision()
                    }
                }
            }
            Err(Retry::Cancelled) => Decision::End,
            Err(Retry::Failed(e)) if e.is_conflict() => {
                self.end(EndReason::LeaseLost(e.to_string()));
                Decision::End
            }
            Err(Retry::Failed(e)) => {
                // Refused for good (a bad value, a step the tracker already has): count the step as
                // spent so neither channel sends it again, and keep training.
                *last = Some(last.map_or(step, |l| l.max(step)));
                tracing::warn!(study = %a.study, trial = a.trial, step, error = %e, "report refused");
                self.continue_decision()
            }
        }
    }
}

/// Metric points (step, value) as one value per non-negative step, the last one given winning;
/// non-finite values are dropped (the tracker refuses them).
pub(crate) fn points_by_step(points: impl IntoIterator<Item = (i64, f64)>) -> BTreeMap<u64, f64> {
    let mut out = BTreeMap::new();
    for (step, value) in points {
        if let (Ok(step), true) = (u64::try_from(step), value.is_finite()) {
            out.insert(step, value);
        }
    }
    out
}

/// The step a new attempt starts reporting after: the last step the tracker has for the trial
/// (`Assignment::last_step`, any attempt). The resume step can never be above it (a checkpoint is
/// only recorded with a report); it only counts for a tracker too old to send `last_step`.
pub(crate) fn initial_last_step(assignment_last: Option<u64>, resume_step: Option<u64>) -> Option<u64> {
    assignment_last.max(resume_step)
}

/// Metric points (step, value, timestamp) present in a run at some moment, as a multiset, so
/// that later reads of the history can tell the points logged since.
#[derive(Debug, Default, Clone)]
pub(crate) struct HistoryBaseline(HashMap<(i64, u64, i64), usize>);

impl HistoryBaseline {
    pub(crate) fn new(points: impl IntoIterator<Item = (i64, f64, i64)>) -> Self {
        let mut counts = HashMap::new();
        for (step, value, timestamp) in points {
            *counts.entry((step, value.to_bits(), timestamp)).or_insert(0) += 1;
        }
        HistoryBaseline(counts)
    }

    /// The points of `history` that are not in the baseline (as (step, value), in order): each
    /// baseline point hides one equal point of `history`.
    pub(crate) fn new_points(&self, history: impl IntoIterator<Item = (i64, f64, i64)>) -> Vec<(i64, f64)> {
        let mut left = self.0.clone();
        history
            .into_iter()
            .filter(|(step, value, timestamp)| match left.get_mut(&(*step, value.to_bits(), *timestamp)) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .map(|(step, value, _)| (step, value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_points_collapse_to_one_per_step() {
        let got = points_by_step([(1, 0.5), (2, 0.4), (2, 0.3), (-1, 9.0), (3, f64::NAN), (0, 1.0)]);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![(0, 1.0), (1, 0.5), (2, 0.3)]);
    }

    #[test]
    fn new_attempts_start_after_what_the_tracker_has() {
        assert_eq!(initial_last_step(None, None), None);
        assert_eq!(initial_last_step(Some(5), None), Some(5));
        // A checkpoint older than the last report: the steps in between are not reported again.
        assert_eq!(initial_last_step(Some(12), Some(9)), Some(12));
        // A tracker that does not send `last_step`.
        assert_eq!(initial_last_step(None, Some(9)), Some(9));
    }

    #[test]
    fn the_baseline_hides_earlier_attempts_points_only() {
        // An earlier attempt logged steps 1..=3 (step 3 never reported) and step 2 twice.
        let baseline = HistoryBaseline::new([(1, 0.5, 10), (2, 0.4, 11), (2, 0.4, 11), (3, 0.3, 12)]);
        // This attempt resumed at step 2 and logged step 3 again, then step 4.
        let history = [(1, 0.5, 10), (2, 0.4, 11), (2, 0.4, 11), (3, 0.3, 12), (3, 0.31, 50), (4, 0.2, 51)];
        assert_eq!(baseline.new_points(history), vec![(3, 0.31), (4, 0.2)]);
        // The same value at the same step, logged again later, is a new point.
        assert_eq!(baseline.new_points([(1, 0.5, 10), (1, 0.5, 60)]), vec![(1, 0.5)]);
        assert_eq!(HistoryBaseline::default().new_points([(1, 0.5, 10)]), vec![(1, 0.5)]);
    }
}
