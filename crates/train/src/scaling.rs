//! Predictable scaling: train a ladder of small models, fit scaling laws to their final val
//! losses, and predict a bigger run's final loss before it starts.
//!
//! Two laws are fitted:
//! - the compute law `L(C) = a·C^b + c` (the GPT-4 report's form; b < 0, c ≥ 0 the irreducible
//!   loss), C in training FLOPs;
//! - the Chinchilla law `L(N, D) = E + A/N^α + B/D^β`, whose minimum under `C = 6·N·D` gives the
//!   compute-optimal tokens per parameter for this data.
//!
//! **N** is the model's *compute parameters*, `train_flops_per_token(context) / 6`: every matmul
//! weight plus attention at the run's context, so `C = 6·N·D` holds exactly. The embedding lookup
//! table costs no FLOPs and is not counted (at depth 1 with a 4,096-token vocabulary it is half of
//! all parameters, which would hide the size dial). Each ladder point also records `num_params()`.
//!
//! **Fitting** (Chinchilla's approach 3): the parameters live in log space (`a = e^p`, `c = e^r`,
//! `−b = e^q`, likewise `E, A, B, α, β`), so the signs hold by construction, and the objective is
//! the Huber loss (δ = 10⁻³) of `log L̂ − log L` summed over the ladder, with `log L̂` a
//! log-sum-exp. Inputs are normalised by the ladder's largest C (N, D), which makes one grid of
//! starting points fit every scale. Nelder–Mead runs from every grid start (36 for the compute
//! law, 192 for Chinchilla), restarted twice from its own end point, and the best end point wins.
//!
//! **Uncertainty**: pairs bootstrap. Resample the ladder points with replacement (redrawing a
//! resample that has too few distinct points to identify the law), refit from the full fit's
//! best starts, and take percentile intervals of each parameter, of the target's predicted loss
//! and of the recommended tokens per parameter. These intervals hold the fit's statistical
//! uncertainty, not the error of the law's form.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chatforge_rundir::fs::write_atomic;
use chatforge_rundir::report::{self, Key};
use chatforge_rundir::RunDir;
use chatforge_data::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ckpt;
use crate::pretrain::{lr_for_depth, pretrain, Budget, Corpus, PretrainConfig, PretrainOutcome, RunOptions};
use crate::{Error, Result};

/// Huber threshold on the residual of log loss (Chinchilla's δ).
pub const HUBER_DELTA: f64 = 1e-3;
/// Central mass of every reported interval (5th to 95th percentile).
pub const INTERVAL_LEVEL: f64 = 0.9;

// ---------------------------------------------------------------------------------------------
// The laws

/// `L(C) = a·C^b + c`, C in FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ComputeLaw {
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

impl ComputeLaw {
    pub fn predict(&self, compute: f64) -> f64 {
        self.a * compute.powf(self.b) + self.c
    }
}

/// `L(N, D) = E + A/N^α + B/D^β`, N in compute parameters, D in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChinchillaLaw {
    pub e: f64,
    pub a: f64,
    pub alpha: f64,
    pub b: f64,
    pub beta: f64,
}

impl ChinchillaLaw {
    pub fn predict(&self, n: f64, d: f64) -> f64 {
        self.e + (self.a.ln() - self.alpha * n.ln()).exp() + (self.b.ln() - self.beta * d.ln()).exp()
    }

    /// The (N, D) that minimise L subject to `6·N·D = compute`:
    /// `N = (αA / βB)^{1/(α+β)} · (C/6)^{β/(α+β)}`, `D = C / 6N`.
    pub fn optimal_split(&self, compute: f64) -> (f64, f64) {
        let nd = compute / 6.0;
        let ln_n = ((self.alpha * self.a).ln() - (self.beta * self.b).ln() + self.beta * nd.ln()) / (self.alpha + self.beta);
        let n = ln_n.exp();
        (n, nd / n)
    }

    /// The training tokens for which `n` compute parameters is the compute-optimal size (the
    /// inverse of `optimal_split`: `C/6 = (N / G)^{(α+β)/β}` with `G = (αA / βB)^{1/(α+β)}`).
    pub fn optimal_tokens(&self, n: f64) -> f64 {
        let ln_g = ((self.alpha * self.a).ln() - (self.beta * self.b).ln()) / (self.alpha + self.beta);
        let ln_nd = (n.ln() - ln_g) * (self.alpha + self.beta) / self.beta;
        (ln_nd - n.ln()).exp()
    }

