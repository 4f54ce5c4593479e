//! Small numerical kernels: normal distribution functions in log space, truncated-normal
//! sampling, log-sum-exp and a dense Cholesky. No external linear-algebra crate: the matrices
//! are at most a few hundred rows (one row per trial).

use rand::Rng;

use crate::TunerRng;

pub(crate) const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// `ln erfc(x)` for `x >= 0` (Numerical Recipes `erfcc`, relative error < 1.2e-7), computed in
/// log space so it does not underflow for large `x`.
fn ln_erfc_pos(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() - x * x + poly
}

/// `ln Q(z)` where `Q(z) = 1 - Phi(z)` is the upper tail of the standard normal.
pub(crate) fn ln_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    if x >= 0.0 {
        ln_erfc_pos(x) - std::f64::consts::LN_2
    } else {
        // erfc(x) = 2 - erfc(-x), and erfc(-x) <= 1 here, so there is no cancellation.
        (1.0 - 0.5 * ln_erfc_pos(-x).exp()).ln()
    }
}

/// `Phi(z)`, the standard normal CDF.
pub(crate) fn norm_cdf(z: f64) -> f64 {
    ln_upper_tail(-z).exp()
}

/// `ln(Phi(b) - Phi(a))` for `a <= b`, stable in both tails. Returns `-inf` for an empty interval.
pub(crate) fn ln_norm_mass(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() || a >= b {
        return f64::NEG_INFINITY;
    }
    if a >= 0.0 {
        // Both in the upper tail: Q(a) - Q(b).
        let (qa, qb) = (ln_upper_tail(a), ln_upper_tail(b));
        qa + ln_1m_exp(qb - qa)
    } else if b <= 0.0 {
        let (qa, qb) = (ln_upper_tail(-b), ln_upper_tail(-a));
        qa + ln_1m_exp(qb - qa)
    } else {
        let m = 1.0 - ln_upper_tail(b).exp() - ln_upper_tail(-a).exp();
        m.max(f64::MIN_POSITIVE).ln()
    }
}

/// `ln(1 - e^x)` for `x <= 0`.
fn ln_1m_exp(x: f64) -> f64 {
    if x >= 0.0 {
        f64::NEG_INFINITY
    } else if x > -std::f64::consts::LN_2 {
        (-x.exp_m1()).ln()
    } else {
        (-x.exp()).ln_1p()
    }
}

/// `ln phi(z)`, the standard normal log density.
pub(crate) fn ln_norm_pdf(z: f64) -> f64 {
    -0.5 * z * z - LN_SQRT_2PI
}

/// `ln h(z)` with `h(z) = phi(z) + z Phi(z)`: the expected-improvement factor, computed so that
/// it stays finite and monotone far into the left tail (the "logEI" of Ament et al. 2023).
pub(crate) fn ln_ei_factor(z: f64) -> f64 {
    if z > -1.0 {
        let h = ln_norm_pdf(z).exp() + z * norm_cdf(z);
        return h.max(f64::MIN_POSITIVE).ln();
    }
    let x = -z;
    if x > 1e4 {
        return ln_norm_pdf(z) - 2.0 * x.ln();
    }
    // h(z) = phi(x) (1 - x R(x)) with Mills ratio R(x) = 1/(x + 1/(x + 2/(x + ...))).
    // Writing R = 1/(x + c) gives 1 - x R = c / (x + c), which has no cancellation.
    let mut t = x;
    for k in (2..=80).rev() {
        t = x + k as f64 / t;
    }
    let c = 1.0 / t;
    ln_norm_pdf(z) + (c / (x + c)).ln()
}

