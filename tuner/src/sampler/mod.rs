//! Samplers: given a search space and the history, propose the params of the next trial.
//!
//! A sampler is a pure function of `(space, history, trial number, rng)`; it keeps no state
//! between calls, so the tracker can rebuild any decision by replaying history. Pending
//! (`Running`) trials in the history must be taken into account (constant liar or a
//! distinct quasi-random index), so that parallel asks do not collide.

mod auto;
mod gp;
mod grid;
mod multifidelity;
mod qmc;
mod random;
mod tpe;

pub use auto::AutoSampler;
pub use gp::{GpConfig, GpSampler};
pub use grid::GridSampler;
pub use multifidelity::MultiFidelitySampler;
pub use qmc::HaltonSampler;
pub use random::RandomSampler;
pub use tpe::{TpeConfig, TpeSampler};

use rand::Rng;
use serde_json::Value;

use crate::history::{History, TrialNumber};
use crate::space::{Distribution, Params, SearchSpace};
use crate::TunerRng;

/// Proposes params for new trials.
pub trait Sampler: Send + Sync {
    /// Proposes params for trial `number`. Must depend only on the arguments. The returned
    /// params hold exactly the active parameters of `space`, each a valid value.
    fn sample(&self, space: &SearchSpace, history: &History<'_>, number: TrialNumber, rng: &mut TunerRng) -> Params;
}

/// The samplers selectable by name (`tuner stdio --sampler <name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Independent uniform sampling.
    Random,
    /// Exhaustive grid, then random once exhausted.
    Grid,
    /// Scrambled Halton sequence.
    Qmc,
    /// Multivariate TPE with constant liar.
    Tpe,
    /// Gaussian-process BO (Matérn 5/2 ARD, log-EI).
    Gp,
    /// Picks GP or TPE from the space and budget.
    Auto,
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "random" => SamplerKind::Random,
            "grid" => SamplerKind::Grid,
            "qmc" | "halton" => SamplerKind::Qmc,
            "tpe" => SamplerKind::Tpe,
            "gp" => SamplerKind::Gp,
            "auto" => SamplerKind::Auto,
            other => return Err(format!("unknown sampler `{other}`")),
        })
    }
}

impl SamplerKind {
    /// Builds the sampler with default settings. `seed` is the study seed (used for the
    /// Halton scramble); `n_trials` is the expected budget if known (used by `auto`).
    pub fn build(self, seed: u64, n_trials: Option<usize>) -> Box<dyn Sampler> {
        match self {
            SamplerKind::Random => Box::new(RandomSampler),
            SamplerKind::Grid => Box::new(GridSampler::default()),
            SamplerKind::Qmc => Box::new(HaltonSampler::new(seed)),
            SamplerKind::Tpe => Box::new(TpeSampler::new(seed, TpeConfig::default())),
            SamplerKind::Gp => Box::new(GpSampler::new(seed, GpConfig::default())),
            SamplerKind::Auto => Box::new(AutoSampler::new(seed, n_trials)),
        }
    }
}

/// Draws one value uniformly (in the internal, possibly log, coordinate) from `dist`.
pub(crate) fn sample_uniform(dist: &Distribution, rng: &mut TunerRng) -> Value {
    unit_to_value(dist, rng.random::<f64>())
}

/// Maps `u` in `[0, 1)` to a value: numeric through the internal bounds, categorical by index.
pub(crate) fn unit_to_value(dist: &Distribution, u: f64) -> Value {
    match dist {
        Distribution::Categorical { choices } => {
            let i = ((u * choices.len() as f64) as usize).min(choices.len() - 1);
            choices[i].clone()
        }
        d => {
            let (a, b) = d.internal_bounds();
            d.from_internal(a + u * (b - a))
        }
    }
}

/// Fills every active parameter missing from `params` with a uniform draw, in space order.
pub(crate) fn fill_random(space: &SearchSpace, params: &mut Params, rng: &mut TunerRng) {
    for spec in space.params() {
        if !params.contains_key(&spec.name) && space.is_active(spec, params) {
            let v = sample_uniform(&spec.dist, rng);
            params.insert(spec.name.clone(), v);
        }
    }
}
