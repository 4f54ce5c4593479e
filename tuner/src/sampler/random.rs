//! Independent uniform sampling (log-uniform for log parameters).

use super::{fill_random, Sampler};
use crate::history::{History, TrialNumber};
use crate::space::{Params, SearchSpace};
use crate::TunerRng;

/// Uniform random search; ignores the history.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomSampler;

impl Sampler for RandomSampler {
    fn sample(&self, space: &SearchSpace, _: &History<'_>, _: TrialNumber, rng: &mut TunerRng) -> Params {
        let mut p = Params::new();
        fill_random(space, &mut p, rng);
        p
    }
}
