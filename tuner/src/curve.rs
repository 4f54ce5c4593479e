//! Learning-curve extrapolation: a trial judged by the value its curve is heading for at the
//! full resource, instead of by its value now.
//!
//! Rung rules compare trials at the same step. Where fast learners converge early to a worse
//! value (high learning rates), the current value at a low rung ranks them above slower
//! trials that end better, and every rung-based rule drops those late bloomers. A trial's own
//! curve says more: a slow trial is still falling steeply when a fast one has flattened.
//!
//! The model is the `pow3` family of Domhan et al. (2015), "Speeding up Automatic
//! Hyperparameter Optimization of Deep Neural Networks by Extrapolation of Learning Curves"
//! (IJCAI): `s(t) = c + a * t^(-alpha)` with `a >= 0` (a falling score), fitted by least
//! squares. For each `alpha` the model is linear in `(c, a)`, so `alpha` is searched on a fixed
//! grid: a fit is a few dozen passes over the points, with the same result on every platform.

/// Fewest reports, at distinct steps, from which a curve is extrapolated; with fewer, the
/// three parameters fit the noise.
pub const MIN_POINTS: usize = 6;

/// `alpha` grid: log-spaced from nearly flat (0.05, close to a log-linear trend) to steep (4).
const ALPHA_GRID: usize = 32;
const ALPHA_MIN: f64 = 0.05;
const ALPHA_MAX: f64 = 4.0;

/// The value a falling curve is heading for at step `horizon`, from its `(step, score)` points
/// (ascending steps, scores to minimise). `None` with fewer than [`MIN_POINTS`] points, a
/// non-finite score, or a step of 0. Never above the last score: more training is not expected
/// to undo progress, and a rising tail (overfitting) is judged by where it is.
pub fn predict_final(points: &[(u64, f64)], horizon: u64) -> Option<f64> {
    if points.len() < MIN_POINTS || points.iter().any(|(s, v)| *s == 0 || !v.is_finite()) {
        return None;
    }
    let (last_step, last) = *points.last()?;
    if horizon <= last_step {
        return Some(last);
    }
    let ln_t: Vec<f64> = points.iter().map(|(s, _)| (*s as f64).ln()).collect();
    let ln_horizon = (horizon as f64).ln();
    // The grid point with the least squared error. The grid's coarseness is deliberate: a finer
    // search of alpha fits the noise of short curves, and ranked trials worse on LCSim.
    let best = (0..ALPHA_GRID)
        .filter_map(|k| fit_with_alpha(points, &ln_t, ALPHA_MIN * (ALPHA_MAX / ALPHA_MIN).powf(k as f64 / (ALPHA_GRID - 1) as f64), ln_horizon))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    Some(best.map_or(last, |(_, prediction)| prediction.min(last)))
}

/// Least squares of `c + a * t^(-alpha)` for one `alpha`: `(squared error, value at the
/// horizon)`, or `None` when the best fit rises (`a < 0`) or the points are one step.
fn fit_with_alpha(points: &[(u64, f64)], ln_t: &[f64], alpha: f64, ln_horizon: f64) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let x: Vec<f64> = ln_t.iter().map(|l| (-alpha * l).exp()).collect();
    let mean_x = x.iter().sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (xi, (_, yi)) in x.iter().zip(points) {
        sxx += (xi - mean_x) * (xi - mean_x);
        sxy += (xi - mean_x) * (yi - mean_y);
    }
    if sxx <= 0.0 {
        return None;
    }
    let a = sxy / sxx;
    if a < 0.0 {
        return None;
    }
    let c = mean_y - a * mean_x;
    let sse = x.iter().zip(points).map(|(xi, (_, yi))| (c + a * xi - yi).powi(2)).sum();
    Some((sse, c + a * (-alpha * ln_horizon).exp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(f: impl Fn(f64) -> f64, steps: std::ops::RangeInclusive<u64>) -> Vec<(u64, f64)> {
        steps.map(|t| (t, f(t as f64))).collect()
    }

    #[test]
    fn a_curve_of_the_family_is_extrapolated_to_its_value() {
        // alpha on the grid: exact.
        let alpha = ALPHA_MIN * (ALPHA_MAX / ALPHA_MIN).powf(20.0 / (ALPHA_GRID - 1) as f64);
        let f = |t: f64| 0.1 + 0.8 * t.powf(-alpha);
        let p = predict_final(&curve(f, 1..=27), 81).unwrap();
        assert!((p - f(81.0)).abs() < 1e-9, "{p} vs {}", f(81.0));
        // alpha 0.9 lies between grid points (0.85 and 0.97): within 10% of the truth, and
        // nearer to it than the value at step 27 is.
        let f = |t: f64| 0.1 + 0.8 * t.powf(-0.9);
        let p = predict_final(&curve(f, 1..=27), 81).unwrap();
        assert!((p - f(81.0)).abs() < 0.1 * f(81.0) && (p - f(81.0)).abs() < f(27.0) - f(81.0), "{p} vs {}", f(81.0));
    }

    #[test]
    fn a_late_bloomer_outranks_a_fast_learner_that_has_flattened() {
        // Fast: converged near 0.30. Slow: worse at step 27 but still falling fast, ends near 0.19.
        let fast = |t: f64| 0.30 + 0.6 * (1.0 + t / 2.0).powi(-2);
        let slow = |t: f64| 0.10 + 0.8 * (1.0 + t / 40.0).powi(-2);
        assert!(slow(27.0) > fast(27.0) && slow(81.0) < fast(81.0));
        let (pf, ps) = (predict_final(&curve(fast, 1..=27), 81).unwrap(), predict_final(&curve(slow, 1..=27), 81).unwrap());
        assert!(ps < pf, "slow {ps} fast {pf}");
    }

    #[test]
    fn never_above_the_last_score_and_none_when_too_short_or_not_finite() {
        let rising = curve(|t| 0.2 + 0.01 * t, 1..=10);
        assert_eq!(predict_final(&rising, 81), Some(rising.last().unwrap().1));
        assert_eq!(predict_final(&curve(|t| 1.0 / t, 1..=5), 81), None);
        let mut nan = curve(|t| 1.0 / t, 1..=10);
        nan[3].1 = f64::NAN;
        assert_eq!(predict_final(&nan, 81), None);
        assert_eq!(predict_final(&curve(|_| 0.5, 1..=10), 81), Some(0.5));
        // At or past the horizon the last value is the answer.
        assert_eq!(predict_final(&curve(|t| 1.0 / t, 1..=10), 10), Some(0.1));
    }
}
