//! Predictable scaling: a learning-rate sweep at the ladder's cheapest rung (the base rate),
//! a ladder of small pretraining runs (one recipe for every size: the peak learning rate is the
//! base rate up to depth 2, then ∝ 1/width), fits of `L(C) = a·C^b + c` and
//! Chinchilla's `L(N, D)` (Huber on log loss, bootstrap intervals), and the target's final loss
//! predicted and written (`R/scaling.json`) before the target trains; then, optionally, the
//! target trained and predicted vs actual (`chatforge_train::scaling` does the numerics).

use chatforge_train::pretrain::{PretrainConfig, BASE_LR};
use chatforge_train::scaling::grid_around;
use chatforge_train::scaling::{self, parse_ladder, Estimate, Rung, ScaleConfig, ScalingReport};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// The speedrun's ladder (depths 1–3 at 3–8 % of the default target's compute, 16.6× below
/// it): about 100 s on 2 cores. The default target is the speedrun's base run (depth 4, 2,200
/// steps of 2,048 tokens), about 7 minutes more with `run_target`.
pub const DEFAULT_LADDER: &str = "1:600000,1:1200000,1:2400000,2:500000,2:1200000,3:400000";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The ladder's runs. The default's largest rungs are past the unigram plateau by a nat or
    /// more (runs of fewer tokens sit on it and bend the fit).
    pub ladder: Vec<Rung>,
    /// The run to predict.
    pub target: Rung,
    /// The ladder's shared settings: context 256, batch 8, no accumulation, the base learning
    /// rate (3e-3, scaled per depth), seed 1337, 32,768 val tokens (pretraining's, so a
    /// speedrun's ladder is reused).
    pub base: PretrainConfig,
    /// Base learning rates swept at the ladder's cheapest rung before the ladder; the best one
    /// is the recipe's (half, equal and double the base rate; empty: no sweep).
    pub lr_sweep: Vec<f32>,
    /// Bootstrap resamples for the intervals.
    pub bootstrap: usize,
    /// After writing the prediction, train the target and report actual vs predicted.
    pub run_target: bool,
    pub corpus: crate::tokenizer::Config,
}

impl Default for Config {
    fn default() -> Self {
        let mut base = PretrainConfig { grad_accum: 1, ..Default::default() };
        base.optim.lr = BASE_LR;
        Config {
            ladder: parse_ladder(DEFAULT_LADDER).expect("the default ladder parses"),
            target: Rung { depth: 4, tokens: 4_505_600 },
            base,
            lr_sweep: grid_around(BASE_LR),
            bootstrap: 200,
            run_target: false,
            corpus: Default::default(),
        }
    }
}

impl Config {
    fn scale_config(&self) -> ScaleConfig {
        ScaleConfig {
            base: self.base.clone(),
            ladder: self.ladder.clone(),
            target: self.target,
            bootstrap: self.bootstrap,
            lr_sweep: self.lr_sweep.clone(),
        }
    }
}

/// Runs the ladder, fits, writes the prediction (`R/scaling.json`, `stages.scaling`) and, with
/// `run_target`, trains the target and records the error. Prints the prediction unless quiet.
pub fn run(run: &Run, cfg: &Config) -> Result<ScalingReport> {
    let b = &cfg.base;
    if b.context < 2 || b.batch == 0 || cfg.target.depth == 0 || cfg.target.tokens == 0 {
        return Err(Error::Input("--context must be at least 2, and --batch, --target-depth and --target-tokens at least 1".into()));
    }
    let scfg = cfg.scale_config();
    let (tok, corpus) = crate::tokenizer::run(run, &cfg.corpus)?;
    let factor = scaling::check_target(&scfg, tok.vocab_size())?;
    if !run.quiet {
        println!(
            "scale: {} ladder runs (context {}, batch {}, lr {}), target depth {} x {} tokens = {:.1}x the largest ladder run's compute",
            scfg.ladder.len(),
            b.context,
            b.batch,
            b.optim.lr,
            cfg.target.depth,
            cfg.target.tokens,
            factor
        );
    }
    let mut s = scaling::ladder_and_predict(&run.dir, &scfg, &tok, &corpus, run.quiet)?;
    let mut scfg = scfg;
    scfg.base.optim.lr = s.base_lr.unwrap_or(scfg.base.optim.lr);
    if !run.quiet {
        println!("{}", summary(&s));
        println!("prediction written to {} before training the target", run.dir.scaling_json().display());
    }
    if cfg.run_target {
        let target = scaling::run_target(&run.dir, &scfg, &tok, &corpus, run.quiet)?;
        s.set_actual(&target);
        scaling::write(&run.dir, &s)?;
    }
    Ok(s)
}

