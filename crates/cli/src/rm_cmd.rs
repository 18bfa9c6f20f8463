//! `chatforge rm`: train the reward model on the run's preference store (`chatforge_stages::rm`).

use std::path::PathBuf;

use chatforge_rundir::Key;
use chatforge_stages::rm::{self, Raters};
use chatforge_stages::{label, Run};
use clap::Args;

use crate::args::PrecisionArg;

fn d() -> rm::Config {
    rm::Config::default()
}

#[derive(Args, Clone)]
pub struct RmArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = d().train.epochs)]
    pub epochs: f64,
    #[arg(long, default_value_t = d().train.optim.lr)]
    pub lr: f32,
    /// Prompts per step (all their answers in one forward pass).
    #[arg(long, default_value_t = d().train.batch_prompts)]
    pub batch_prompts: usize,
    /// Train on ties too (label ½: the two rewards are pulled together, which teaches the model
    /// what does not matter); `--ties false` trains on strict pairs only.
    #[arg(long, default_value_t = d().ties, action = clap::ArgAction::Set)]
    pub ties: bool,
    /// Steps between checkpoints (a killed run resumes from the last one, exactly).
    #[arg(long, default_value_t = d().train.checkpoint_every)]
    pub checkpoint_every: usize,
    /// Use at most this many pairs (the oldest first).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Only human (`human`) or only simulated (`simulated`) labels.
    #[arg(long)]
    pub only: Option<Raters>,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

impl RmArgs {
    pub fn config(&self) -> rm::Config {
        let mut c = rm::Config { ties: self.ties, pairs: self.pairs, raters: self.only.unwrap_or_default(), ..Default::default() };
        c.train.epochs = self.epochs;
        c.train.optim.lr = self.lr;
        c.train.batch_prompts = self.batch_prompts;
        c.train.checkpoint_every = self.checkpoint_every;
        c.train.precision = self.precision.value;
        c
    }
}

pub fn run(a: RmArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    let figures = rm::run(&run, &a.config())?;
    let agreement = run.report().get::<label::Figures>(Key::Stage("labels")).map(|l| l.round.strict_agreement);
    println!("{}", figures.summary(agreement));
    Ok(())
}
