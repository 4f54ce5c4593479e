//! In-memory ask/report/tell facade over a [`Sampler`] and a [`Scheduler`].
//!
//! Used by tests, benchmarks and `tuner stdio`. It holds the history and nothing else: every
//! proposal is `sampler.sample(space, history, number, trial_rng(seed, number))` and every
//! decision `scheduler.on_report(history, ...)`, so replaying the same calls into a fresh
//! `Study` reproduces every params and decision exactly.
//!
//! NaN policy: `tell(n, Outcome::Complete(NaN))` records the trial as `Failed`. Infinite
//! values are recorded as they are (they rank worst/best). A NaN intermediate value is
//! recorded and ranks worst at its rung.

use crate::history::{Direction, History, TrialNumber, TrialState, TrialView};
use crate::sampler::Sampler;
use crate::scheduler::{Decision, Scheduler};
use crate::space::{Params, SearchSpace};
use crate::trial_rng;

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Finished with this objective value.
    Complete(f64),
    /// Crashed or produced no value.
    Failed,
    /// Stopped early by the scheduler (its intermediate values are kept).
    Pruned,
}

/// Why a report or tell was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TellError {
    /// No trial with this number was asked.
    #[error("unknown trial {0}")]
    UnknownTrial(TrialNumber),
    /// The trial is already complete, failed or pruned.
    #[error("trial {0} is already finished")]
    AlreadyFinished(TrialNumber),
    /// The trial is paused; it must be resumed by [`Study::next_job`] first.
    #[error("trial {0} is paused")]
    Paused(TrialNumber),
}

/// Work for a worker, from [`Study::next_job`].
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Start a new trial.
    New {
        /// Trial number.
        number: TrialNumber,
        /// Its params.
        params: Params,
        /// First step at which to report, if the scheduler has milestones.
        until: Option<u64>,
    },
    /// Resume a paused trial from its checkpoint and train it to `until`.
    Resume {
        /// Trial number.
        number: TrialNumber,
        /// Its params.
        params: Params,
        /// Last step it reported before pausing.
        from_step: u64,
        /// Step to train to.
        until: u64,
    },
}

/// An in-memory study.
pub struct Study {
    space: SearchSpace,
    direction: Direction,
    seed: u64,
    sampler: Box<dyn Sampler>,
    scheduler: Box<dyn Scheduler>,
    trials: Vec<TrialView>,
}

impl Study {
    /// A study with no trials yet.
    pub fn new(
        space: SearchSpace,
        direction: Direction,
        seed: u64,
        sampler: Box<dyn Sampler>,
        scheduler: Box<dyn Scheduler>,
    ) -> Self {
        Study { space, direction, seed, sampler, scheduler, trials: Vec::new() }
    }

    /// The search space.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// All trials, by number.
    pub fn trials(&self) -> &[TrialView] {
        &self.trials
    }

    /// The read-only history.
    pub fn history(&self) -> History<'_> {
        History::new(self.direction, &self.trials)
    }

    /// The best complete trial.
    pub fn best(&self) -> Option<&TrialView> {
        History::new(self.direction, &self.trials).best()
    }

    /// Starts a new trial and returns its number and params.
    pub fn ask(&mut self) -> (TrialNumber, Params) {
        let number = self.trials.len() as TrialNumber;
        let mut rng = trial_rng(self.seed, number);
        let params = self.sampler.sample(&self.space, &self.history(), number, &mut rng);
        debug_assert!(self.space.check(&params).is_ok(), "sampler produced invalid params {params:?}");
        self.trials.push(TrialView::running(number, params.clone()));
        (number, params)
    }

    /// The next job: a promotion of a paused trial if the scheduler has one, else a new trial.
    pub fn next_job(&mut self) -> Job {
        if let Some((n, until)) = self.scheduler.promote(&self.history()) {
            let t = &mut self.trials[n as usize];
            t.state = TrialState::Running;
            let from_step = t.last_report().map_or(0, |(s, _)| s);
            return Job::Resume { number: n, params: t.params.clone(), from_step, until };
        }
        let (number, params) = self.ask();
        Job::New { number, params, until: self.scheduler.first_milestone(number) }
    }

    fn running(&mut self, number: TrialNumber) -> Result<&mut TrialView, TellError> {
        let t = self.trials.get_mut(number as usize).ok_or(TellError::UnknownTrial(number))?;
        match t.state {
            TrialState::Running => Ok(t),
            TrialState::Paused => Err(TellError::Paused(number)),
            _ => Err(TellError::AlreadyFinished(number)),
        }
    }

    /// Records an intermediate value and returns the scheduler's decision. `Pause` is
    /// applied immediately (the trial becomes `Paused`); `Stop` is not: the caller tells
    /// `Pruned` (or, at the maximum resource, `Complete`).
    pub fn report(&mut self, number: TrialNumber, step: u64, value: f64) -> Result<Decision, TellError> {
        self.running(number)?.intermediate.insert(step, value);
        let d = self.scheduler.on_report(&self.history(), number, step, value);
        if d == Decision::Pause {
            self.trials[number as usize].state = TrialState::Paused;
        }
        Ok(d)
    }

    /// Finishes a trial. A paused trial may be finished too (e.g. told `Pruned` at the end).
    pub fn tell(&mut self, number: TrialNumber, outcome: Outcome) -> Result<(), TellError> {
        let t = self.trials.get_mut(number as usize).ok_or(TellError::UnknownTrial(number))?;
        if !matches!(t.state, TrialState::Running | TrialState::Paused) {
            return Err(TellError::AlreadyFinished(number));
        }
        match outcome {
            Outcome::Complete(v) if v.is_nan() => t.state = TrialState::Failed,
            Outcome::Complete(v) => {
                t.state = TrialState::Complete;
                t.value = Some(v);
            }
            Outcome::Failed => t.state = TrialState::Failed,
            Outcome::Pruned => t.state = TrialState::Pruned,
        }
        Ok(())
    }
}