/// The speedrun's plan: runs `cfg`'s ladder and fits the laws for a base run of `cap` tokens
/// (pretraining's own settings); its token budget is `cap` unless the Chinchilla law says the
/// base depth is compute-optimal at fewer tokens (beyond them a bigger model would spend the
/// compute better), and then the prediction is made for that budget. Prints what it decided.
pub fn plan(run: &Run, base: &PretrainConfig, ladder: Vec<Rung>, cap: usize) -> Result<(ScaleConfig, ScalingReport)> {
    // The ladder trains with the base recipe; its learning rate scales down from BASE_LR with width.
    let mut b = base.clone();
    b.optim.lr = BASE_LR;
    let mut scfg =
        ScaleConfig { base: b, ladder, target: Rung { depth: base.depth, tokens: cap }, bootstrap: 200, lr_sweep: grid_around(BASE_LR) };
    let (tok, corpus) = crate::tokenizer::run(run, &Default::default())?;
    let s = scaling::ladder_and_predict(&run.dir, &scfg, &tok, &corpus, run.quiet)?;
    // The sweep's rate is the recipe from here on (the target's included).
    scfg.base.optim.lr = s.base_lr.unwrap_or(BASE_LR);
    scfg.lr_sweep.clear();
    let optimal = s.fit.chinchilla.as_ref().map(|c| c.law().optimal_tokens(s.target.compute_params));
    match (&s.fit.chinchilla, optimal) {
        (Some(c), Some(d)) => {
            let [lo, hi] = c.tokens_per_param.interval;
            println!(
                "scaling: the fitted law makes depth {} compute-optimal at {d:.3e} tokens ({:.3e} per parameter at this compute, 90% interval {lo:.2e} to {hi:.2e}{}); this machine's cap is {cap} tokens",
                base.depth,
                c.tokens_per_param.value,
                if hi > 10.0 * lo { ": the ladder does not pin the optimum down" } else { "" }
            );
        }
        _ => println!("scaling: no Chinchilla fit, so no compute-optimal budget; this machine's cap is {cap} tokens"),
    }
    // No shorter than every rung's compute allows (MAX_RUNG_FRACTION of the target's).
    let largest = s.ladder.iter().map(|p| p.compute).fold(0.0, f64::max);
    let floor = largest / scaling::MAX_RUNG_FRACTION / (s.target.compute / s.target.tokens as f64);
    let s = match optimal {
        Some(d) if d.is_finite() && d < cap as f64 && floor < cap as f64 => {
            scfg.target.tokens = (d.max(floor).ceil() as usize).max(base.tokens_per_step());
            println!("  training {} tokens: past them a bigger model would use the compute better", scfg.target.tokens);
            let mut again = scaling::ladder_and_predict(&run.dir, &scfg, &tok, &corpus, true)?;
            again.lr_sweep = s.lr_sweep.clone();
            scaling::write(&run.dir, &again)?;
            again
        }
        _ => s,
    };
    Ok((scfg, s))
}

fn fmt_est(e: &Estimate) -> String {
    format!("{:.4} [{:.4}, {:.4}]", e.value, e.interval[0], e.interval[1])
}

fn fmt_est_e(e: &Estimate) -> String {
    format!("{:.3e} [{:.3e}, {:.3e}]", e.value, e.interval[0], e.interval[1])
}

