//! Fitting the laws, in three layers: the robust least squares (Huber on log loss, Nelder–Mead
//! from a grid of starts) over a law in log-parameter form; the input checks, normalisation and
//! grid of starts of each law; and the public API, a single fit or a fit with pairs-bootstrap
//! refits and their percentile intervals. See the documentation of [`crate::scaling`] for the
//! method.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{ChinchillaLaw, ComputeLaw, HUBER_DELTA, INTERVAL_LEVEL};
use crate::{Error, Result};

fn huber(r: f64) -> f64 {
    let a = r.abs();
    if a <= HUBER_DELTA {
        0.5 * r * r
    } else {
        HUBER_DELTA * (a - 0.5 * HUBER_DELTA)
    }
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// An exponent from its log, kept in a range where the law stays finite (0 < exponent ≤ e³).
fn exponent(q: f64) -> f64 {
    q.clamp(-12.0, 3.0).exp()
}

/// A law in log-parameter form over normalised features: `log L̂(θ, x)`.
trait LogLaw {
    const PARAMS: usize;
    fn log_predict(theta: &[f64], x: &[f64]) -> f64;
}

/// Compute law: x = [ln(C/C0)], θ = [p, q, r]: L̂ = e^p·(C/C0)^(−e^q) + e^r.
struct ComputeForm;
impl LogLaw for ComputeForm {
    const PARAMS: usize = 3;
    fn log_predict(t: &[f64], x: &[f64]) -> f64 {
        log_sum_exp(&[t[0] - exponent(t[1]) * x[0], t[2]])
    }
}

/// Chinchilla: x = [ln(N/N0), ln(D/D0)], θ = [e, pa, qa, pb, qb]:
/// L̂ = e^e + e^pa·(N/N0)^(−e^qa) + e^pb·(D/D0)^(−e^qb).
struct ChinchillaForm;
impl LogLaw for ChinchillaForm {
    const PARAMS: usize = 5;
    fn log_predict(t: &[f64], x: &[f64]) -> f64 {
        log_sum_exp(&[t[0], t[1] - exponent(t[2]) * x[0], t[3] - exponent(t[4]) * x[1]])
    }
}

fn objective<F: LogLaw>(theta: &[f64], xs: &[Vec<f64>], log_y: &[f64]) -> f64 {
    let s: f64 = xs.iter().zip(log_y).map(|(x, ly)| huber(F::log_predict(theta, x) - ly)).sum();
    if s.is_finite() {
        s
    } else {
        f64::MAX
    }
}

/// Nelder–Mead (reflection 1, expansion 2, contraction ½, shrink ½) from `x0` with an initial
/// simplex of side `scale`.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], scale: f64, max_iter: usize) -> (Vec<f64>, f64) {
    let n = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((x0.to_vec(), f(x0)));
    for i in 0..n {
        let mut x = x0.to_vec();
        x[i] += scale;
        let fx = f(&x);
        simplex.push((x, fx));
    }
    let along = |c: &[f64], w: &[f64], t: f64| -> Vec<f64> { c.iter().zip(w).map(|(c, w)| c + t * (w - c)).collect() };
    for _ in 0..max_iter {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[n].1);
        let spread = simplex.iter().flat_map(|(x, _)| x.iter().zip(&simplex[0].0).map(|(a, b)| (a - b).abs())).fold(0.0, f64::max);
        if (worst - best).abs() <= 1e-15 * (1.0 + best.abs()) && spread < 1e-9 {
            break;
        }
        let mut centroid = vec![0.0; n];
        for (x, _) in &simplex[..n] {
            for (c, v) in centroid.iter_mut().zip(x) {
                *c += v / n as f64;
            }
        }
        let xw = simplex[n].0.clone();
        let xr = along(&centroid, &xw, -1.0);
        let fr = f(&xr);
        if fr < best {
            let xe = along(&centroid, &xw, -2.0);
            let fe = f(&xe);
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
        } else {
            let (xc, fc) = if fr < worst {
                let xc = along(&centroid, &xr, 0.5);
                let fc = f(&xc);
                (xc, fc)
            } else {
                let xc = along(&centroid, &xw, 0.5);
                let fc = f(&xc);
                (xc, fc)
            };
            if fc < fr.min(worst) {
                simplex[n] = (xc, fc);
            } else {
                let x0 = simplex[0].0.clone();
                for (x, fx) in simplex.iter_mut().skip(1) {
                    *x = along(&x0, x, 0.5);
                    *fx = f(x);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0)
}

/// Minimises the Huber objective from each start (with two restarts); end points best first.
fn fit_from<F: LogLaw>(xs: &[Vec<f64>], log_y: &[f64], starts: &[Vec<f64>]) -> Vec<(Vec<f64>, f64)> {
    let f = |t: &[f64]| objective::<F>(t, xs, log_y);
    let mut out: Vec<(Vec<f64>, f64)> = starts
        .iter()
        .map(|s| {
            let mut best = nelder_mead(&f, s, 0.5, 400 * F::PARAMS);
            for scale in [0.1, 0.02] {
                let next = nelder_mead(&f, &best.0, scale, 400 * F::PARAMS);
                if next.1 <= best.1 {
                    best = next;
                }
            }
            best
        })
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

// ---------------------------------------------------------------------------------------------
// Input checks, normalisation and starts

fn distinct(values: impl Iterator<Item = f64>) -> usize {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
    v.len()
}

/// How many distinct (model size, token count) pairs `points` hold.
fn distinct_pairs(points: &[(f64, f64, f64)]) -> usize {
    let mut pairs: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pairs.dedup();
    pairs.len()
}

fn check_finite(what: &str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::Input(format!(
            "{what} of ladder point {} is {v}: every loss, compute, size and token count must be a finite positive number (did a run diverge?)",
            i + 1
        )));
    }
    Ok(())
}

fn check_compute_points(points: &[(f64, f64)]) -> Result<()> {
    check_finite("the compute", &points.iter().map(|p| p.0).collect::<Vec<_>>())?;
    check_finite("the val loss", &points.iter().map(|p| p.1).collect::<Vec<_>>())?;
    let k = distinct(points.iter().map(|p| p.0));
    if k < 4 {
        return Err(Error::Input(format!(
            "the compute law L(C) = a·C^b + c has 3 parameters and needs at least 4 ladder points of distinct compute; got {k} (add rungs with --ladder or --depths/--tokens)"
        )));
    }
    Ok(())
}

fn check_chinchilla_points(points: &[(f64, f64, f64)]) -> Result<()> {
    check_finite("the model size", &points.iter().map(|p| p.0).collect::<Vec<_>>())?;
    check_finite("the token count", &points.iter().map(|p| p.1).collect::<Vec<_>>())?;
    check_finite("the val loss", &points.iter().map(|p| p.2).collect::<Vec<_>>())?;
    let k = distinct_pairs(points);
    let kn = distinct(points.iter().map(|p| p.0));
    let kd = distinct(points.iter().map(|p| p.1));
    if k < 5 {
        return Err(Error::Input(format!(
            "the Chinchilla law L(N, D) = E + A/N^α + B/D^β has 5 parameters and needs at least 5 distinct ladder points; got {k}"
        )));
    }
    if kn < 3 || kd < 3 {
        return Err(Error::Input(format!(
            "the Chinchilla law needs at least 3 model sizes and 3 token budgets to tell E from A/N^α and B/D^β; the ladder has {kn} sizes and {kd} budgets"
        )));
    }
    Ok(())
}

struct ComputeData {
    c0: f64,
    xs: Vec<Vec<f64>>,
    log_y: Vec<f64>,
}

fn compute_data(points: &[(f64, f64)]) -> ComputeData {
    let c0 = points.iter().map(|p| p.0).fold(0.0, f64::max);
    ComputeData { c0, xs: points.iter().map(|p| vec![(p.0 / c0).ln()]).collect(), log_y: points.iter().map(|p| p.1.ln()).collect() }
}

fn compute_starts(points: &[(f64, f64)]) -> Vec<Vec<f64>> {
    // The loss of the largest run anchors the grid: c is a share of it, a' the rest.
    let l_ref = points.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map_or(1.0, |p| p.1);
    let mut starts = vec![];
    for c_frac in [1e-4, 0.3, 0.6, 0.8, 0.9, 0.95] {
        for b in [0.02, 0.05, 0.1, 0.2, 0.4, 0.8] {
            starts.push(vec![(l_ref * (1.0 - c_frac)).ln(), f64::ln(b), (l_ref * c_frac).ln()]);
        }
    }
    starts
}

fn compute_law_of(theta: &[f64], c0: f64) -> ComputeLaw {
    let b = -exponent(theta[1]);
    ComputeLaw { a: (theta[0] - b * c0.ln()).exp(), b, c: theta[2].exp() }
}

struct ChinchillaData {
    n0: f64,
    d0: f64,
    xs: Vec<Vec<f64>>,
    log_y: Vec<f64>,
}

fn chinchilla_data(points: &[(f64, f64, f64)]) -> ChinchillaData {
    let n0 = points.iter().map(|p| p.0).fold(0.0, f64::max);
    let d0 = points.iter().map(|p| p.1).fold(0.0, f64::max);
    ChinchillaData {
        n0,
        d0,
        xs: points.iter().map(|p| vec![(p.0 / n0).ln(), (p.1 / d0).ln()]).collect(),
        log_y: points.iter().map(|p| p.2.ln()).collect(),
    }
}

fn chinchilla_starts(points: &[(f64, f64, f64)]) -> Vec<Vec<f64>> {
    let l_ref = points.iter().map(|p| p.2).fold(f64::MAX, f64::min);
    let mut starts = vec![];
    for e_frac in [0.05, 0.3, 0.6, 0.85] {
        for share in [0.25, 0.5, 0.75] {
            for alpha in [0.2, 0.5, 1.0, 2.0] {
                for beta in [0.2, 0.5, 1.0, 2.0] {
                    let rest = l_ref * (1.0 - e_frac);
                    starts.push(vec![
                        (l_ref * e_frac).ln(),
                        (rest * share).ln(),
                        f64::ln(alpha),
                        (rest * (1.0 - share)).ln(),
                        f64::ln(beta),
                    ]);
                }
            }
        }
    }
    starts
}

fn chinchilla_law_of(theta: &[f64], n0: f64, d0: f64) -> ChinchillaLaw {
    let (alpha, beta) = (exponent(theta[2]), exponent(theta[4]));
    ChinchillaLaw { e: theta[0].exp(), a: (theta[1] + alpha * n0.ln()).exp(), alpha, b: (theta[3] + beta * d0.ln()).exp(), beta }
}

// ---------------------------------------------------------------------------------------------
// Public fitting API

/// Fits `L(C) = a·C^b + c` to (compute, loss) points.
pub fn fit_compute_law(points: &[(f64, f64)]) -> Result<ComputeLaw> {
    check_compute_points(points)?;
    let d = compute_data(points);
    let best = fit_from::<ComputeForm>(&d.xs, &d.log_y, &compute_starts(points));
    Ok(compute_law_of(&best[0].0, d.c0))
}

/// Fits `L(N, D) = E + A/N^α + B/D^β` to (N, D, loss) points.
pub fn fit_chinchilla(points: &[(f64, f64, f64)]) -> Result<ChinchillaLaw> {
    check_chinchilla_points(points)?;
    let d = chinchilla_data(points);
    let best = fit_from::<ChinchillaForm>(&d.xs, &d.log_y, &chinchilla_starts(points));
    Ok(chinchilla_law_of(&best[0].0, d.n0, d.d0))
}

/// A fit and its bootstrap refits.
#[derive(Debug, Clone)]
pub struct Bootstrapped<L> {
    pub fit: L,
    pub resamples: Vec<L>,
}

impl<L> Bootstrapped<L> {
    /// The point value of `f` and its percentile interval over the resamples.
    pub fn estimate(&self, f: impl Fn(&L) -> f64) -> Estimate {
        let values: Vec<f64> = self.resamples.iter().map(&f).collect();
        Estimate { value: f(&self.fit), interval: percentile_interval(&values, INTERVAL_LEVEL) }
    }
}

/// A value with its bootstrap percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub interval: [f64; 2],
}

