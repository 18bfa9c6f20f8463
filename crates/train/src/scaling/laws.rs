//! The two laws as values: the compute law `L(C)` and the Chinchilla law `L(N, D)` with its
//! compute-optimal split. Plain arithmetic; fitting them is `fit`'s job.

use serde::{Deserialize, Serialize};

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
