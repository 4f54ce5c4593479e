//! Scrambled Halton sequence for the start-up phase of model-based samplers.
//!
//! # References
//! Halton (1960); random digit permutations as in Mascagni & Chi (2004), "On the scrambled
//! Halton sequence". The scramble is a deterministic function of the study seed, and the
//! point index is the trial number, so pending trials always get distinct points.

use super::{unit_to_value, Sampler};
use crate::history::{History, TrialNumber};
use crate::space::{Params, SearchSpace};
use crate::{splitmix64, TunerRng};

/// Quasi-random sampler: trial `n` gets the `n`-th point of a scrambled Halton sequence,
/// one dimension per parameter in space order (inactive parameters skip their coordinate).
#[derive(Debug, Clone, Copy)]
pub struct HaltonSampler {
    seed: u64,
}

impl HaltonSampler {
    /// A sequence scrambled by `seed` (the study seed).
    pub fn new(seed: u64) -> Self {
        HaltonSampler { seed }
    }

    /// Coordinate `dim` of point `index`, in `[0, 1)`.
    pub fn coordinate(&self, index: u64, dim: usize) -> f64 {
        let base = prime(dim);
        let mut x = 0.0;
        let mut f = 1.0 / base as f64;
        let mut n = index;
        let mut digit_pos = 0u64;
        // Keep going after the index runs out of digits: the permuted zero digits fill the
        // low-order positions, which is what makes the scramble cover [0, 1) uniformly.
        while f > 1e-15 {
            let d = (n % base) as usize;
            n /= base;
            x += permute(self.seed, dim as u64, digit_pos, base as usize, d) as f64 * f;
            f /= base as f64;
            digit_pos += 1;
        }
        x.min(1.0 - f64::EPSILON)
    }
}

/// `pi(d)` for a seeded random permutation `pi` of `0..base` (Fisher-Yates on a SplitMix
/// stream seeded by (seed, dim, digit position)).
fn permute(seed: u64, dim: u64, pos: u64, base: usize, d: usize) -> usize {
    let mut state = splitmix64(seed ^ splitmix64(dim.wrapping_mul(1_000_003) ^ splitmix64(pos)));
    let mut perm: Vec<usize> = (0..base).collect();
    for i in (1..base).rev() {
        state = splitmix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm[d]
}

/// The `i`-th prime (0-based).
fn prime(i: usize) -> u64 {
    let mut count = 0;
    let mut n = 1u64;
    loop {
        n += 1;
        if (2..).take_while(|d| d * d <= n).all(|d| n % d != 0) {
            if count == i {
                return n;
            }
            count += 1;
        }
    }
}

impl Sampler for HaltonSampler {
    fn sample(&self, space: &SearchSpace, _: &History<'_>, number: TrialNumber, _: &mut TunerRng) -> Params {
        let mut p = Params::new();
        for (dim, spec) in space.params().iter().enumerate() {
            if space.is_active(spec, &p) {
                p.insert(spec.name.clone(), unit_to_value(&spec.dist, self.coordinate(number, dim)));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_stratified() {
        let h = HaltonSampler::new(7);
        // The first 2^k points of the scrambled base-2 coordinate hit every 1/2^k cell once.
        let mut cells: Vec<usize> = (0..16).map(|i| (h.coordinate(i, 0) * 16.0) as usize).collect();
        cells.sort();
        assert_eq!(cells, (0..16).collect::<Vec<_>>());
        let mut cells: Vec<usize> = (0..9).map(|i| (h.coordinate(i, 1) * 9.0) as usize).collect();
        cells.sort();
        assert_eq!(cells, (0..9).collect::<Vec<_>>());
        assert_ne!(h.coordinate(3, 0), HaltonSampler::new(8).coordinate(3, 0));
    }
}
