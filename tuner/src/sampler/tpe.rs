//! Tree-structured Parzen Estimator, multivariate, with constant liar (Optuna 5 defaults).
//!
//! # References
//! - Bergstra et al. (2011), "Algorithms for Hyper-Parameter Optimization".
//! - Falkner et al. (2018), "BOHB" (multivariate KDE, Scott-style bandwidth).
//! - Watanabe (2023), "Tree-Structured Parzen Estimator: Understanding Its Algorithm
//!   Components and Their Roles for Better Empirical Performance", arXiv:2304.11127.
//!
//! # How it works here
//! Trials are split into a "good" set (the best `min(ceil(0.1 n), 25)` finished trials) and a
//! "bad" set (the rest). Complete trials rank by score; pruned (and paused) trials rank after
//! them by deepest step reached, then by their last value. With constant liar every pending
//! trial joins the bad set, so parallel asks are pushed apart. Each set becomes a mixture of
//! product kernels (one per trial, plus a wide prior kernel) in the internal coordinates of the
//! space (log for log parameters, int/step values as bins of a truncated normal, categoricals
//! as smoothed one-hot). `n_ei_candidates` points are drawn from the good mixture and the one
//! maximising `ln l(x) - ln g(x)` wins.
//!
//! Conditional spaces: parameters are grouped by their activation condition; each group is
//! modelled jointly on the trials in which it was active, parents before children (Optuna's
//! `group=True`). Failed trials and NaN values are ignored.

use super::{fill_random, qmc::HaltonSampler, Sampler};
use crate::history::{History, TrialNumber, TrialState, TrialView};
use crate::math::{choose_weighted, ln_norm_mass, ln_norm_pdf, log_sum_exp, trunc_normal};
use crate::space::{Distribution, Params, SearchSpace};
use crate::TunerRng;
use rand::Rng;
use serde_json::Value;

/// TPE settings; defaults follow Optuna 5.0.
#[derive(Debug, Clone, Copy)]
pub struct TpeConfig {
    /// Finished trials (complete + pruned) before the model is used; Halton points until then.
    pub n_startup_trials: usize,
    /// Candidates drawn from the good mixture per ask.
    pub n_ei_candidates: usize,
    /// Weight of the prior kernel.
    pub prior_weight: f64,
    /// Put pending trials in the bad set.
    pub constant_liar: bool,
    /// Good-set fraction (`gamma(n) = min(ceil(frac * n), cap)`).
    pub gamma_frac: f64,
    /// Good-set cap.
    pub gamma_cap: usize,
}

impl Default for TpeConfig {
    fn default() -> Self {
        TpeConfig {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            prior_weight: 1.0,
            constant_liar: true,
            gamma_frac: 0.1,
            gamma_cap: 25,
        }
    }
}

/// Multivariate TPE sampler.
#[derive(Debug, Clone, Copy)]
pub struct TpeSampler {
    /// Settings.
    pub config: TpeConfig,
    startup: HaltonSampler,
}

impl TpeSampler {
    /// A TPE sampler for a study seeded with `seed` (seeds the start-up Halton scramble).
    pub fn new(seed: u64, config: TpeConfig) -> Self {
        TpeSampler { config, startup: HaltonSampler::new(seed) }
    }
}

/// One observation in a group: internal coordinates (categoricals as choice index).
struct Obs {
    x: Vec<f64>,
    number: TrialNumber,
}

/// Kernels of one dimension.
enum DimKernels {
    Num { mus: Vec<f64>, sigmas: Vec<f64>, ln_z: Vec<f64>, a: f64, b: f64, dist: Distribution },
    Cat { ln_w: Vec<Vec<f64>> },
}

/// A weighted mixture of product kernels (observations first, prior last).
struct Parzen {
    weights: Vec<f64>,
    ln_w: Vec<f64>,
    dims: Vec<DimKernels>,
}

