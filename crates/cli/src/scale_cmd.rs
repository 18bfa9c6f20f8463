//! `chatforge scale`: a ladder of small runs -> fitted scaling laws -> the target's predicted
//! final loss, written before the target trains; `--run-target` then trains it and compares
//! (`chatforge_stages::scale`).

use std::path::PathBuf;
use std::time::Instant;

use chatforge_stages::{scale, Run};
use chatforge_train::scaling::{self, Rung};
use clap::Args;

use crate::args::CorpusArgs;

fn d() -> scale::Config {
    scale::Config::default()
}

#[derive(Args, Clone)]
pub struct ScaleArgs {
    /// Run folder: tokenizer and shards are prepared here once; ladder runs go to RUN/scale/.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Depth of the run to predict.
    #[arg(long, default_value_t = d().target.depth)]
    pub target_depth: usize,
    /// Training tokens of the run to predict.
    #[arg(long, default_value_t = d().target.tokens)]
    pub target_tokens: usize,
    /// The ladder as depth:tokens pairs. The default's largest rungs are past the unigram
    /// plateau by a nat or more (runs of fewer tokens sit on it and bend the fit).
    #[arg(long, default_value = scale::DEFAULT_LADDER, conflicts_with_all = ["depths", "tokens"])]
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
    #[arg(long, default_value_t = d().base.context)]
    pub context: usize,
    #[arg(long, default_value_t = d().base.batch)]
    pub batch: usize,
    /// Peak learning rate up to depth 2 (the sweep's centre); deeper runs get it ∝ 1/width (the
    /// target included).
    #[arg(long, default_value_t = d().base.optim.lr)]
    pub lr: f32,
    /// Base learning rates to sweep at the ladder's cheapest rung before the ladder; the best one
    /// is the recipe's (default: half, equal and double --lr).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_lr_sweep")]
    pub lr_sweep: Option<Vec<f32>>,
    /// Train with --lr as it is, without the sweep.
    #[arg(long)]
    pub no_lr_sweep: bool,
    #[arg(long, default_value_t = d().base.seed)]
    pub seed: u64,
    /// Val tokens scored at the end of every run (the same ones for all; capped by the val split).
    /// The default is pretraining's, so a speedrun's ladder is reused by `scale --run R`.
    #[arg(long, default_value_t = d().base.eval_tokens)]
    pub eval_tokens: usize,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = d().bootstrap)]
    pub bootstrap: usize,
    #[arg(long)]
    pub quiet: bool,
}

impl ScaleArgs {
    pub fn config(&self) -> anyhow::Result<scale::Config> {
        let ladder = match (&self.depths, &self.tokens) {
            (Some(d), Some(t)) => scaling::grid(d, t)?,
            _ => scaling::parse_ladder(&self.ladder)?,
        };
        let mut c = scale::Config {
            ladder,
            target: Rung { depth: self.target_depth, tokens: self.target_tokens },
            bootstrap: self.bootstrap,
            run_target: self.run_target,
            corpus: self.corpus.config(),
            ..Default::default()
        };
        c.base.context = self.context;
        c.base.batch = self.batch;
        c.base.optim.lr = self.lr;
        c.lr_sweep = match (&self.lr_sweep, self.no_lr_sweep) {
            (_, true) => vec![],
            (Some(l), _) => l.clone(),
            (None, _) => scaling::grid_around(self.lr),
        };
        c.base.seed = self.seed;
        c.base.eval_tokens = self.eval_tokens;
        Ok(c)
    }
}

pub fn run(a: ScaleArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let run = Run::open(&a.run).quiet(a.quiet);
    let s = scale::run(&run, &a.config()?)?;
    if a.quiet {
        println!("{}", scale::summary(&s));
    }
    if let Some(actual) = scale::actual_summary(&s) {
        println!("target: {actual}");
    }
    println!(
        "scaling: {} and {}; wall time {:.1}s",
        run.dir.scaling_json().display(),
        run.dir.plot("scaling.svg").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