    /// Compute-optimal training tokens per (compute) parameter at `compute` FLOPs.
    pub fn tokens_per_param(&self, compute: f64) -> f64 {
        let (n, d) = self.optimal_split(compute);
        d / n
    }
}

// ---------------------------------------------------------------------------------------------
// Robust least squares: Huber on log loss, Nelder–Mead from a grid of starts

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
    let mut pairs: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pairs.dedup();
    let k = pairs.len();
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
fn resample<T: Clone>(points: &[T], rng: &mut ChaCha8Rng, ok: impl Fn(&[T]) -> bool) -> Option<Vec<T>> {
    (0..100).find_map(|_| {
        let s: Vec<T> = (0..points.len()).map(|_| points[rng.random_range(0..points.len())].clone()).collect();
        ok(&s).then_some(s)
    })
}

/// The compute law with `resamples` pairs-bootstrap refits (seeded).
pub fn bootstrap_compute_law(points: &[(f64, f64)], resamples: usize, seed: u64) -> Result<Bootstrapped<ComputeLaw>> {
    check_compute_points(points)?;
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

// ---------------------------------------------------------------------------------------------
// The ladder

/// One run of the ladder (or the target): a depth and a token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub depth: usize,
    pub tokens: usize,
}

/// Parses `"1:50000,1:100000,2:50000"` (depth:tokens pairs).
pub fn parse_ladder(s: &str) -> Result<Vec<Rung>> {
    let bad =
        |part: &str, why: &str| Error::Input(format!("--ladder {part:?}: {why}; expected depth:tokens pairs such as \"1:50000,2:100000\""));
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (d, t) = part.split_once(':').ok_or_else(|| bad(part, "no ':'"))?;
        let depth: usize = d.trim().parse().map_err(|_| bad(part, "the depth is not a whole number"))?;
        let tokens: usize = t.trim().replace('_', "").parse().map_err(|_| bad(part, "the token count is not a whole number"))?;
        if depth == 0 || tokens == 0 {
            return Err(bad(part, "depth and tokens must be at least 1"));
        }
        out.push(Rung { depth, tokens });
    }
    dedup_rungs(out)
}

/// Every (depth, tokens) pair of the two lists.
pub fn grid(depths: &[usize], tokens: &[usize]) -> Result<Vec<Rung>> {
    if depths.contains(&0) || tokens.contains(&0) {
        return Err(Error::Input("ladder depths and token budgets must be at least 1".into()));
    }
    dedup_rungs(depths.iter().flat_map(|&depth| tokens.iter().map(move |&tokens| Rung { depth, tokens })).collect())
}

fn dedup_rungs(mut v: Vec<Rung>) -> Result<Vec<Rung>> {
    v.sort_by_key(|r| (r.depth, r.tokens));
    v.dedup();
    if v.is_empty() {
        return Err(Error::Input("the ladder is empty".into()));
    }
    Ok(v)
}

/// What one finished ladder run (or the target) measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LadderPoint {
    pub depth: usize,
    /// `num_params()`: every parameter, embedding included.
    pub params: usize,
    /// N of the laws: training FLOPs per token / 6.
    pub compute_params: f64,
    /// Tokens trained (whole steps).
    pub tokens: u64,
    /// C = FLOPs per token × tokens.
    pub compute: f64,
    pub val_loss: f64,
    /// The val loss of the train split's unigram distribution (the same nats per token a model
    /// that ignores context reaches).
    pub unigram_loss: f64,
    /// Whether the laws were fitted to this point: a run whose loss has not come below the
    /// unigram loss has not started to use context yet (the plateau every run starts on), and the
    /// laws describe what comes after.
    pub fitted: bool,
    pub wall_s: f64,
}

/// The ladder's shared settings: context, batch, optimiser, seed and the val tokens scored.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub base: PretrainConfig,
    pub ladder: Vec<Rung>,
    pub target: Rung,
    pub bootstrap: usize,
}