/// Per-observation bandwidths of one numeric dimension, Optuna 5.0's rule
/// (`_ParzenEstimator._calculate_numerical_distributions` with `consider_endpoints=False`,
/// `consider_magic_clip=True`): each kernel is as wide as the larger gap to its sorted
/// neighbours (the bounds count as neighbours, except that the outermost observations use
/// their inner gap), clipped to `[(b - a) / min(100, n + 2), b - a]`.
fn neighbour_bandwidths(mus: &[f64], a: f64, b: f64) -> Vec<f64> {
    let n = mus.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| mus[i].total_cmp(&mus[j]).then(i.cmp(&j)));
    let mut ext = Vec::with_capacity(n + 2);
    ext.push(a);
    ext.extend(order.iter().map(|&i| mus[i]));
    ext.push(b);
    let mut sorted: Vec<f64> = (1..=n).map(|k| (ext[k] - ext[k - 1]).max(ext[k + 1] - ext[k])).collect();
    if n >= 2 {
        sorted[0] = ext[2] - ext[1];
        sorted[n - 1] = ext[n] - ext[n - 1];
    }
    let max_sigma = b - a;
    let min_sigma = (b - a) / (n as f64 + 2.0).min(100.0);
    let mut out = vec![0.0; n];
    for (k, &i) in order.iter().enumerate() {
        out[i] = sorted[k].clamp(min_sigma, max_sigma);
    }
    out
}

/// Optuna's `default_weights`: flat below 25 observations, else a linear ramp on the oldest.
fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| if ramp == 1 { 1.0 / n as f64 } else { 1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64 })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

impl Parzen {
    fn new(dists: &[&Distribution], obs: &[&Obs], prior_weight: f64) -> Self {
        let n = obs.len();
        let mut weights = default_weights(n);
        weights.push(prior_weight);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let ln_w = weights.iter().map(|w| w.ln()).collect();
        let n_kernels = n + 1;
        let dims = dists
            .iter()
            .enumerate()
            .map(|(j, dist)| match dist {
                Distribution::Categorical { choices } => {
                    let k = choices.len();
                    let fill = prior_weight / n_kernels as f64;
                    let mut rows = Vec::with_capacity(n_kernels);
                    for o in obs {
                        let mut row = vec![fill; k];
                        row[o.x[j] as usize] += 1.0;
                        rows.push(row);
                    }
                    rows.push(vec![fill; k]);
                    let ln_w = rows
                        .into_iter()
                        .map(|r| {
                            let s: f64 = r.iter().sum();
                            r.into_iter().map(|v| (v / s).ln()).collect()
                        })
                        .collect();
                    DimKernels::Cat { ln_w }
                }
                dist => {
                    let (a, b) = dist.internal_bounds();
                    let mut mus: Vec<f64> = obs.iter().map(|o| o.x[j]).collect();
                    let mut sigmas = neighbour_bandwidths(&mus, a, b);
                    mus.push(0.5 * (a + b));
                    sigmas.push(b - a);
                    let ln_z = mus
                        .iter()
                        .zip(&sigmas)
                        .map(|(m, s)| ln_norm_mass((a - m) / s, (b - m) / s))
                        .collect();
                    DimKernels::Num { mus, sigmas, ln_z, a, b, dist: (*dist).clone() }
                }
            })
            .collect();
        Parzen { weights, ln_w, dims }
    }

    fn sample(&self, rng: &mut TunerRng) -> Vec<f64> {
        let k = choose_weighted(rng, &self.weights);
        self.dims
            .iter()
            .map(|dim| match dim {
                DimKernels::Num { mus, sigmas, a, b, .. } => trunc_normal(rng, mus[k], sigmas[k], *a, *b),
                DimKernels::Cat { ln_w } => {
                    let w: Vec<f64> = ln_w[k].iter().map(|l| l.exp()).collect();
                    choose_weighted(rng, &w) as f64
                }
            })
            .collect()
    }

    fn ln_pdf(&self, x: &[f64]) -> f64 {
        let mut per_kernel = self.ln_w.clone();
        for (dim, &xv) in self.dims.iter().zip(x) {
            match dim {
                DimKernels::Num { mus, sigmas, ln_z, dist, .. } => match dist.bin(xv) {
                    Some((lo, hi)) => {
                        for (k, acc) in per_kernel.iter_mut().enumerate() {
                            let (m, s) = (mus[k], sigmas[k]);
                            *acc += ln_norm_mass((lo - m) / s, (hi - m) / s) - ln_z[k];
                        }
                    }
                    None => {
                        for (k, acc) in per_kernel.iter_mut().enumerate() {
                            let (m, s) = (mus[k], sigmas[k]);
                            *acc += ln_norm_pdf((xv - m) / s) - s.ln() - ln_z[k];
                        }
                    }
                },
                DimKernels::Cat { ln_w } => {
                    for (k, acc) in per_kernel.iter_mut().enumerate() {
                        *acc += ln_w[k][xv as usize];
                    }
                }
            }
        }
        log_sum_exp(&per_kernel)
    }
}