/// The central `level` interval of `values` (linear interpolation between order statistics);
/// non-finite values are left out; `[NaN, NaN]` when none is left.
pub fn percentile_interval(values: &[f64], level: f64) -> [f64; 2] {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    let tail = (1.0 - level) / 2.0;
    [q(tail), q(1.0 - tail)]
}

/// Resample indices with replacement until `ok` accepts the resample (at most 100 draws).
pub(super) fn resample<T: Clone>(points: &[T], rng: &mut ChaCha8Rng, ok: impl Fn(&[T]) -> bool) -> Option<Vec<T>> {
    (0..100).find_map(|_| {
        let s: Vec<T> = (0..points.len()).map(|_| points[rng.random_range(0..points.len())].clone()).collect();
        ok(&s).then_some(s)
    })
}

/// An interval needs a point more than a resample must hold: a resample is refitted only if it
/// has `least` distinct points (what the fit needs), so with exactly `least` every accepted
/// resample is the whole set again, and the "interval" has no width (a speedrun at pace 0.45:
/// five ladder points, the Chinchilla law through all five, an interval of width 1e-8 around a
/// prediction 13 % off).
fn check_resamplable(k: usize, least: usize, law: &str, what: &str, resamples: usize) -> Result<()> {
    if resamples > 0 && k <= least {
        return Err(Error::Input(format!(
            "{law} needs {least} ladder points {what} to be fitted and one more for its bootstrap interval; got {k}, so every resample would be the same points"
        )));
    }
    Ok(())
}

