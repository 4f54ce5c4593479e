//! Median stopping rule (Golovin et al. 2017, "Google Vizier"; Optuna `MedianPruner`).
//!
//! A trial is stopped when its best intermediate value so far is worse than the median of
//! the values that *complete* trials reported at the same step. Nothing is stopped before
//! `n_startup_trials` trials completed or before step `n_warmup_steps`.

use super::{Decision, Scheduler};
use crate::history::{History, TrialNumber, TrialState};

/// Median stopping.
#[derive(Debug, Clone, Copy)]
pub struct MedianStopping {
    /// Complete trials needed before any stop.
    pub n_startup_trials: usize,
    /// Steps before which nothing is stopped.
    pub n_warmup_steps: u64,
}

impl Default for MedianStopping {
    fn default() -> Self {
        MedianStopping { n_startup_trials: 5, n_warmup_steps: 0 }
    }
}

impl Scheduler for MedianStopping {
    fn on_report(&self, history: &History<'_>, trial: TrialNumber, step: u64, _value: f64) -> Decision {
        let cont = Decision::Continue { next_milestone: None };
        let complete: Vec<_> = history.trials.iter().filter(|t| t.state == TrialState::Complete).collect();
        if complete.len() < self.n_startup_trials || step < self.n_warmup_steps {
            return cont;
        }
        let mut others: Vec<f64> = complete
            .iter()
            .filter_map(|t| t.intermediate.get(&step))
            .filter(|v| !v.is_nan())
            .map(|v| history.score(*v))
            .collect();
        if others.is_empty() {
            return cont;
        }
        others.sort_by(f64::total_cmp);
        let median = percentile(&others, 50.0);
        let Some(me) = history.trials.iter().find(|t| t.number == trial) else { return cont };
        let best = me.intermediate.range(..=step).map(|(_, v)| history.score(*v)).fold(f64::INFINITY, f64::min);
        if best > median {
            Decision::Stop
        } else {
            cont
        }
    }
}

/// Linear-interpolation percentile of sorted values (numpy's default).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - lo as f64;
    // Guard the interpolation against infinities (inf - inf, inf * 0 are NaN).
    if lo == hi || frac == 0.0 || sorted[lo] == sorted[hi] {
        return sorted[lo];
    }
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}
