//! BOHB-like model-based multi-fidelity sampling: the inner sampler learns from the highest
//! budget that has enough results.
//!
//! # References
//! Falkner et al. (2018), "BOHB: Robust and Efficient Hyperparameter Optimization at Scale",
//! ICML. BOHB fits its KDE on the largest budget with at least `d + 1` observations (plus
//! enough for both the good and the bad set) and samples a random fraction of configs.
//!
//! Here the inner sampler (TPE by default) sees a synthetic history in which every trial that
//! reached the chosen budget `b` is `Complete` with its rung value at `b` (its first report at
//! a step `>= b`, or its final value for trials completed at full budget); pending trials stay
//! pending for constant liar. This avoids the bias of ranking pruned trials by depth, which
//! favours fast learners (see the `hard` LCSim variant).

use rand::Rng;

use super::{RandomSampler, Sampler};
use crate::curve;
use crate::history::{Direction, History, TrialNumber, TrialState, TrialView};
use crate::scheduler::rung_prefix;
use crate::space::{Params, SearchSpace};
use crate::TunerRng;

/// Multi-fidelity wrapper around a model-based sampler.
pub struct MultiFidelitySampler {
    inner: Box<dyn Sampler>,
    /// Budgets (rung milestones), ascending, ending with the full resource.
    budgets: Vec<u64>,
    /// Minimum observations at a budget for it to be modelled (BOHB: `d + 1`, at least this).
    pub min_points: usize,
    /// Probability of a plain random proposal (BOHB's `random_fraction`).
    pub random_fraction: f64,
    /// Model a trial at a budget below the full one by the value its curve up to that budget
    /// extrapolates to at the full budget ([`crate::curve`]), as the scheduler judges it.
    pub extrapolate: bool,
}

impl MultiFidelitySampler {
    /// Wraps `inner`; `budgets` are the scheduler's milestones plus the full resource.
    pub fn new(inner: Box<dyn Sampler>, mut budgets: Vec<u64>) -> Self {
        budgets.sort_unstable();
        budgets.dedup();
        MultiFidelitySampler { inner, budgets, min_points: 10, random_fraction: 0.1, extrapolate: false }
    }
}

impl Sampler for MultiFidelitySampler {
    fn sample(&self, space: &SearchSpace, history: &History<'_>, number: TrialNumber, rng: &mut TunerRng) -> Params {
        let random = rng.random::<f64>() < self.random_fraction;
        if random {
            return RandomSampler.sample(space, history, number, rng);
        }
        let need = self.min_points.max(space.params().len() + 2);
        let full = self.budgets.last().copied().unwrap_or(u64::MAX);
        let value_at = |t: &TrialView, b: u64| -> Option<f64> {
            if t.state == TrialState::Failed {
                return None;
            }
            if b == full {
                if let Some(v) = t.complete_value() {
                    return Some(v);
                }
            }
            let here = t.intermediate.range(b..).next().map(|(_, v)| *v).filter(|v| !v.is_nan())?;
            if !self.extrapolate {
                return Some(here);
            }
            // Extrapolated as a score (falling), then back to the objective's direction.
            let prefix = rung_prefix(history, t, b);
            Some(curve::predict_final(&prefix, full).map_or(here, |p| if history.direction == Direction::Minimize { p } else { -p }))
        };
        for &b in self.budgets.iter().rev() {
            let n = history.trials.iter().filter(|t| value_at(t, b).is_some()).count();
            if n < need {
                continue;
            }
            let synthetic: Vec<TrialView> = history
                .trials
                .iter()
                .filter_map(|t| match value_at(t, b) {
                    Some(v) => Some(TrialView {
                        number: t.number,
                        params: t.params.clone(),
                        state: TrialState::Complete,
                        value: Some(v),
                        intermediate: Default::default(),
                    }),
                    // Trials still training (or paused below b) act as pending.
                    None if matches!(t.state, TrialState::Running) => Some(TrialView::running(t.number, t.params.clone())),
                    None => None,
                })
                .collect();
            return self.inner.sample(space, &History::new(history.direction, &synthetic), number, rng);
        }
        let pending: Vec<TrialView> =
            history.running().map(|t| TrialView::running(t.number, t.params.clone())).collect();
        self.inner.sample(space, &History::new(history.direction, &pending), number, rng)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;

    /// Records the `(number, value)` pairs of the history it is shown; shared, so the test keeps
    /// a handle while the wrapper owns the sampler.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(TrialNumber, f64)>>);

    impl Sampler for Arc<Recorder> {
        fn sample(&self, space: &SearchSpace, history: &History<'_>, number: TrialNumber, rng: &mut TunerRng) -> Params {
            *self.0.lock().unwrap() = history.trials.iter().filter_map(|t| Some((t.number, t.value?))).collect();
            RandomSampler.sample(space, history, number, rng)
        }
    }

    /// Trials 0 and 2 have flattened at 0.30 and 0.34; trial 1 is worse at step 27 but heading
    /// for ~0.19.
    fn history_views(sign: f64) -> Vec<TrialView> {
        let curve = |f: &dyn Fn(f64) -> f64| (1..=27u64).map(|t| (t, sign * f(t as f64))).collect();
        let fast = |t: f64| 0.30 + 0.6 * (1.0 + t / 2.0).powi(-2);
        let slow = |t: f64| 0.10 + 0.8 * (1.0 + t / 40.0).powi(-2);
        let fast2 = |t: f64| 0.34 + 0.6 * (1.0 + t / 2.0).powi(-2);
        [(0, &fast as &dyn Fn(f64) -> f64), (1, &slow), (2, &fast2)]
            .into_iter()
            .map(|(n, f)| TrialView { number: n, params: Params::new(), state: TrialState::Paused, value: None, intermediate: curve(f) })
            .collect()
    }

    #[test]
    fn the_model_sees_extrapolated_values_when_asked_to() {
        let space = SearchSpace::from_json(&json!({"x": {"type": "float", "low": 0.0, "high": 1.0}})).unwrap();
        for (direction, sign) in [(Direction::Minimize, 1.0), (Direction::Maximize, -1.0)] {
            let views = history_views(sign);
            let history = History::new(direction, &views);
            for extrapolate in [false, true] {
                let recorder = Arc::new(Recorder::default());
                let mut mf = MultiFidelitySampler::new(Box::new(recorder.clone()), vec![3, 9, 27, 81]);
                (mf.min_points, mf.random_fraction, mf.extrapolate) = (3, 0.0, extrapolate);
                mf.sample(&space, &history, 3, &mut crate::trial_rng(0, 3));
                let seen = recorder.0.lock().unwrap().clone();
                assert_eq!(seen.len(), 3, "every trial modelled at budget 27: {seen:?}");
                // Better = lower score; the score is the value for minimising, minus it for maximising.
                let better = if direction == Direction::Minimize { seen[1].1 < seen[0].1 } else { seen[1].1 > seen[0].1 };
                assert_eq!(better, extrapolate, "{direction:?}, extrapolate {extrapolate}: {seen:?}");
            }
        }
    }
}