impl ScaleConfig {
    /// The pretraining config of a rung: the base one at this depth, its learning rate scaled
    /// from `base.optim.lr` by `lr_for_depth` (one recipe for every size), with a single eval
    /// (at the end, on the same `eval_tokens` val tokens for every run) and a single checkpoint.
    pub fn run_config(&self, depth: usize) -> PretrainConfig {
        let mut c =
            PretrainConfig { depth, eval_every: usize::MAX / 2, checkpoint_every: usize::MAX / 2, sample_tokens: 0, ..self.base.clone() };
        c.optim.lr = lr_for_depth(self.base.optim.lr, depth);
        c
    }

    /// Tokens a rung will train: its budget rounded up to whole steps (what `pretrain` does).
    pub fn trained_tokens(&self, r: Rung) -> u64 {
        (r.tokens.div_ceil(self.base.tokens_per_step()) * self.base.tokens_per_step()) as u64
    }

    /// (params, compute params, tokens, compute) of a rung, from the model's shape.
    pub fn size_of(&self, r: Rung, vocab: usize) -> (usize, f64, u64, f64) {
        let mc = self.run_config(r.depth).model_config(vocab);
        let per_token = mc.train_flops_per_token(self.base.context);
        let tokens = self.trained_tokens(r);
        (mc.num_params(), per_token / 6.0, tokens, per_token * tokens as f64)
    }
}

/// `R/scale/d{depth}-t{tokens}`.
pub fn rung_dir(run: &Path, r: Rung) -> PathBuf {
    run.join("scale").join(format!("d{}-t{}", r.depth, r.tokens))
}

/// `R/scale/target`.
pub fn target_dir(run: &Path) -> PathBuf {
    run.join("scale").join("target")
}

/// Refuses to reuse a run folder trained with other settings (it would be resumed as it is).
fn check_reusable(dir: &Path, wanted: &PretrainConfig, budget_tokens: usize) -> Result<()> {
    let state = dir.join("base");
    if !state.join("state.json").exists() {
        return Ok(());
    }
    let saved: PretrainConfig = ckpt::read_state(&state)?.config_as()?;
    let mut want = wanted.clone();
    want.steps = budget_tokens.div_ceil(want.tokens_per_step()).max(1);
    want.optim.warmup_steps = want.optim.warmup_steps.min(want.steps / 5);
    if serde_json::to_value(&saved).ok() != serde_json::to_value(&want).ok() {
        return Err(Error::Input(format!(
            "{} holds a run with other settings (depth, context, batch, lr, seed or eval tokens differ); delete it to retrain",
            dir.display()
        )));
    }
    Ok(())
}

fn train_rung(
    run_dir: &Path,
    cfg: PretrainConfig,
    tokens: usize,
    tok: &Tokenizer,
    corpus: &Corpus,
    quiet: bool,
) -> Result<PretrainOutcome> {
    check_reusable(run_dir, &cfg, tokens)?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    pretrain(run_dir, cfg, Budget::Tokens(tokens), tok, corpus, &RunOptions { resume_from: None, quiet })
}

/// A finished run as a ladder point (also the target's actual point once it trained).
pub fn point_of(cfg: &ScaleConfig, r: Rung, vocab: usize, o: &PretrainOutcome) -> LadderPoint {
    let (params, compute_params, _, _) = cfg.size_of(r, vocab);
    let unigram_loss = if o.val_bpb > 0.0 { o.unigram_val_bpb * o.val_loss / o.val_bpb } else { f64::NAN };
    LadderPoint {
        depth: r.depth,
        params,
        compute_params,
        tokens: o.tokens,
        compute: 6.0 * compute_params * o.tokens as f64,
        val_loss: o.val_loss,
        unigram_loss,
        fitted: o.val_loss < unigram_loss || unigram_loss.is_nan(),
        wall_s: o.wall_s,
    }
}

