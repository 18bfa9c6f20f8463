//! `chatforge sft`: fine-tune the base model to chat on the task suite (and the user's JSONL),
//! then score every family on the held-out test split before and after (`chatforge_stages::sft`).

use std::path::PathBuf;

use chatforge_stages::{sft, Run};
use clap::Args;

use crate::args::{parse_duration, LoraArgs, PrecisionArg};

fn d() -> sft::Config {
    sft::Config::default()
}

#[derive(Args)]
pub struct SftArgs {
    /// The run folder holding base/ and tokenizer.json.
    #[arg(long)]
    pub run: PathBuf,
    /// Extra conversations (JSONL `{"messages": [...]}`) to train on besides the task suite.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Count and skip malformed lines of --data instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, default_value_t = d().train.steps, conflicts_with = "time_budget")]
    pub steps: usize,
    /// Wall-clock budget (`120`, `2m`).
    #[arg(long)]
    pub time_budget: Option<String>,
    /// Peak learning rate [default: 3e-3; with --lora 1e-2].
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = d().train.batch)]
    pub batch: usize,
    #[arg(long, default_value_t = d().train.seed)]
    pub seed: u64,
    /// Steps between checkpoints (a killed run resumes from the last one, exactly).
    #[arg(long, default_value_t = d().train.checkpoint_every)]
    pub checkpoint_every: usize,
    /// Make the run's task suite small (tests, --quick speedruns) if it does not exist yet.
    #[arg(long)]
    pub small_suite: bool,
    /// Every N steps (and at the end), also run evals of the registry on the model being trained
    /// (and the val loss); figures go to metrics.jsonl and plots/sft_evals.svg.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// The evals run with --eval-every (repeatable).
    #[arg(long = "eval", default_values_t = d().evals)]
    pub evals: Vec<String>,
    /// Samples per eval with --eval-every.
    #[arg(long, default_value_t = d().eval_limit)]
    pub eval_limit: usize,
    /// Let packed conversations attend to the ones before them in their row, as SFT did before
    /// the recipe masked them (for the A/B in the README; a resumed run keeps its own setting).
    #[arg(long)]
    pub no_doc_mask: bool,
    #[command(flatten)]
    pub precision: PrecisionArg,
    #[command(flatten)]
    pub lora: LoraArgs,
}

impl SftArgs {
    pub fn config(&self) -> anyhow::Result<sft::Config> {
        let mut c = sft::Config {
            time_budget_s: self.time_budget.as_deref().map(parse_duration).transpose()?,
            data: self.data.clone(),
            skip_bad: self.skip_bad,
            small_suite: self.small_suite,
            eval_every: self.eval_every,
            evals: self.evals.clone(),
            eval_limit: self.eval_limit,
            ..Default::default()
        };
        c.train.steps = self.steps;
        c.train.lora = self.lora.config();
        let recipe = if c.train.lora.is_some() { sft::LORA_LR } else { c.train.optim.lr };
        c.train.optim.lr = self.lr.unwrap_or(recipe);
        c.train.batch = self.batch;
        c.train.seed = self.seed;
        c.train.checkpoint_every = self.checkpoint_every;
        c.train.precision = self.precision.value;
        c.train.doc_mask = !self.no_doc_mask;
        Ok(c)
    }
}

pub fn run(a: SftArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    let figures = sft::run(&run, &a.config()?)?;
    println!("{}", figures.summary());
    println!("answers: {}", run.dir.test_answers().display());
    Ok(())
}
