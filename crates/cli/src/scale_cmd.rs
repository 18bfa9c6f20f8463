//! `chatforge scale`: a ladder of small runs -> fitted scaling laws -> the target's predicted
//! final loss, written before the target trains; `--run-target` then trains it and compares.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use chatforge_train::pretrain::PretrainConfig;
use chatforge_train::scaling::{self, Estimate, Rung, ScaleConfig, ScalingReport};
use clap::Args;

use crate::pretrain_cmd::CorpusArgs;

/// The speedrun's ladder (depths 1–3 at 3–8 % of the default target's compute, 16.6x below
/// it): about 100 s on 2 cores. The default target is the speedrun's base run (depth 4, 2,200
/// steps of 2,048 tokens), about 7 minutes more with --run-target.
pub const DEFAULT_LADDER: &str = "1:600000,1:1200000,1:2400000,2:500000,2:1200000,3:400000";

#[derive(Args, Clone)]
pub struct ScaleArgs {
    /// Run folder: tokenizer and shards are prepared here once; ladder runs go to RUN/scale/.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Depth of the run to predict.
    #[arg(long, default_value_t = 4)]
    pub target_depth: usize,
    /// Training tokens of the run to predict.
    #[arg(long, default_value_t = 4_505_600)]
    pub target_tokens: usize,
    /// The ladder as depth:tokens pairs. The default's largest rungs are past the unigram
    /// plateau by a nat or more (runs of fewer tokens sit on it and bend the fit).
    #[arg(long, default_value = DEFAULT_LADDER, conflicts_with_all = ["depths", "tokens"])]
    pub ladder: String,
    /// Ladder depths, crossed with --tokens (instead of --ladder).
    #[arg(long, value_delimiter = ',', requires = "tokens")]
    pub depths: Option<Vec<usize>>,
    /// Ladder token budgets, crossed with --depths.
    #[arg(long, value_delimiter = ',', requires = "depths")]
    pub tokens: Option<Vec<usize>>,
    /// After writing the prediction, train the target and report actual vs predicted.
    #[arg(long)]
    pub run_target: bool,
    #[arg(long, default_value_t = 256)]
    pub context: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Peak learning rate up to depth 2; deeper runs get it ∝ 1/width (the target included).
    #[arg(long, default_value_t = chatforge_train::pretrain::BASE_LR)]
    pub lr: f32,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Val tokens scored at the end of every run (the same ones for all; capped by the val split).
    /// The default is pretraining's, so a speedrun's ladder is reused by `scale --run R`.
    #[arg(long, default_value_t = 32_768)]
    pub eval_tokens: usize,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    #[arg(long)]
    pub quiet: bool,
}

fn fmt_est(e: &Estimate) -> String {
    format!("{:.4} [{:.4}, {:.4}]", e.value, e.interval[0], e.interval[1])
}

fn fmt_est_e(e: &Estimate) -> String {
    format!("{:.3e} [{:.3e}, {:.3e}]", e.value, e.interval[0], e.interval[1])
}

