//! Asynchronous successive halving (ASHA) in two forms, and Hyperband brackets over it.
//!
//! # References
//! - Li et al. (2020), "A System for Massively Parallel Hyperparameter Tuning" (ASHA),
//!   [arXiv:1810.05934](https://arxiv.org/abs/1810.05934), Algorithm 2 (promotion form).
//! - Ray Tune `AsyncHyperBandScheduler` (stopping form): a trial is judged once per rung, at
//!   its first report past the milestone, against the trials that reached the rung before it;
//!   it stops if worse than the `1/eta` quantile of their values (numpy linear interpolation).
//! - Li et al. (2018), "Hyperband", JMLR; bracket budgets as in Optuna's `HyperbandPruner`.
//!
//! Rungs sit at `min_resource * eta^(s + k)` for every such value below `max_resource`
//! (`s` = the bracket's minimum early-stopping rate). A report at `step >= max_resource` is
//! answered with `Stop`: the trial is finished and the caller tells its final value.

use super::median::percentile;
use super::{rung_prefix, rung_score, Decision, Scheduler};
use crate::curve;
use crate::history::{cmp_scored, History, TrialNumber, TrialState, TrialView};
use crate::splitmix64;

/// ASHA resources, in steps (epochs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AshaConfig {
    /// First rung (`r`, Ray's `grace_period`).
    pub min_resource: u64,
    /// Full training length (`R`, Ray's `max_t`).
    pub max_resource: u64,
    /// `eta`: the top `1/eta` of each rung continue.
    pub reduction_factor: u64,
    /// Judge a trial at a rung by the value its curve so far extrapolates to at `max_resource`
    /// ([`crate::curve`]) instead of by its value at the rung; trials with too few reports
    /// are judged by their value.
    pub extrapolate: bool,
}

impl Default for AshaConfig {
    fn default() -> Self {
        AshaConfig { min_resource: 1, max_resource: 81, reduction_factor: 3, extrapolate: false }
    }
}

/// Which ASHA rule is applied at a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AshaMode {
    /// Ray: stop a trial below the rung's cutoff, otherwise continue. No resume needed.
    Stop,
    /// Paper: pause at every rung; the best `1/eta` of a rung are resumed later.
    Promote,
}

/// ASHA with one bracket (minimum early-stopping rate `s`).
#[derive(Debug, Clone)]
pub struct AshaScheduler {
    config: AshaConfig,
    mode: AshaMode,
    milestones: Vec<u64>,
}

impl AshaScheduler {
    /// Bracket `s = 0` (the usual ASHA).
    pub fn new(config: AshaConfig, mode: AshaMode) -> Self {
        Self::with_bracket(config, mode, 0)
    }

    /// ASHA whose first rung is `min_resource * eta^s`.
    pub fn with_bracket(config: AshaConfig, mode: AshaMode, s: u32) -> Self {
        let eta = config.reduction_factor.max(2);
        let mut milestones = Vec::new();
        let mut m = config.min_resource.max(1).saturating_mul(eta.saturating_pow(s));
        while m < config.max_resource {
            milestones.push(m);
            m = m.saturating_mul(eta);
        }
        AshaScheduler { config: AshaConfig { reduction_factor: eta, ..config }, mode, milestones }
    }

    /// Rung milestones below `max_resource`, ascending.
    pub fn milestones(&self) -> &[u64] {
        &self.milestones
    }

    /// The score of `t` at rung `m`: its value there, or with `extrapolate` the value its
    /// curve up to the rung is heading for at `max_resource`.
    fn rung_score(&self, history: &History<'_>, t: &TrialView, m: u64) -> Option<f64> {
        let here = rung_score(history, t, m)?;
        if !self.config.extrapolate {
            return Some(here);
        }
        let prefix = rung_prefix(history, t, m);
        Some(curve::predict_final(&prefix, self.config.max_resource).unwrap_or(here))
    }

    fn next_milestone(&self, step: u64) -> u64 {
        self.milestones.iter().copied().find(|m| *m > step).unwrap_or(self.config.max_resource)
    }

    /// Decision for a report, looking only at trials for which `member` holds.
    pub(crate) fn decide(
        &self,
        history: &History<'_>,
        member: &dyn Fn(TrialNumber) -> bool,
        trial: TrialNumber,
        step: u64,
        value: f64,
    ) -> Decision {
        if step >= self.config.max_resource {
            return Decision::Stop;
        }
        let cont = Decision::Continue { next_milestone: Some(self.next_milestone(step)) };
        let Some(me) = history.trials.iter().find(|t| t.number == trial) else { return cont };
        // The highest milestone this report passes that no earlier report of the trial passed.
        let Some(m) = self
            .milestones
            .iter()
            .rev()
            .copied()
            .find(|&m| m <= step && me.intermediate.range(m..step).next().is_none())
        else {
            return cont;
        };
        match self.mode {
            AshaMode::Promote => Decision::Pause,
            AshaMode::Stop => {
                let mut recorded: Vec<f64> = history
                    .trials
                    .iter()
                    .filter(|t| t.number != trial && member(t.number))
                    .filter_map(|t| self.rung_score(history, t, m))
                    .filter(|s| !s.is_nan())
                    .collect();
                if recorded.is_empty() {
                    return cont;
                }
                recorded.sort_by(f64::total_cmp);
                let cutoff = percentile(&recorded, 100.0 / self.config.reduction_factor as f64);
                let mine = self.rung_score(history, me, m).unwrap_or(history.score(value));
                if mine > cutoff {
                    Decision::Stop
                } else {
                    cont
                }
            }
        }
    }