/// The compute law with `resamples` pairs-bootstrap refits (seeded).
pub fn bootstrap_compute_law(points: &[(f64, f64)], resamples: usize, seed: u64) -> Result<Bootstrapped<ComputeLaw>> {
    check_compute_points(points)?;
    check_resamplable(distinct(points.iter().map(|p| p.0)), 4, "the compute law", "of distinct compute", resamples)?;
    let d = compute_data(points);
    let full = fit_from::<ComputeForm>(&d.xs, &d.log_y, &compute_starts(points));
    let fit = compute_law_of(&full[0].0, d.c0);
    // Refits start from the full fit's best distinct end points, mapped to each resample's C0.
    let best: Vec<ComputeLaw> = full.iter().take(6).map(|(t, _)| compute_law_of(t, d.c0)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let Some(s) = resample(points, &mut rng, |s| check_compute_points(s).is_ok()) else { continue };
        let ds = compute_data(&s);
        let starts: Vec<Vec<f64>> = best
            .iter()
            .map(|l| vec![(l.a.ln() + l.b * ds.c0.ln()), (-l.b).ln(), l.c.max(1e-12).ln()])
            .chain(compute_starts(&s).into_iter().step_by(5))
            .collect();
        let r = fit_from::<ComputeForm>(&ds.xs, &ds.log_y, &starts);
        out.push(compute_law_of(&r[0].0, ds.c0));
    }
    Ok(Bootstrapped { fit, resamples: out })
}

