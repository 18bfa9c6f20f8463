//! The learning-rate sweep: the recipe's one tuned number, the base peak learning rate, chosen
//! from the ladder's smallest run alone.
//!
//! In order:
//! 1. The rung: the ladder's cheapest (least compute), so the sweep costs a few small runs and no
//!    run near the target's size informs the choice (`check_target` holds every rung, this one
//!    included, to at most `MAX_RUNG_FRACTION` of the target's compute).
//! 2. Train it at each rate of the grid (`R/scale/d{depth}-t{tokens}-lr{lr}`; the run at the
//!    current base rate is the ladder's own rung, trained once).
//! 3. The lowest final val loss picks the base rate. The ladder and the target then train with
//!    it, scaled per depth by `lr_for_depth` (flat to width 128, then ∝ 1/width as μP scales
//!    Adam's step for hidden matrices).
//!
//! On the bundled corpus (context 256, batch 8) a grid of factors of 2 gave the same optimum,
//! 3e-3, at depth 1 (600k tokens: 6.367 / 6.290 / 6.466 / 6.822 at 1.5e-3 / 3e-3 / 6e-3 /
//! 1.2e-2) and at depth 2 (500k tokens: 6.245 / 6.154 / 6.386 / 6.457), both at most 2.2 % of
//! the speedrun's base run's compute: the flat part of the rule is measured, its 1/width part
//! beyond width 128 is the theory's.

use chatforge_data::tokenizer::Tokenizer;
use chatforge_rundir::RunDir;
use serde::{Deserialize, Serialize};

use super::ladder::train_rung;
use super::{point_of, LadderPoint, Rung, ScaleConfig};
use crate::pretrain::TokenShards;
use crate::{Error, Result};

/// What the sweep tried and chose (`lr_sweep` in `R/scaling.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LrSweep {
    pub rung: Rung,
    /// Peak learning rates tried (the base rate: depth 1 and 2 run at it), as written.
    pub lrs: Vec<f64>,
    /// Final val loss at each.
    pub val_losses: Vec<f64>,
    pub chosen: f64,
}

/// The grid around a base rate: half, itself, double.
pub fn grid_around(lr: f32) -> Vec<f32> {
    vec![lr / 2.0, lr, lr * 2.0]
}

/// Sweeps `lrs` at the ladder's cheapest rung and returns the sweep and `cfg` with the chosen
/// base rate. Finished sweep runs are read back.
pub fn sweep_lr(
    run: &RunDir,
    cfg: &ScaleConfig,
    lrs: &[f32],
    tok: &Tokenizer,
    corpus: &TokenShards,
    quiet: bool,
) -> Result<(LrSweep, ScaleConfig)> {
    let vocab = tok.vocab_size();
    let rung = *cfg
        .ladder
        .iter()
        .min_by(|a, b| cfg.size_of(**a, vocab).3.total_cmp(&cfg.size_of(**b, vocab).3))
        .ok_or_else(|| Error::Input("the ladder is empty".into()))?;
    if lrs.is_empty() || lrs.iter().any(|&l| !(l > 0.0 && l.is_finite())) {
        return Err(Error::Input(format!("--lr-sweep {lrs:?}: the rates must be positive numbers")));
    }
    let mut losses = Vec::with_capacity(lrs.len());
    for (i, &lr) in lrs.iter().enumerate() {
        if !quiet {
            println!("lr sweep {}/{}: depth {}, {} tokens, base lr {lr}", i + 1, lrs.len(), rung.depth, rung.tokens);
        }
        let c = ScaleConfig {
            base: crate::pretrain::PretrainConfig { optim: crate::optim::OptimConfig { lr, ..cfg.base.optim.clone() }, ..cfg.base.clone() },
            ..cfg.clone()
        };
        let o = train_rung(&super::rung_dir(run, rung, lr), c.run_config(rung.depth), rung.tokens, tok, corpus, true)?;
        let p: LadderPoint = point_of(&c, rung, vocab, &o);
        losses.push(p.val_loss);
    }
    let best = (0..lrs.len())
        .filter(|&i| losses[i].is_finite())
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .ok_or_else(|| Error::Input(format!("every run of the learning-rate sweep diverged (rates {lrs:?}); try smaller rates")))?;
    let mut out = cfg.clone();
    out.base.optim.lr = lrs[best];
    let decimal = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
    Ok((LrSweep { rung, lrs: lrs.iter().map(|&l| decimal(l)).collect(), val_losses: losses, chosen: decimal(lrs[best]) }, out))
}