/// Refuses a target that is not bigger than the ladder's largest run.
pub fn check_target(cfg: &ScaleConfig, vocab: usize) -> Result<f64> {
    let (_, _, _, target_c) = cfg.size_of(cfg.target, vocab);
    let (big, big_c) = cfg
        .ladder
        .iter()
        .map(|&r| (r, cfg.size_of(r, vocab).3))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or_else(|| Error::Input("the ladder is empty".into()))?;
    if target_c <= big_c {
        return Err(Error::Input(format!(
            "the target (depth {}, {} tokens: {target_c:.3e} FLOPs) is not bigger than the ladder's largest run (depth {}, {} tokens: {big_c:.3e} FLOPs); a scaling law predicts bigger runs from smaller ones: raise --target-depth / --target-tokens or shrink the ladder",
            cfg.target.depth, cfg.target.tokens, big.depth, big.tokens
        )));
    }
    Ok(target_c / big_c)
}

/// Trains every rung (a fresh `pretrain` in `R/scale/d{depth}-t{tokens}`; finished rungs are
/// read back), with one progress bar over the ladder weighted by compute.
pub fn run_ladder(run: &Path, cfg: &ScaleConfig, tok: &Tokenizer, corpus: &Corpus, quiet: bool) -> Result<Vec<LadderPoint>> {
    let vocab = tok.vocab_size();
    let sizes: Vec<f64> = cfg.ladder.iter().map(|&r| cfg.size_of(r, vocab).3).collect();
    let unit = 1e9; // the bar counts GFLOP
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new((sizes.iter().sum::<f64>() / unit).ceil() as u64) };
    bar.set_style(
        ProgressStyle::with_template("ladder {bar:28.cyan/blue} {percent:>3}% of compute [{elapsed_precise}<{eta_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut points = Vec::with_capacity(cfg.ladder.len());
    for (i, (&r, &c)) in cfg.ladder.iter().zip(&sizes).enumerate() {
        bar.set_message(format!("run {}/{}: depth {}, {} tokens", i + 1, cfg.ladder.len(), r.depth, r.tokens));
        let o = train_rung(&rung_dir(run, r), cfg.run_config(r.depth), r.tokens, tok, corpus, true)?;
        let p = point_of(cfg, r, vocab, &o);
        if !p.val_loss.is_finite() {
            bar.abandon();
            return Err(Error::Input(format!(
                "ladder run {}: the final val loss is {} (the run diverged); lower --lr or drop the rung",
                rung_dir(run, r).display(),
                p.val_loss
            )));
        }
        bar.inc((c / unit).round() as u64);
        points.push(p);
    }
    bar.finish_and_clear();
    Ok(points)
}

/// Trains the target in `R/scale/target` (progress shown unless `quiet`).
pub fn run_target(run: &Path, cfg: &ScaleConfig, tok: &Tokenizer, corpus: &Corpus, quiet: bool) -> Result<LadderPoint> {
    let o = train_rung(&target_dir(run), cfg.run_config(cfg.target.depth), cfg.target.tokens, tok, corpus, quiet)?;
    Ok(point_of(cfg, cfg.target, tok.vocab_size(), &o))
}

// ---------------------------------------------------------------------------------------------
// The prediction and its record

/// Parameters of the compute law with intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeLawFit {
    pub form: String,
    pub a: Estimate,
    pub b: Estimate,
    pub c: Estimate,
    /// The target's predicted loss under this law.
    pub prediction: Estimate,
}

/// Parameters of the Chinchilla law with intervals (N in compute parameters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChinchillaFit {
    pub form: String,
    #[serde(rename = "E")]
    pub e: Estimate,
    #[serde(rename = "A")]
    pub a: Estimate,
    pub alpha: Estimate,
    #[serde(rename = "B")]
    pub b: Estimate,
    pub beta: Estimate,
    pub prediction: Estimate,
    /// Compute-optimal tokens per parameter at the target's compute.
    pub tokens_per_param: Estimate,
    /// The compute-optimal (N, D) at the target's compute.
    pub optimal_params: f64,
    pub optimal_tokens: f64,
}