/// The Chinchilla law with `resamples` pairs-bootstrap refits (seeded).
pub fn bootstrap_chinchilla(points: &[(f64, f64, f64)], resamples: usize, seed: u64) -> Result<Bootstrapped<ChinchillaLaw>> {
    check_chinchilla_points(points)?;
    check_resamplable(distinct_pairs(points), 5, "the Chinchilla law", "(distinct size and token pairs)", resamples)?;
    let d = chinchilla_data(points);
    let full = fit_from::<ChinchillaForm>(&d.xs, &d.log_y, &chinchilla_starts(points));
    let fit = chinchilla_law_of(&full[0].0, d.n0, d.d0);
    let best: Vec<ChinchillaLaw> = full.iter().take(6).map(|(t, _)| chinchilla_law_of(t, d.n0, d.d0)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let Some(s) = resample(points, &mut rng, |s| check_chinchilla_points(s).is_ok()) else { continue };
        let ds = chinchilla_data(&s);
        let starts: Vec<Vec<f64>> = best
            .iter()
            .map(|l| vec![l.e.max(1e-12).ln(), l.a.ln() - l.alpha * ds.n0.ln(), l.alpha.ln(), l.b.ln() - l.beta * ds.d0.ln(), l.beta.ln()])
            .chain(chinchilla_starts(&s).into_iter().step_by(16))
            .collect();
        let r = fit_from::<ChinchillaForm>(&ds.xs, &ds.log_y, &starts);
        out.push(chinchilla_law_of(&r[0].0, ds.n0, ds.d0));
    }
    Ok(Bootstrapped { fit, resamples: out })
}
