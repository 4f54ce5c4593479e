//! Schedulers: decide on every intermediate report whether a trial continues, stops or pauses.
//!
//! A scheduler is a pure function of the history *as it stands when the report arrives*
//! (the report itself already recorded in the trial's intermediate values). It never writes
//! anything: rung membership is derived from reported values at milestone steps, so no rung
//! table is stored and a replayed history gives the same decisions.
//!
//! Rung value of a trial at milestone `m`: the value of its first report at a step `>= m`
//! (Ray records a trial at the first report past a milestone). NaN values rank worst.

mod asha;
mod median;

pub use asha::{AshaConfig, AshaMode, AshaScheduler, HyperbandScheduler};
pub use median::MedianStopping;

use crate::history::{History, TrialNumber, TrialView};

/// What a worker should do after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep training; report again at `next_milestone` (if the scheduler has one).
    Continue {
        /// The next step at which the scheduler wants a report.
        next_milestone: Option<u64>,
    },
    /// Stop now: pruned, or (at `step >= max_resource`) finished, so tell the final value.
    Stop,
    /// Checkpoint and release the worker; the trial may be resumed by a later job.
    Pause,
}

/// Early-stopping policy.
pub trait Scheduler: Send + Sync {
    /// Judges the report `(step, value)` of `trial`, already present in `history`.
    fn on_report(&self, history: &History<'_>, trial: TrialNumber, step: u64, value: f64) -> Decision;

    /// The first step at which a new trial should report, if any.
    fn first_milestone(&self, _trial: TrialNumber) -> Option<u64> {
        None
    }

    /// Promotion schedulers: a paused trial to resume, and the step to train it to. Checked
    /// before a new trial is started (ASHA's `get_job`).
    fn promote(&self, _history: &History<'_>) -> Option<(TrialNumber, u64)> {
        None
    }
}

/// FIFO: never stops anything early.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

impl Scheduler for Fifo {
    fn on_report(&self, _: &History<'_>, _: TrialNumber, _: u64, _: f64) -> Decision {
        Decision::Continue { next_milestone: None }
    }
}

/// The schedulers selectable by name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SchedulerKind {
    /// Never stop early.
    Fifo,
    /// ASHA, Ray's stopping rule.
    AshaStop(AshaConfig),
    /// ASHA, the paper's promotion rule (pause and resume).
    AshaPromote(AshaConfig),
    /// Hyperband brackets over stopping ASHA.
    Hyperband(AshaConfig),
    /// Hyperband brackets over promotion ASHA.
    HyperbandPromote(AshaConfig),
    /// Median stopping rule.
    Median,
}

impl SchedulerKind {
    /// Builds the scheduler; `seed` (the study seed) only matters for Hyperband brackets.
    pub fn build(self, seed: u64) -> Box<dyn Scheduler> {
        match self {
            SchedulerKind::Fifo => Box::new(Fifo),
            SchedulerKind::AshaStop(c) => Box::new(AshaScheduler::new(c, AshaMode::Stop)),
            SchedulerKind::AshaPromote(c) => Box::new(AshaScheduler::new(c, AshaMode::Promote)),
            SchedulerKind::Hyperband(c) => Box::new(HyperbandScheduler::new(c, AshaMode::Stop, seed)),
            SchedulerKind::HyperbandPromote(c) => Box::new(HyperbandScheduler::new(c, AshaMode::Promote, seed)),
            SchedulerKind::Median => Box::new(MedianStopping::default()),
        }
    }
}

/// The reports of `t` up to its rung value at milestone `m` (its first report at a step
/// `>= m`), as `(step, score)`; empty if it has not reached `m`.
pub(crate) fn rung_prefix(history: &History<'_>, t: &TrialView, m: u64) -> Vec<(u64, f64)> {
    let Some((&end, _)) = t.intermediate.range(m..).next() else { return Vec::new() };
    t.intermediate.range(..=end).map(|(s, v)| (*s, history.score(*v))).collect()
}

/// The rung value of `t` at milestone `m` (first report at a step `>= m`), as a score.
pub(crate) fn rung_score(history: &History<'_>, t: &TrialView, m: u64) -> Option<f64> {
    t.intermediate.range(m..).next().map(|(_, v)| history.score(*v))
}
