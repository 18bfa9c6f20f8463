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
//!
//! # Layout
//! This file holds the two constants every fit shares and [`ladder_and_predict`], the stage
//! without the target. The pieces, in the order the stage uses them: `laws` (the two laws and
//! what they predict), `fit` (the robust fit, its input checks and starts, and the bootstrap),
//! `ladder` (the runs and their points), `capability` (the next-token accuracy predicted from
//! the predicted loss), `sweep` (the base learning rate chosen at the cheapest rung), `prediction` (the fits turned into [`ScalingReport`] and
//! written) and `plot` (`plots/scaling.svg`).

mod capability;
mod fit;
mod ladder;
mod laws;
mod plot;
mod prediction;
mod sweep;

use chatforge_rundir::report::{self, Key};
use chatforge_rundir::RunDir;
use std::time::Instant;

use chatforge_data::tokenizer::Tokenizer;
use serde_json::json;

use crate::pretrain::TokenShards;
use crate::Result;

pub use capability::CapabilityFit;
pub use fit::{bootstrap_chinchilla, bootstrap_compute_law, fit_chinchilla, fit_compute_law, percentile_interval, Bootstrapped, Estimate};
pub use ladder::{
    check_predicted, check_target, grid, parse_ladder, point_of, run_ladder, run_target, rung_dir, target_dir, LadderPoint, Rung,
    ScaleConfig, MAX_RUNG_FRACTION,
};
pub use laws::{ChinchillaLaw, ComputeLaw};
pub use plot::plot;
pub use prediction::{predict, write, ChinchillaFit, ComputeLawFit, Fits, ScalingReport};
pub use sweep::{grid_around, sweep_lr, LrSweep};

/// Huber threshold on the residual of log loss (Chinchilla's δ).
pub const HUBER_DELTA: f64 = 1e-3;
/// Central mass of every reported interval (5th to 95th percentile).
pub const INTERVAL_LEVEL: f64 = 0.9;

/// The whole stage without the target: check the target, run the ladder, fit, predict, write
/// the prediction. Returns the report (and prints nothing unless the ladder bar shows).
pub fn ladder_and_predict(run: &RunDir, cfg: &ScaleConfig, tok: &Tokenizer, corpus: &TokenShards, quiet: bool) -> Result<ScalingReport> {
    check_target(cfg, tok.vocab_size())?;
    let t0 = Instant::now();
    let (lr_sweep, cfg) = match cfg.lr_sweep.is_empty() {
        true => (None, cfg.clone()),
        false => {
            let (s, c) = sweep_lr(run, cfg, &cfg.lr_sweep, tok, corpus, quiet)?;
            (Some(s), c)
        }
    };
    let cfg = &cfg;
    let ladder = run_ladder(run, cfg, tok, corpus, quiet)?;
    let (params, compute_params, tokens, compute) = cfg.size_of(cfg.target, tok.vocab_size());
    let target = LadderPoint {
        depth: cfg.target.depth,
        params,
        compute_params,
        tokens,
        compute,
        val_loss: f64::NAN,
        val_accuracy: f64::NAN,
        unigram_loss: f64::NAN,
        fitted: false,
        wall_s: 0.0,
    };
    let mut s = predict(&ladder, &target, cfg.bootstrap, cfg.base.seed)?;
    s.base_lr = Some(cfg.base.optim.lr);
    s.lr_sweep = lr_sweep;
    write(run, &s)?;
    report::record(run, Key::Stage("scaling"), &json!({"ladder_wall_s": t0.elapsed().as_secs_f64()}))?;
    Ok(s)
}
