//! The read-only view of a study that samplers and schedulers may look at.
//!
//! Nothing here mutates or stores: a server loads its persisted trials into [`TrialView`]s
//! and hands a [`History`] to the same functions the in-memory [`crate::Study`] uses.
//!
//! # Values, NaN and infinities
//! All ranking goes through [`History::score`], which turns a value into a "lower is better"
//! score for either direction. A `Complete` trial whose value is NaN is treated as *failed*
//! (excluded from models) everywhere; [`crate::Study::tell`] already records it as failed.
//! Infinite values are kept: `+inf` (minimize) is simply the worst possible score. An
//! intermediate value that is NaN ranks worst in its rung.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::space::Params;

/// Trial numbers: dense, starting at 0, in ask order.
pub type TrialNumber = u64;

/// Optimisation direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Lower values are better.
    #[default]
    Minimize,
    /// Higher values are better.
    Maximize,
}

/// Lifecycle state of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    /// Asked, not yet told (pending: samplers apply constant liar to it).
    Running,
    /// Paused at a rung by a promotion scheduler; may be resumed later.
    Paused,
    /// Finished with a value.
    Complete,
    /// Stopped early by a scheduler; its intermediate values are still informative.
    Pruned,
    /// Crashed or returned no usable value; excluded from models.
    Failed,
}

/// Everything known about one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialView {
    /// Trial number.
    pub number: TrialNumber,
    /// The parameters it was asked with.
    pub params: Params,
    /// Current state.
    pub state: TrialState,
    /// Final value, for `Complete` trials.
    pub value: Option<f64>,
    /// Intermediate values by step (the last report at a step wins).
    pub intermediate: BTreeMap<u64, f64>,
}

impl TrialView {
    /// A fresh running trial.
    pub fn running(number: TrialNumber, params: Params) -> Self {
        TrialView { number, params, state: TrialState::Running, value: None, intermediate: BTreeMap::new() }
    }

    /// The final value if the trial is complete with a non-NaN value.
    pub fn complete_value(&self) -> Option<f64> {
        match (self.state, self.value) {
            (TrialState::Complete, Some(v)) if !v.is_nan() => Some(v),
            _ => None,
        }
    }

    /// The last reported (step, value), if any.
    pub fn last_report(&self) -> Option<(u64, f64)> {
        self.intermediate.iter().next_back().map(|(s, v)| (*s, *v))
    }
}

/// Read-only view of one study: trials sorted by number.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Optimisation direction.
    pub direction: Direction,
    /// All trials, sorted by number.
    pub trials: &'a [TrialView],
}

impl<'a> History<'a> {
    /// Creates a view; `trials` must be sorted by number.
    pub fn new(direction: Direction, trials: &'a [TrialView]) -> Self {
        debug_assert!(trials.windows(2).all(|w| w[0].number < w[1].number));
        History { direction, trials }
    }

    /// Converts a value into a lower-is-better score. NaN becomes `+inf` (worst).
    pub fn score(&self, v: f64) -> f64 {
        if v.is_nan() {
            return f64::INFINITY;
        }
        match self.direction {
            Direction::Minimize => v,
            Direction::Maximize => -v,
        }
    }

    /// Complete trials with a non-NaN value, as (trial, score), in trial order.
    pub fn completed(&self) -> impl Iterator<Item = (&'a TrialView, f64)> + '_ {
        self.trials.iter().filter_map(move |t| t.complete_value().map(|v| (t, self.score(v))))
    }

    /// Trials still running (pending).
    pub fn running(&self) -> impl Iterator<Item = &'a TrialView> + '_ {
        self.trials.iter().filter(|t| t.state == TrialState::Running)
    }

    /// Number of complete (non-NaN) plus pruned trials: what start-up thresholds count.
    pub fn n_finished(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| t.complete_value().is_some() || t.state == TrialState::Pruned)
            .count()
    }

    /// The best complete trial (ties to the lower number).
    pub fn best(&self) -> Option<&'a TrialView> {
        let mut best: Option<(&TrialView, f64)> = None;
        for (t, s) in self.completed() {
            if best.is_none_or(|(_, b)| s.total_cmp(&b) == Ordering::Less) {
                best = Some((t, s));
            }
        }
        best.map(|(t, _)| t)
    }
}

/// Orders (score, trial number) pairs: score by `total_cmp`, ties by number.
pub fn cmp_scored(a: (f64, TrialNumber), b: (f64, TrialNumber)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}