/// Internal coordinate of `v` under `dist` (categorical: choice index), if valid.
fn encode(dist: &Distribution, v: &Value) -> Option<f64> {
    if !dist.contains(v) {
        return None;
    }
    match dist {
        Distribution::Categorical { choices } => choices.iter().position(|c| c == v).map(|i| i as f64),
        d => d.to_internal(v),
    }
}

/// Parameter groups sharing one activation condition, in space order (parents first).
pub(crate) fn condition_groups(space: &SearchSpace) -> Vec<Vec<usize>> {
    let mut keys: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in space.params().iter().enumerate() {
        let key = match &p.condition {
            None => String::new(),
            Some(c) => format!("{}={}", c.parent, Value::from(c.values.clone())),
        };
        match keys.iter().position(|k| *k == key) {
            Some(g) => groups[g].push(i),
            None => {
                keys.push(key);
                groups.push(vec![i]);
            }
        }
    }
    groups
}

impl TpeSampler {
    /// Splits the trials in which `group` was active into (good, bad) observations, or `None`
    /// when no finished trial has the group.
    fn split(&self, space: &SearchSpace, history: &History<'_>, group: &[usize]) -> Option<(Vec<Obs>, Vec<Obs>)> {
        let specs = space.params();
        let enc = |t: &TrialView| -> Option<Vec<f64>> {
            group.iter().map(|&i| t.params.get(&specs[i].name).and_then(|v| encode(&specs[i].dist, v))).collect()
        };
        let mut complete: Vec<(f64, Obs)> = Vec::new();
        let mut pruned: Vec<((i64, f64), Obs)> = Vec::new();
        let mut pending: Vec<Obs> = Vec::new();
        for t in history.trials {
            let usable = match t.state {
                TrialState::Complete => t.complete_value().is_some(),
                TrialState::Pruned | TrialState::Paused => true,
                TrialState::Running => self.config.constant_liar,
                TrialState::Failed => false,
            };
            if !usable {
                continue;
            }
            let Some(x) = enc(t) else { continue };
            let obs = Obs { x, number: t.number };
            match t.state {
                TrialState::Complete => complete.push((history.score(t.value.unwrap_or(f64::NAN)), obs)),
                TrialState::Running => pending.push(obs),
                _ => {
                    // Deeper first, then better last value; no reports ranks last.
                    let key = t.last_report().map_or((i64::MAX, f64::INFINITY), |(s, v)| (-(s as i64), history.score(v)));
                    pruned.push((key, obs));
                }
            }
        }
        complete.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.number.cmp(&b.1.number)));
        pruned.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(a.0 .1.total_cmp(&b.0 .1)).then(a.1.number.cmp(&b.1.number)));
        let mut ordered: Vec<Obs> = complete.into_iter().map(|c| c.1).chain(pruned.into_iter().map(|p| p.1)).collect();
        let n = ordered.len();
        if n == 0 {
            return None;
        }
        let n_below = ((self.config.gamma_frac * n as f64).ceil() as usize).clamp(1, self.config.gamma_cap);
        let mut above = ordered.split_off(n_below);
        above.extend(pending);
        // Weights ramp by age, so both sets are ordered by trial number.
        ordered.sort_by_key(|o| o.number);
        above.sort_by_key(|o| o.number);
        Some((ordered, above))
    }
}