/// The ladder, both fits and the prediction, as printed.
pub fn summary(s: &ScalingReport) -> String {
    let mut o = format!(
        "ladder ({} runs):\n  depth     params  compute-params     tokens       compute   val loss   wall s  (unigram loss {:.4})",
        s.ladder.len(),
        s.ladder.first().map_or(f64::NAN, |p| p.unigram_loss)
    );
    for p in &s.ladder {
        o += &format!(
            "\n  {:>5} {:>10} {:>15.0} {:>10} {:>13.3e} {:>10.4} {:>8.1}{}",
            p.depth,
            p.params,
            p.compute_params,
            p.tokens,
            p.compute,
            p.val_loss,
            p.wall_s,
            if p.fitted { "" } else { "  not fitted: not below the unigram loss yet" }
        );
    }
    if let Some(w) = &s.lr_sweep {
        let tried: Vec<String> = w.lrs.iter().zip(&w.val_losses).map(|(l, v)| format!("{l}: {v:.4}")).collect();
        o += &format!(
            "\nlearning-rate sweep at depth {}, {} tokens (val loss by base lr): {}; chosen {}",
            w.rung.depth,
            w.rung.tokens,
            tried.join(", "),
            w.chosen
        );
    }
    let cl = &s.fit.compute_law;
    o += &format!(
        "\nfit, {:.0}% bootstrap intervals over {} resamples (Huber on log loss, Nelder-Mead from a grid of starts):\n  L(C) = a·C^b + c: a {}, b {}, c {}",
        100.0 * s.fit.interval_level,
        s.fit.bootstrap_resamples,
        fmt_est_e(&cl.a),
        fmt_est(&cl.b),
        fmt_est(&cl.c)
    );
    match (&s.fit.chinchilla, &s.fit.chinchilla_skipped) {
        (Some(ch), _) => {
            o += &format!(
                "\n  L(N, D) = E + A/N^α + B/D^β: E {}, A {}, α {}, B {}, β {}",
                fmt_est(&ch.e),
                fmt_est_e(&ch.a),
                fmt_est(&ch.alpha),
                fmt_est_e(&ch.b),
                fmt_est(&ch.beta)
            );
            o += &format!(
                "\n  compute-optimal at the target's compute: {:.1} tokens per parameter [{:.1}, {:.1}] (N {:.3e} compute params, D {:.3e} tokens)",
                ch.tokens_per_param.value, ch.tokens_per_param.interval[0], ch.tokens_per_param.interval[1], ch.optimal_params, ch.optimal_tokens
            );
        }
        (None, Some(why)) => o += &format!("\n  {why}"),
        _ => {}
    }
    let t = &s.target;
    o += &format!(
        "\ntarget: depth {}, {:.2}M params ({:.2}M compute params), {} tokens, {:.3e} FLOPs; extrapolation factor {:.1}x the largest ladder run",
        t.depth,
        t.params as f64 / 1e6,
        t.compute_params / 1e6,
        t.tokens,
        t.compute,
        s.extrapolation_factor
    );
    o += &format!("\n  compute law predicts {}", fmt_est(&cl.prediction));
    if let Some(ch) = &s.fit.chinchilla {
        o += &format!("\n  Chinchilla law predicts {}", fmt_est(&ch.prediction));
    }
    o += &format!(
        "\npredicted final val loss: {:.4} nats/token, {:.0}% interval [{:.4}, {:.4}] ({})",
        s.predicted_loss,
        100.0 * s.fit.interval_level,
        s.prediction_interval[0],
        s.prediction_interval[1],
        s.prediction_law
    );
    if let Some(c) = &s.capability {
        o += &format!(
            "\npredicted {}: {:.4}, {:.0}% interval [{:.4}, {:.4}] ({}, fitted to {} ladder runs, at the predicted loss)",
            c.metric,
            c.prediction.value,
            100.0 * s.fit.interval_level,
            c.prediction.interval[0],
            c.prediction.interval[1],
            c.form,
            c.points
        );
    }
    o
}

/// The capability's actual against its prediction, once the target trained.
pub fn capability_summary(s: &ScalingReport) -> Option<String> {
    let c = s.capability.as_ref()?;
    let (actual, err) = (c.actual?, c.relative_error?);
    Some(format!(
        "capability: predicted {} {:.4} [{:.4}, {:.4}] before training, actual {actual:.4}: relative error {:+.2}% ({} the interval)",
        c.metric,
        c.prediction.value,
        c.prediction.interval[0],
        c.prediction.interval[1],
        100.0 * err,
        if c.within_interval == Some(true) { "inside" } else { "outside" }
    ))
}

/// The target's actual loss against the prediction, once it trained.
pub fn actual_summary(s: &ScalingReport) -> Option<String> {
    let cl = &s.fit.compute_law;
    let (Some(actual), Some(err)) = (s.actual_loss, s.relative_error) else { return None };
    let mut o = String::new();
    {
        o += &format!(
            "actual final val loss {actual:.4}: relative error {:+.2}% ({} the interval)",
            100.0 * err,
            if s.within_interval == Some(true) { "inside" } else { "outside" }
        );
        o += &format!("\n  compute law alone: {:.4} ({:+.2}%)", cl.prediction.value, 100.0 * (cl.prediction.value / actual - 1.0));
        if let Some(ch) = &s.fit.chinchilla {
            o += &format!("\n  Chinchilla law alone: {:.4} ({:+.2}%)", ch.prediction.value, 100.0 * (ch.prediction.value / actual - 1.0));
        }
        if let Some(c) = capability_summary(s) {
            o += &format!("\n{c}");
        }
    }
    Some(o)
}
