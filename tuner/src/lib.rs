//! Pure, deterministic hyperparameter search: search spaces, samplers, schedulers and an
//! in-memory ask/report/tell [`Study`].
//!
//! This crate does no IO, reads no clock and uses no global RNG: every decision is a function
//! of the study seed, the trial number and the [`History`]. A server can therefore persist the
//! history, replay it after a restart, and get the same decisions. Only the `tuner` binary
//! (the JSON-lines `stdio` protocol) touches stdin/stdout.

#![warn(missing_docs)]

pub mod curve;
pub mod history;
pub(crate) mod math;
pub mod sampler;
pub mod scheduler;
pub mod space;
pub mod study;

pub use history::{Direction, History, TrialNumber, TrialState, TrialView};
pub use sampler::{Sampler, SamplerKind};
pub use scheduler::{Decision, Scheduler, SchedulerKind};
pub use space::{Distribution, Params, SearchSpace, SpaceError};
pub use study::{Job, Outcome, Study, TellError};

use rand::SeedableRng;

/// The only RNG type used by the tuner: ChaCha8 is reproducible across platforms and versions,
/// unlike `StdRng`.
pub type TunerRng = rand_chacha::ChaCha8Rng;

/// RNG for trial `number` of a study seeded with `study_seed`. Derived from those two values
/// only, so a trial's params can be recomputed from its number and the history it saw.
pub fn trial_rng(study_seed: u64, number: TrialNumber) -> TunerRng {
    TunerRng::seed_from_u64(splitmix64(study_seed ^ splitmix64(number.wrapping_add(0x9E37_79B9))))
}

/// SplitMix64 finaliser: a bijective mixer so nearby (seed, number) pairs give unrelated streams.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