impl ChinchillaFit {
    /// The law at the point estimates.
    pub fn law(&self) -> ChinchillaLaw {
        ChinchillaLaw { e: self.e.value, a: self.a.value, alpha: self.alpha.value, b: self.b.value, beta: self.beta.value }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fits {
    pub compute_law: ComputeLawFit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chinchilla: Option<ChinchillaFit>,
    /// Why the Chinchilla law was not fitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chinchilla_skipped: Option<String>,
    pub huber_delta: f64,
    pub interval_level: f64,
    pub bootstrap_resamples: usize,
}

/// `R/scaling.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingReport {
    pub ladder: Vec<LadderPoint>,
    pub target: LadderPoint,
    pub fit: Fits,
    pub predicted_loss: f64,
    pub prediction_interval: [f64; 2],
    /// Which law `predicted_loss` comes from.
    pub prediction_law: String,
    pub extrapolation_factor: f64,
    pub recommended_tokens_per_param: Option<f64>,
    pub recommended_tokens_per_param_interval: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_interval: Option<bool>,
}

/// Fits both laws to the ladder and predicts the target (its `val_loss` is NaN until it ran).
/// The prediction is the Chinchilla law's (it knows the target's N and D) when that law could
/// be fitted, else the compute law's.
pub fn predict(ladder: &[LadderPoint], target: &LadderPoint, resamples: usize, seed: u64) -> Result<ScalingReport> {
    if let Some((i, p)) = ladder.iter().enumerate().find(|(_, p)| !p.val_loss.is_finite()) {
        return Err(Error::Input(format!(
            "ladder point {} (depth {}, {} tokens): the val loss is {}, not a finite number",
            i + 1,
            p.depth,
            p.tokens,
            p.val_loss
        )));
    }
    let largest = ladder.iter().map(|p| p.compute).fold(0.0, f64::max);
    let used: Vec<&LadderPoint> = ladder.iter().filter(|p| p.fitted).collect();
    if target.compute <= largest {
        return Err(Error::Input(format!(
            "the target ({:.3e} FLOPs) is not bigger than the ladder's largest run ({largest:.3e} FLOPs)",
            target.compute
        )));
    }
    let left_out = |e: Error| match e {
        Error::Input(m) if used.len() < ladder.len() => Error::Input(format!(
            "{m}; {} of the {} ladder runs were left out because their loss is not below the unigram loss yet (give them more tokens)",
            ladder.len() - used.len(),
            ladder.len()
        )),
        e => e,
    };
    let cl = bootstrap_compute_law(&used.iter().map(|p| (p.compute, p.val_loss)).collect::<Vec<_>>(), resamples, seed).map_err(left_out)?;
    let compute_law = ComputeLawFit {
        form: "L(C) = a·C^b + c, C in FLOPs".into(),
        a: cl.estimate(|l| l.a),
        b: cl.estimate(|l| l.b),
        c: cl.estimate(|l| l.c),
        prediction: cl.estimate(|l| l.predict(target.compute)),
    };
    let chin_points: Vec<(f64, f64, f64)> = used.iter().map(|p| (p.compute_params, p.tokens as f64, p.val_loss)).collect();
    let (chinchilla, skipped) = match bootstrap_chinchilla(&chin_points, resamples, seed ^ 0xC41).map_err(left_out) {
        Ok(ch) => {
            let (n_opt, d_opt) = ch.fit.optimal_split(target.compute);
            let fit = ChinchillaFit {
                form: "L(N, D) = E + A/N^alpha + B/D^beta, N = train FLOPs per token / 6, D in tokens".into(),
                e: ch.estimate(|l| l.e),
                a: ch.estimate(|l| l.a),
                alpha: ch.estimate(|l| l.alpha),
                b: ch.estimate(|l| l.b),
                beta: ch.estimate(|l| l.beta),
                prediction: ch.estimate(|l| l.predict(target.compute_params, target.tokens as f64)),
                tokens_per_param: ch.estimate(|l| l.tokens_per_param(target.compute)),
                optimal_params: n_opt,
                optimal_tokens: d_opt,
            };
            (Some(fit), None)
        }
        Err(Error::Input(why)) => (None, Some(format!("Chinchilla law not fitted: {why}"))),
        Err(e) => return Err(e),
    };
    let (law, pred) = match &chinchilla {
        Some(ch) => ("chinchilla", ch.prediction),
        None => ("compute_law", compute_law.prediction),
    };
    Ok(ScalingReport {
        ladder: ladder.to_vec(),
        target: target.clone(),
        predicted_loss: pred.value,
        prediction_interval: pred.interval,
        prediction_law: law.into(),
        extrapolation_factor: target.compute / largest,
        recommended_tokens_per_param: chinchilla.as_ref().map(|c| c.tokens_per_param.value),
        recommended_tokens_per_param_interval: chinchilla.as_ref().map(|c| c.tokens_per_param.interval),
        fit: Fits {
            compute_law,
            chinchilla,
            chinchilla_skipped: skipped,
            huber_delta: HUBER_DELTA,
            interval_level: INTERVAL_LEVEL,
            bootstrap_resamples: cl.resamples.len(),
        },
        actual_loss: None,
        relative_error: None,
        within_interval: None,
    })
}

impl ScalingReport {
    /// Records the target's measured loss.
    pub fn set_actual(&mut self, target: &LadderPoint) {
        self.target = target.clone();
        self.actual_loss = Some(target.val_loss);
        self.relative_error = Some((self.predicted_loss - target.val_loss) / target.val_loss);
        self.within_interval = Some(self.prediction_interval[0] <= target.val_loss && target.val_loss <= self.prediction_interval[1]);
    }
}

/// Writes `R/scaling.json`, `stages.scaling` of the report, and `R/plots/scaling.svg`.
pub fn write(run: &Path, s: &ScalingReport) -> Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(|e| Error::Input(format!("scaling.json: {e}")))?;
    write_atomic(&run.join("scaling.json"), text.as_bytes())?;
    plot(&run.join("plots/scaling.svg"), s)?;
    let cl = &s.fit.compute_law;
    let mut fig = json!({
        "ladder_points": s.ladder.len(),
        "target_depth": s.target.depth,
        "target_tokens": s.target.tokens,
        "target_compute": s.target.compute,
        "extrapolation_factor": s.extrapolation_factor,
        "predicted_loss": s.predicted_loss,
        "prediction_interval": s.prediction_interval,
        "prediction_law": s.prediction_law,
        "compute_law": format!("L(C) = {:.4e}·C^{:.4} + {:.4}", cl.a.value, cl.b.value, cl.c.value),
        "compute_law_prediction": cl.prediction.value,
        "recommended_tokens_per_param": s.recommended_tokens_per_param,
    });
    if let Some(ch) = &s.fit.chinchilla {
        fig["chinchilla_law"] = json!(format!(
            "L(N, D) = {:.4} + {:.4e}/N^{:.4} + {:.4e}/D^{:.4}",
            ch.e.value, ch.a.value, ch.alpha.value, ch.b.value, ch.beta.value
        ));
        fig["chinchilla_prediction"] = json!(ch.prediction.value);
    }
    if let Some(why) = &s.fit.chinchilla_skipped {
        fig["chinchilla_law"] = json!(why);
    }
    if let (Some(a), Some(e)) = (s.actual_loss, s.relative_error) {
        fig["actual_loss"] = json!(a);
        fig["relative_error"] = json!(e);
    }
    report::record(&RunDir::new(run), Key::Stage("scaling"), &fig)
}

