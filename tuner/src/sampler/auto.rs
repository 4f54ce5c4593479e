//! The default sampler: GP where it measured best, TPE elsewhere.
//!
//! The choice is a pure function of the space, the budget hint and the history size, so it
//! replays like every other decision. Measured on `hpo_bench.py` (see `BENCHMARKS.md`):
//! the GP wins on small unconditional spaces within a few hundred trials; its cost grows as
//! O(n^3) per ask, and its imputation of inactive parameters is crude, so conditional spaces,
//! large spaces and long studies go to TPE.

use super::{GpConfig, GpSampler, Sampler, TpeConfig, TpeSampler};
use crate::history::{History, TrialNumber};
use crate::space::{Distribution, Params, SearchSpace};
use crate::TunerRng;

/// Up to this many encoded dimensions the GP is used.
const GP_MAX_DIMS: usize = 16;
/// Beyond this many trials in the history the GP hands over to TPE (latency bound).
const GP_MAX_TRIALS: usize = 300;

/// GP for small unconditional spaces and short studies, TPE otherwise.
#[derive(Debug, Clone)]
pub struct AutoSampler {
    gp: GpSampler,
    tpe: TpeSampler,
}

impl AutoSampler {
    /// `n_trials` is the expected budget, if known; it is currently unused by the rule but
    /// kept so the rule can depend on it without an API change.
    pub fn new(seed: u64, _n_trials: Option<usize>) -> Self {
        AutoSampler {
            gp: GpSampler::new(seed, GpConfig::default()),
            tpe: TpeSampler::new(seed, TpeConfig::default()),
        }
    }

    /// Whether the GP is used for this space and history size.
    pub fn uses_gp(space: &SearchSpace, history_len: usize) -> bool {
        let dims: usize = space
            .params()
            .iter()
            .map(|p| match &p.dist {
                Distribution::Categorical { choices } => choices.len(),
                _ => 1,
            })
            .sum();
        !space.is_conditional() && dims <= GP_MAX_DIMS && history_len < GP_MAX_TRIALS
    }
}

impl Sampler for AutoSampler {
    fn sample(&self, space: &SearchSpace, history: &History<'_>, number: TrialNumber, rng: &mut TunerRng) -> Params {
        if Self::uses_gp(space, history.trials.len()) {
            self.gp.sample(space, history, number, rng)
        } else {
            self.tpe.sample(space, history, number, rng)
        }
    }
}