impl Sampler for TpeSampler {
    fn sample(&self, space: &SearchSpace, history: &History<'_>, number: TrialNumber, rng: &mut TunerRng) -> Params {
        if history.n_finished() < self.config.n_startup_trials {
            return self.startup.sample(space, history, number, rng);
        }
        let specs = space.params();
        let mut params = Params::new();
        for group in condition_groups(space) {
            if !space.is_active(&specs[group[0]], &params) {
                continue;
            }
            let Some((below, above)) = self.split(space, history, &group) else {
                for &i in &group {
                    params.insert(specs[i].name.clone(), super::sample_uniform(&specs[i].dist, rng));
                }
                continue;
            };
            let dists: Vec<&Distribution> = group.iter().map(|&i| &specs[i].dist).collect();
            let l = Parzen::new(&dists, &below.iter().collect::<Vec<_>>(), self.config.prior_weight);
            let g = Parzen::new(&dists, &above.iter().collect::<Vec<_>>(), self.config.prior_weight);
            let mut best: Option<(f64, Vec<f64>)> = None;
            for _ in 0..self.config.n_ei_candidates.max(1) {
                let x = l.sample(rng);
                let score = l.ln_pdf(&x) - g.ln_pdf(&x);
                // NaN scores (never expected) lose; ties keep the earlier candidate.
                let score = if score.is_nan() { f64::NEG_INFINITY } else { score };
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, x));
                }
            }
            let (_, x) = best.expect("at least one candidate");
            for (&i, xv) in group.iter().zip(x) {
                let v = match &specs[i].dist {
                    Distribution::Categorical { choices } => choices[xv as usize].clone(),
                    d => d.from_internal(xv),
                };
                params.insert(specs[i].name.clone(), v);
            }
        }
        // Keep the random stream position independent of how many groups were skipped.
        let _ = rng.random::<u64>();
        fill_random(space, &mut params, rng);
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Log-densities of Optuna 5.0.0's `_ParzenEstimator` (multivariate, prior weight 1, magic
    /// clip, no endpoints) on the same observations, produced by
    /// `tuner/bench/parzen_reference.py`. Optuna evaluates the log parameter in ln-space as we
    /// do, so the values compare directly. Agreement covers the bandwidth rule, the prior
    /// kernel, truncation, the discrete int bins, the categorical kernel and the mixture weights.
    #[test]
    fn parzen_log_pdf_matches_optuna() {
        let dists = [
            Distribution::Float { low: -5.0, high: 10.0, log: false, step: None },
            Distribution::Float { low: 1e-5, high: 1.0, log: true, step: None },
            Distribution::Int { low: 1, high: 8, log: false, step: 1 },
            Distribution::Categorical { choices: vec![json!("a"), json!("b"), json!("c")] },
        ];
        let raw = [
            [0.5, 1e-3, 2.0, 0.0],
            [2.0, 1e-2, 4.0, 1.0],
            [-3.0, 1e-4, 5.0, 1.0],
            [7.5, 0.5, 8.0, 2.0],
            [1.0, 3e-3, 1.0, 0.0],
        ];
        let obs: Vec<Obs> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| Obs { x: vec![r[0], r[1].ln(), r[2], r[3]], number: i as u64 })
            .collect();
        let refs: Vec<&Distribution> = dists.iter().collect();
        let pe = Parzen::new(&refs, &obs.iter().collect::<Vec<_>>(), 1.0);
        let queries: [[f64; 4]; 3] = [[0.7, 2e-3, 2.0, 0.0], [-4.9, 1e-5, 1.0, 2.0], [9.0, 0.9, 8.0, 1.0]];
        let expected = [-5.894526001476169, -9.740191588431632, -8.990929435277947];
        for (q, e) in queries.iter().zip(expected) {
            let got = pe.ln_pdf(&[q[0], q[1].ln(), q[2], q[3]]);
            // Our normal CDF is a 1.2e-7-relative approximation; observed error is ~2e-5.
            assert!((got - e).abs() < 1e-4, "{q:?}: got {got}, optuna {e}");
        }
    }

    #[test]
    fn neighbour_bandwidths_follow_optuna() {
        // Sorted mus 1, 2, 6 in [0, 10]: gaps 1,1 | 1,4 | 4,4; outermost use their inner gap.
        let s = neighbour_bandwidths(&[6.0, 1.0, 2.0], 0.0, 10.0);
        assert_eq!(s, vec![4.0, 1.0, 4.0].into_iter().map(|v: f64| v.clamp(2.0, 10.0)).collect::<Vec<_>>());
        // One observation: the larger gap to a bound.
        assert_eq!(neighbour_bandwidths(&[3.0], 0.0, 10.0), vec![7.0]);
    }

    #[test]
    fn default_weights_ramp_like_optuna() {
        assert_eq!(default_weights(3), vec![1.0; 3]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && (w[4] - 1.0).abs() < 1e-12);
        assert!(w[25..].iter().all(|v| *v == 1.0));
    }
}