    /// Algorithm 2's `get_job` promotion scan over trials for which `member` holds.
    pub(crate) fn find_promotion(
        &self,
        history: &History<'_>,
        member: &dyn Fn(TrialNumber) -> bool,
    ) -> Option<(TrialNumber, u64)> {
        if self.mode != AshaMode::Promote {
            return None;
        }
        for k in (0..self.milestones.len()).rev() {
            let m = self.milestones[k];
            let target = self.milestones.get(k + 1).copied().unwrap_or(self.config.max_resource);
            let mut rung: Vec<(f64, TrialNumber, bool)> = history
                .trials
                .iter()
                .filter(|t| member(t.number))
                .filter_map(|t| {
                    let s = self.rung_score(history, t, m)?;
                    let paused_here = t.state == TrialState::Paused && t.last_report().is_some_and(|(st, _)| st < target);
                    Some((s, t.number, paused_here))
                })
                .collect();
            let n_top = rung.len() / self.config.reduction_factor as usize;
            if n_top == 0 {
                continue;
            }
            rung.sort_by(|a, b| cmp_scored((a.0, a.1), (b.0, b.1)));
            if let Some(&(_, n, _)) = rung[..n_top].iter().find(|r| r.2) {
                return Some((n, target));
            }
        }
        None
    }
}

impl Scheduler for AshaScheduler {
    fn on_report(&self, history: &History<'_>, trial: TrialNumber, step: u64, value: f64) -> Decision {
        self.decide(history, &|_| true, trial, step, value)
    }

    fn first_milestone(&self, _: TrialNumber) -> Option<u64> {
        Some(self.next_milestone(0))
    }

    fn promote(&self, history: &History<'_>) -> Option<(TrialNumber, u64)> {
        self.find_promotion(history, &|_| true)
    }
}

/// Hyperband: brackets `s = 0 ..= s_max` of ASHA, each trial assigned to one bracket by a
/// seeded hash of its number with Hyperband's `n_i` proportions (Optuna's allocation). Each
/// bracket's rungs only see its own trials; the sampler sees all of them.
#[derive(Debug, Clone)]
pub struct HyperbandScheduler {
    brackets: Vec<AshaScheduler>,
    budgets: Vec<u64>,
    seed: u64,
}

impl HyperbandScheduler {
    /// Hyperband over ASHA in the given mode.
    pub fn new(config: AshaConfig, mode: AshaMode, seed: u64) -> Self {
        let eta = config.reduction_factor.max(2);
        let mut n_brackets = 1u32;
        while config.min_resource.max(1).saturating_mul(eta.saturating_pow(n_brackets)) <= config.max_resource {
            n_brackets += 1;
        }
        let brackets: Vec<_> = (0..n_brackets).map(|s| AshaScheduler::with_bracket(config, mode, s)).collect();
        let budgets = (0..n_brackets)
            .map(|i| {
                let s = n_brackets - 1 - i;
                (n_brackets as f64 * (eta as f64).powi(s as i32) / (s as f64 + 1.0)).ceil() as u64
            })
            .collect();
        HyperbandScheduler { brackets, budgets, seed }
    }

    /// The bracket (minimum early-stopping rate) of a trial.
    pub fn bracket_of(&self, trial: TrialNumber) -> usize {
        let total: u64 = self.budgets.iter().sum();
        let mut h = splitmix64(self.seed ^ splitmix64(trial)) % total;
        for (i, b) in self.budgets.iter().enumerate() {
            if h < *b {
                return i;
            }
            h -= b;
        }
        self.budgets.len() - 1
    }

    /// The ASHA bracket schedulers, by minimum early-stopping rate.
    pub fn brackets(&self) -> &[AshaScheduler] {
        &self.brackets
    }
}

impl Scheduler for HyperbandScheduler {
    fn on_report(&self, history: &History<'_>, trial: TrialNumber, step: u64, value: f64) -> Decision {
        let b = self.bracket_of(trial);
        self.brackets[b].decide(history, &|n| self.bracket_of(n) == b, trial, step, value)
    }

    fn first_milestone(&self, trial: TrialNumber) -> Option<u64> {
        self.brackets[self.bracket_of(trial)].first_milestone(trial)
    }

    fn promote(&self, history: &History<'_>) -> Option<(TrialNumber, u64)> {
        // Scan brackets in order; within each, Algorithm 2 top-down.
        (0..self.brackets.len()).find_map(|b| self.brackets[b].find_promotion(history, &|n| self.bracket_of(n) == b))
    }
}