/// A standard normal draw (Box-Muller; one draw per call keeps the stream easy to reason about).
pub(crate) fn std_normal(rng: &mut TunerRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Draws from N(mu, sigma) truncated to `[a, b]`. Rejection sampling: our kernels always have
/// `mu` inside `[a, b]` and `sigma <= b - a`, so acceptance is at least ~1/3. After 64 misses
/// (only possible for pathological inputs) falls back to a uniform draw.
pub(crate) fn trunc_normal(rng: &mut TunerRng, mu: f64, sigma: f64, a: f64, b: f64) -> f64 {
    for _ in 0..64 {
        let x = mu + sigma * std_normal(rng);
        if x >= a && x <= b {
            return x;
        }
    }
    a + (b - a) * rng.random::<f64>()
}

/// `ln sum exp(xs)`; `-inf` for an empty slice or all `-inf`.
pub(crate) fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Picks an index with probability proportional to `weights` (non-negative, not all zero).
pub(crate) fn choose_weighted(rng: &mut TunerRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// Dense row-major square matrix.
#[derive(Debug, Clone)]
pub(crate) struct Mat {
    pub n: usize,
    pub a: Vec<f64>,
}

impl Mat {
    pub(crate) fn zeros(n: usize) -> Self {
        Mat { n, a: vec![0.0; n * n] }
    }
    #[inline]
    pub(crate) fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }
    #[inline]
    pub(crate) fn set(&mut self, i: usize, j: usize, v: f64) {
        self.a[i * self.n + j] = v;
    }

    /// Lower Cholesky factor of a symmetric positive-definite matrix, or `None` if a pivot is
    /// not positive (the caller adds jitter and retries). Only the lower triangle is read.
    pub(crate) fn cholesky(&self) -> Option<Mat> {
        let n = self.n;
        let mut l = Mat::zeros(n);
        // Row-oriented (Cholesky-Banachiewicz): every inner product runs over two contiguous
        // row prefixes, which is what keeps this fast without a BLAS.
        for i in 0..n {
            let (done, rest) = l.a.split_at_mut(i * n);
            let ri = &mut rest[..n];
            for j in 0..=i {
                let rj: &[f64] = if j < i { &done[j * n..j * n + j] } else { &ri[..j] };
                let s = self.a[i * n + j] - dot(&ri[..j], rj);
                if j == i {
                    if s.is_nan() || s <= 0.0 || !s.is_finite() {
                        return None;
                    }
                    ri[i] = s.sqrt();
                } else {
                    ri[j] = s / done[j * n + j];
                }
            }
        }
        Some(l)
    }

    /// Solves `L x = b` for lower-triangular `self`.
    pub(crate) fn solve_lower(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x = b.to_vec();
        for i in 0..n {
            let r = &self.a[i * n..i * n + i + 1];
            x[i] = (x[i] - dot(&r[..i], &x[..i])) / r[i];
        }
        x
    }

    /// Solves `L^T x = b` for lower-triangular `self`.
    pub(crate) fn solve_upper_t(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x = b.to_vec();
        // Column-oriented back substitution: after x[i] is final, subtract its contribution
        // from x[..i] using row i of L (contiguous).
        for i in (0..n).rev() {
            let r = &self.a[i * n..i * n + i + 1];
            x[i] /= r[i];
            let xi = x[i];
            for (xk, lik) in x[..i].iter_mut().zip(&r[..i]) {
                *xk -= lik * xi;
            }
        }
        x
    }

    /// `K^{-1}` from the Cholesky factor `L` of `K`.
    pub(crate) fn chol_inverse(&self) -> Mat {
        let n = self.n;
        // M = L^{-1}, lower triangular, row by row: M[i][j] = (e_ij - sum_{k<i} L[i][k] M[k][j]) / L[i][i].
        let mut m = Mat::zeros(n);
        for i in 0..n {
            let lii = self.a[i * n + i];
            let (done, rest) = m.a.split_at_mut(i * n);
            let mi = &mut rest[..n];
            mi[i] = 1.0;
            for k in 0..i {
                let lik = self.a[i * n + k];
                if lik != 0.0 {
                    for (a, b) in mi[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                        *a -= lik * b;
                    }
                }
            }
            mi[..=i].iter_mut().for_each(|v| *v /= lii);
        }
        // K^{-1} = M^T M, accumulated as rank-one updates by rows of M (contiguous).
        let mut out = Mat::zeros(n);
        for k in 0..n {
            let mk = &m.a[k * n..k * n + k + 1];
            for i in 0..=k {
                let mki = mk[i];
                if mki == 0.0 {
                    continue;
                }
                let oi = &mut out.a[i * n..i * n + i + 1];
                for (o, v) in oi.iter_mut().zip(&mk[..=i]) {
                    *o += mki * v;
                }
            }
        }
        for i in 0..n {
            for j in 0..i {
                out.a[j * n + i] = out.a[i * n + j];
            }
        }
        out
    }
}

/// Dot product of two equally long slices.
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators let the compiler vectorise without reassociating one sum.
    let mut acc = [0.0; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += a[4 * c + l] * b[4 * c + l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in 4 * chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((norm_cdf(1.96) - 0.975_002_1).abs() < 1e-6);
        // Far tail stays finite: ln Q(40) ~ -804.6
        assert!((ln_upper_tail(40.0) + 804.608).abs() < 0.01);
        let m = ln_norm_mass(-1.0, 1.0).exp();
        assert!((m - 0.682_689_5).abs() < 1e-6);
        assert!((ln_norm_mass(3.0, 4.0).exp() - (0.998_650_1 - 0.999_968_3f64).abs()).abs() < 1e-6);
        // EI factor: h(0) = phi(0); monotone in the tail.
        assert!((ln_ei_factor(0.0) - ln_norm_pdf(0.0)).abs() < 1e-7);
        let mut prev = f64::NEG_INFINITY;
        for i in (0..200).rev() {
            let v = ln_ei_factor(-(i as f64) * 0.5);
            assert!(v.is_finite() && v >= prev, "at {i}");
            prev = v;
        }
        // Continuity at the branch point.
        assert!((ln_ei_factor(-1.0 + 1e-9) - ln_ei_factor(-1.0)).abs() < 1e-5);
    }

    #[test]
    fn cholesky_solves() {
        let mut k = Mat::zeros(3);
        let v = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        k.a.copy_from_slice(&v);
        let l = k.cholesky().unwrap();
        let inv = l.chol_inverse();
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|m| k.at(i, m) * inv.at(m, j)).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let x = l.solve_upper_t(&l.solve_lower(&[1.0, 2.0, 3.0]));
        let b: Vec<f64> = (0..3).map(|i| (0..3).map(|m| k.at(i, m) * x[m]).sum()).collect();
        assert!((b[2] - 3.0).abs() < 1e-12);
    }
}
