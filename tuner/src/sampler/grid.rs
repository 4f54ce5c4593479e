//! Exhaustive grid search.
//!
//! Each parameter gets a finite list of values: categorical choices, every int/step value when
//! there are at most `max_points_per_param`, otherwise that many points evenly spaced in the
//! internal (log) coordinate. Grid points are visited in mixed-radix order; a point whose
//! active projection is already in the history (finished or pending) is skipped, so parallel
//! asks get distinct points. Once the grid is exhausted the sampler falls back to random.

use super::{fill_random, Sampler};
use crate::history::{History, TrialNumber};
use crate::space::{Distribution, Params, SearchSpace};
use crate::TunerRng;
use serde_json::Value;

/// Grid sampler.
#[derive(Debug, Clone, Copy)]
pub struct GridSampler {
    /// Points per continuous (or large discrete) parameter.
    pub max_points_per_param: usize,
    /// Upper bound on grid points visited before falling back to random.
    pub max_grid_size: u64,
}

impl Default for GridSampler {
    fn default() -> Self {
        GridSampler { max_points_per_param: 10, max_grid_size: 1 << 20 }
    }
}

impl GridSampler {
    /// The values the grid uses for one distribution.
    pub fn axis(&self, dist: &Distribution) -> Vec<Value> {
        let k = self.max_points_per_param.max(2);
        match dist {
            Distribution::Categorical { choices } => choices.clone(),
            d => {
                if let Some(c) = d.cardinality().filter(|c| *c <= k as u64) {
                    let (a, _) = d.internal_bounds();
                    let mut out: Vec<Value> = Vec::new();
                    // Walk bin centres from the bottom; from_internal snaps each onto the grid.
                    let (lo, hi) = d.internal_bounds();
                    let w = (hi - lo) / c as f64;
                    for i in 0..c {
                        let v = d.from_internal(a + w * (i as f64 + 0.5));
                        if !out.contains(&v) {
                            out.push(v);
                        }
                    }
                    out
                } else {
                    let mut out: Vec<Value> = Vec::new();
                    for i in 0..k {
                        let v = match *d {
                            Distribution::Float { low, high, log, step: None } => {
                                let (a, b) = if log { (low.ln(), high.ln()) } else { (low, high) };
                                let x = a + (b - a) * i as f64 / (k - 1) as f64;
                                d.from_internal(x)
                            }
                            _ => {
                                let (a, b) = d.internal_bounds();
                                d.from_internal(a + (b - a) * (i as f64 + 0.5) / k as f64)
                            }
                        };
                        if !out.contains(&v) {
                            out.push(v);
                        }
                    }
                    out
                }
            }
        }
    }
}

impl Sampler for GridSampler {
    fn sample(&self, space: &SearchSpace, history: &History<'_>, _: TrialNumber, rng: &mut TunerRng) -> Params {
        let axes: Vec<Vec<Value>> = space.params().iter().map(|p| self.axis(&p.dist)).collect();
        let size = axes.iter().try_fold(1u64, |acc, a| acc.checked_mul(a.len() as u64));
        let size = size.unwrap_or(u64::MAX).min(self.max_grid_size);
        for idx in 0..size {
            let mut rem = idx;
            let mut p = Params::new();
            for (spec, axis) in space.params().iter().zip(&axes) {
                let i = (rem % axis.len() as u64) as usize;
                rem /= axis.len() as u64;
                if space.is_active(spec, &p) {
                    p.insert(spec.name.clone(), axis[i].clone());
                }
            }
            if !history.trials.iter().any(|t| t.params == p) {
                return p;
            }
        }
        let mut p = Params::new();
        fill_random(space, &mut p, rng);
        p
    }
}
