//! `chatforge ppo | dpo`: RLHF from the run's preferences (`chatforge_stages::{ppo, dpo}`).

use std::path::PathBuf;

use chatforge_stages::{dpo, ppo, Run};
use clap::Args;

use crate::args::{LoraArgs, PpoFlags, PrecisionArg};

fn d() -> dpo::Config {
    dpo::Config::default()
}

#[derive(Args, Clone)]
pub struct PpoArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub ppo: PpoFlags,
}

#[derive(Args, Clone)]
pub struct DpoArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = d().train.beta)]
    pub beta: f32,
    #[arg(long, default_value_t = d().train.epochs)]
    pub epochs: f64,
    /// Learning rate [default: 1e-4; with --lora 1e-3, untuned].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Steps between checkpoints (a killed run resumes from the last one, exactly).
    #[arg(long, default_value_t = d().train.checkpoint_every)]
    pub checkpoint_every: usize,
    /// Use at most this many preference pairs (the oldest first).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Weight of the SFT next-token loss mixed into every step, as PPO-ptx (0: off); 1.0 keeps
    /// JSON-only adherence at SFT's level in the speedrun (0.5 did not).
    #[arg(long, default_value_t = d().train.ptx_coef)]
    pub ptx_coef: f64,
    #[command(flatten)]
    pub precision: PrecisionArg,
    #[command(flatten)]
    pub lora: LoraArgs,
}

impl DpoArgs {
    pub fn config(&self) -> dpo::Config {
        let mut c = dpo::Config { pairs: self.pairs, ..Default::default() };
        c.train.beta = self.beta;
        c.train.epochs = self.epochs;
        c.train.lora = self.lora.config();
        let recipe = if c.train.lora.is_some() { dpo::LORA_LR } else { c.train.optim.lr };
        c.train.optim.lr = self.lr.unwrap_or(recipe);
        c.train.ptx_coef = self.ptx_coef;
        c.train.checkpoint_every = self.checkpoint_every;
        c.train.precision = self.precision.value;
        c
    }
}

pub fn run_ppo(a: PpoArgs) -> anyhow::Result<()> {
    println!("{}", ppo::run(&Run::open(&a.run), &a.ppo.config())?.summary());
    Ok(())
}

pub fn run_dpo(a: DpoArgs) -> anyhow::Result<()> {
    println!("{}", dpo::run(&Run::open(&a.run), &a.config())?.summary());
    Ok(())
}