pub fn print_prediction(s: &ScalingReport) {
    println!("ladder ({} runs):", s.ladder.len());
    println!(
        "  depth     params  compute-params     tokens       compute   val loss   wall s  (unigram loss {:.4})",
        s.ladder.first().map_or(f64::NAN, |p| p.unigram_loss)
    );
    for p in &s.ladder {
        println!(
            "  {:>5} {:>10} {:>15.0} {:>10} {:>13.3e} {:>10.4} {:>8.1}{}",
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
    let cl = &s.fit.compute_law;
    println!(
        "fit, {:.0}% bootstrap intervals over {} resamples (Huber on log loss, Nelder-Mead from a grid of starts):",
        100.0 * s.fit.interval_level,
        s.fit.bootstrap_resamples
    );
    println!("  L(C) = a·C^b + c: a {}, b {}, c {}", fmt_est_e(&cl.a), fmt_est(&cl.b), fmt_est(&cl.c));
    match (&s.fit.chinchilla, &s.fit.chinchilla_skipped) {
        (Some(ch), _) => {
            println!(
                "  L(N, D) = E + A/N^α + B/D^β: E {}, A {}, α {}, B {}, β {}",
                fmt_est(&ch.e),
                fmt_est_e(&ch.a),
                fmt_est(&ch.alpha),
                fmt_est_e(&ch.b),
                fmt_est(&ch.beta)
            );
            println!(
                "  compute-optimal at the target's compute: {:.1} tokens per parameter [{:.1}, {:.1}] (N {:.3e} compute params, D {:.3e} tokens)",
                ch.tokens_per_param.value, ch.tokens_per_param.interval[0], ch.tokens_per_param.interval[1], ch.optimal_params, ch.optimal_tokens
            );
        }
        (None, Some(why)) => println!("  {why}"),
        _ => {}
    }
    let t = &s.target;
    println!(
        "target: depth {}, {:.2}M params ({:.2}M compute params), {} tokens, {:.3e} FLOPs; extrapolation factor {:.1}x the largest ladder run",
        t.depth,
        t.params as f64 / 1e6,
        t.compute_params / 1e6,
        t.tokens,
        t.compute,
        s.extrapolation_factor
    );
    println!("  compute law predicts {}", fmt_est(&cl.prediction));
    if let Some(ch) = &s.fit.chinchilla {
        println!("  Chinchilla law predicts {}", fmt_est(&ch.prediction));
    }
    println!(
        "predicted final val loss: {:.4} nats/token, {:.0}% interval [{:.4}, {:.4}] ({})",
        s.predicted_loss,
        100.0 * s.fit.interval_level,
        s.prediction_interval[0],
        s.prediction_interval[1],
        s.prediction_law
    );
}

pub fn run(a: ScaleArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    if a.context < 2 || a.batch == 0 || a.target_depth == 0 || a.target_tokens == 0 {
        bail!("--context must be at least 2, and --batch, --target-depth and --target-tokens at least 1");
    }
    let ladder = match (&a.depths, &a.tokens) {
        (Some(d), Some(t)) => scaling::grid(d, t)?,
        _ => scaling::parse_ladder(&a.ladder)?,
    };
    let mut base = PretrainConfig {
        context: a.context,
        batch: a.batch,
        grad_accum: 1,
        eval_tokens: a.eval_tokens,
        seed: a.seed,
        ..Default::default()
    };
    base.optim.lr = a.lr;
    let cfg = ScaleConfig { base, ladder, target: Rung { depth: a.target_depth, tokens: a.target_tokens }, bootstrap: a.bootstrap };

    std::fs::create_dir_all(&a.run).with_context(|| format!("creating {}", a.run.display()))?;
    let (tok, corpus) = a.corpus.prepare(&a.run, a.quiet)?;
    let factor = scaling::check_target(&cfg, tok.vocab_size())?;
    if !a.quiet {
        println!(
            "scale: {} ladder runs (context {}, batch {}, lr {}), target depth {} x {} tokens = {:.1}x the largest ladder run's compute",
            cfg.ladder.len(),
            a.context,
            a.batch,
            a.lr,
            a.target_depth,
            a.target_tokens,
            factor
        );
    }
    let mut s = scaling::ladder_and_predict(&a.run, &cfg, &tok, &corpus, a.quiet)?;
    let ladder_s = t0.elapsed().as_secs_f64();
    print_prediction(&s);
    println!("prediction written to {} before training the target ({:.1}s so far)", a.run.join("scaling.json").display(), ladder_s);
    if a.run_target {
        let t1 = Instant::now();
        let target = scaling::run_target(&a.run, &cfg, &tok, &corpus, a.quiet)?;
        s.set_actual(&target);
        scaling::write(&a.run, &s)?;
        let err = s.relative_error.unwrap_or(f64::NAN);
        println!(
            "target: actual final val loss {:.4} vs predicted {:.4} [{:.4}, {:.4}]: relative error {:+.2}% ({} the interval); target trained in {:.1}s",
            target.val_loss,
            s.predicted_loss,
            s.prediction_interval[0],
            s.prediction_interval[1],
            100.0 * err,
            if s.within_interval == Some(true) { "inside" } else { "outside" },
            t1.elapsed().as_secs_f64()
        );
        println!(
            "  compute law alone: {:.4} ({:+.2}%)",
            s.fit.compute_law.prediction.value,
            100.0 * (s.fit.compute_law.prediction.value / target.val_loss - 1.0)
        );
        if let Some(ch) = &s.fit.chinchilla {
            println!("  Chinchilla law alone: {:.4} ({:+.2}%)", ch.prediction.value, 100.0 * (ch.prediction.value / target.val_loss - 1.0));
        }
    }
    println!(
        "scaling: {} and {}; wall time {:.1}s",
        a.run.join("scaling.json").display(),
        a.run.join("plots/scaling.svg").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
