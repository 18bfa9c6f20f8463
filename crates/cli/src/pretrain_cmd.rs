//! `chatforge pretrain`: train (or resume) a base model on a text file or a cleaned corpus
//! (`chatforge_stages::pretrain`).

use std::path::PathBuf;

use anyhow::bail;
use chatforge_core::config::ShapeOverrides;
use chatforge_stages::{pretrain, Run};
use chatforge_train::optim::Schedule;
use chatforge_train::pretrain::{lr_for_depth, Budget, PretrainConfig, BASE_LR};
use clap::Args;

use crate::args::{parse_duration, CorpusArgs, PrecisionArg};

fn d() -> PretrainConfig {
    PretrainConfig::default()
}

#[derive(Args, Clone)]
pub struct PretrainArgs {
    /// Run folder (checkpoints, tokenizer, shards, metrics, report). Resumes if it holds a checkpoint.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// The size dial: layers = D, hidden = 64·D, heads of 64, MLP ≈ 8/3·hidden.
    #[arg(long, default_value_t = d().depth)]
    pub depth: usize,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Tie the LM head to the token embedding.
    #[arg(long)]
    pub tied: bool,
    #[arg(long, default_value_t = d().context)]
    pub context: usize,
    #[arg(long, default_value_t = d().batch)]
    pub batch: usize,
    #[arg(long, default_value_t = d().grad_accum)]
    pub grad_accum: usize,
    /// Optimizer steps (or give --tokens or --time-budget) [default: 1000].
    #[arg(long, conflicts_with_all = ["tokens", "time_budget"])]
    pub steps: Option<usize>,
    /// Training tokens.
    #[arg(long, conflicts_with = "time_budget")]
    pub tokens: Option<usize>,
    /// Wall-clock budget in seconds (`300`, `5m`): the step count is fixed from a measured step.
    #[arg(long)]
    pub time_budget: Option<String>,
    /// Peak learning rate (default: 3e-3 up to depth 2, then ∝ 1/width: 1.5e-3 at depth 4).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = d().optim.warmup_steps)]
    pub warmup: usize,
    #[arg(long, default_value_t = d().optim.weight_decay)]
    pub weight_decay: f32,
    /// cosine | linear | constant
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    #[arg(long, default_value_t = d().seed)]
    pub seed: u64,
    #[arg(long, default_value_t = d().eval_every)]
    pub eval_every: usize,
    #[arg(long, default_value_t = d().eval_tokens)]
    pub eval_tokens: usize,
    #[arg(long, default_value_t = d().checkpoint_every)]
    pub checkpoint_every: usize,
    #[arg(long, default_value_t = d().sample_tokens)]
    pub sample_tokens: usize,
    /// Resume from this checkpoint folder (e.g. RUN/base.prev) instead of RUN/base.
    #[arg(long)]
    pub resume_from: Option<PathBuf>,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

impl PretrainArgs {
    pub fn config(&self) -> anyhow::Result<pretrain::Config> {
        let schedule = match self.schedule.as_str() {
            "cosine" => Schedule::Cosine,
            "linear" => Schedule::Linear,
            "constant" => Schedule::Constant,
            other => bail!("--schedule {other:?}: expected cosine, linear or constant"),
        };
        if self.depth == 0 || self.context < 2 || self.batch == 0 || self.grad_accum == 0 {
            bail!("--depth, --batch and --grad-accum must be at least 1 and --context at least 2");
        }
        let mut train = PretrainConfig {
            depth: self.depth,
            shape: ShapeOverrides {
                layers: self.layers,
                hidden: self.hidden,
                heads: self.heads,
                kv_heads: self.kv_heads,
                intermediate: None,
                tied: self.tied,
            },
            context: self.context,
            batch: self.batch,
            grad_accum: self.grad_accum,
            eval_every: self.eval_every,
            eval_tokens: self.eval_tokens,
            sample_tokens: self.sample_tokens,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
            precision: self.precision.value,
            ..Default::default()
        };
        train.optim.lr = self.lr.unwrap_or_else(|| lr_for_depth(BASE_LR, self.depth));
        train.optim.warmup_steps = self.warmup;
        train.optim.weight_decay = self.weight_decay;
        train.optim.schedule = schedule;
        let budget = match (self.steps, self.tokens, &self.time_budget) {
            (Some(s), _, _) => Some(Budget::Steps(s)),
            (_, Some(t), _) => Some(Budget::Tokens(t)),
            (_, _, Some(d)) => Some(Budget::Seconds(parse_duration(d)?)),
            _ => None,
        };
        Ok(pretrain::Config { train, budget, resume_from: self.resume_from.clone(), corpus: self.corpus.config() })
    }
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    let out = pretrain::run(&run, &a.config()?)?;
    println!("{}", pretrain::summary(&run, &out));
    Ok(())
}