/// Ladder points, the fitted compute law, the Chinchilla curve at the target's size, the
/// prediction with its interval and (once run) the actual point; compute on a log axis.
pub fn plot(path: &Path, s: &ScalingReport) -> Result<()> {
    let err = |e: String| Error::File(chatforge_rundir::Error::Plot { path: path.to_path_buf(), msg: e });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let c_lo = s.ladder.iter().map(|p| p.compute).fold(f64::MAX, f64::min) / 1.5;
    let c_hi = s.target.compute * 1.5;
    let xs: Vec<f64> = (0..=120).map(|i| c_lo * (c_hi / c_lo).powf(i as f64 / 120.0)).collect();
    let cl = s.fit.compute_law.clone();
    let law = ComputeLaw { a: cl.a.value, b: cl.b.value, c: cl.c.value };
    let curve: Vec<(f64, f64)> = xs.iter().map(|&c| (c, law.predict(c))).collect();
    let chin_curve: Vec<(f64, f64)> = s
        .fit
        .chinchilla
        .as_ref()
        .map(|ch| {
            let l = ChinchillaLaw { e: ch.e.value, a: ch.a.value, alpha: ch.alpha.value, b: ch.b.value, beta: ch.beta.value };
            let n = s.target.compute_params;
            xs.iter().map(|&c| (c, l.predict(n, c / (6.0 * n)))).filter(|p| p.1.is_finite()).collect()
        })
        .unwrap_or_default();
    let mut ys: Vec<f64> = s.ladder.iter().map(|p| p.val_loss).collect();
    ys.extend(s.prediction_interval.iter().filter(|v| v.is_finite()));
    ys.extend(s.actual_loss);
    ys.push(law.predict(c_hi));
    let (y0, y1) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = ((y1 - y0) * 0.08).max(1e-2);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let clip = |v: &[(f64, f64)]| -> Vec<(f64, f64)> { v.iter().copied().filter(|p| p.1 >= y0 && p.1 <= y1).collect() };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("scaling: predicted {:.4}, extrapolation {:.1}x", s.predicted_loss, s.extrapolation_factor),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((c_lo..c_hi).log_scale(), y0..y1)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("training compute (FLOPs)")
            .y_desc("final val loss (nats / token)")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(clip(&curve), RED.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label("L(C) = a·C^b + c")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        if !chin_curve.is_empty() {
            chart
                .draw_series(LineSeries::new(clip(&chin_curve), MAGENTA.stroke_width(1)))
                .map_err(|e| err(e.to_string()))?
                .label(format!("Chinchilla L(N, C/6N) at the target's N = {:.2e}", s.target.compute_params))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA.stroke_width(1)));
        }
        chart
            .draw_series(s.ladder.iter().filter(|p| p.fitted).map(|p| Circle::new((p.compute, p.val_loss), 4, BLUE.filled())))
            .map_err(|e| err(e.to_string()))?
            .label("ladder runs")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
        if s.ladder.iter().any(|p| !p.fitted) {
            chart
                .draw_series(s.ladder.iter().filter(|p| !p.fitted).map(|p| Circle::new((p.compute, p.val_loss), 4, BLUE.stroke_width(1))))
                .map_err(|e| err(e.to_string()))?
                .label("ladder runs not below the unigram loss (not fitted)")
                .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.stroke_width(1)));
        }
        let tc = s.target.compute;
        let [lo, hi] = s.prediction_interval;
        if lo.is_finite() && hi.is_finite() {
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(tc, lo.max(y0)), (tc, hi.min(y1))], GREEN.stroke_width(3))))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .draw_series(std::iter::once(Circle::new((tc, s.predicted_loss), 6, GREEN.filled())))
            .map_err(|e| err(e.to_string()))?
            .label(format!("prediction ({}) with {:.0}% interval", s.prediction_law, 100.0 * INTERVAL_LEVEL))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, GREEN.filled()));
        if let Some(a) = s.actual_loss {
            chart
                .draw_series(std::iter::once(Cross::new((tc, a), 7, BLACK.stroke_width(2))))
                .map_err(|e| err(e.to_string()))?
                .label(format!("actual {a:.4}"))
                .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// The whole stage without the target: check the target, run the ladder, fit, predict, write
/// the prediction. Returns the report (and prints nothing unless the ladder bar shows).
pub fn ladder_and_predict(run: &Path, cfg: &ScaleConfig, tok: &Tokenizer, corpus: &Corpus, quiet: bool) -> Result<ScalingReport> {
    check_target(cfg, tok.vocab_size())?;
    let t0 = Instant::now();
    let ladder = run_ladder(run, cfg, tok, corpus, quiet)?;
    let (params, compute_params, tokens, compute) = cfg.size_of(cfg.target, tok.vocab_size());
    let target = LadderPoint {
        depth: cfg.target.depth,
        params,
        compute_params,
        tokens,
        compute,
        val_loss: f64::NAN,
        unigram_loss: f64::NAN,
        fitted: false,
        wall_s: 0.0,
    };
    let s = predict(&ladder, &target, cfg.bootstrap, cfg.base.seed)?;
    write(run, &s)?;
    report::record(&RunDir::new(run), Key::Stage("scaling"), &json!({"ladder_wall_s": t0.elapsed().as_secs_f64()}))?;
    Ok(s)
}
