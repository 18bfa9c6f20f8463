//! Flags more than one command shares: where a run's text comes from and how it is tokenised,
//! PPO's settings (ppo, pairs-curve), and durations.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_stages::{ppo, tokenizer};
use chatforge_train::pretrain::TokenizerSpec;
use clap::Args;

/// Where a run's text comes from and how it is tokenised (pretrain, scale).
#[derive(Args, Clone)]
pub struct CorpusArgs {
    /// A plain text file, or a cleaned corpus folder from `chatforge data` (default: the bundled
    /// corpus, cleaned into RUN/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `bpe` (trained on the train split), `bytes`, or a tokenizer.json path.
    #[arg(long, default_value = "bpe")]
    pub tokenizer: String,
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
}

impl CorpusArgs {
    pub fn config(&self) -> tokenizer::Config {
        let spec = match self.tokenizer.as_str() {
            "bpe" => TokenizerSpec::Bpe { vocab_size: self.vocab_size },
            "bytes" => TokenizerSpec::Bytes,
            path => TokenizerSpec::File(PathBuf::from(path)),
        };
        tokenizer::Config { data: self.data.clone(), spec }
    }
}

/// `--precision fp32|bf16` of the training stages and the speedrun.
#[derive(Args, Clone)]
pub struct PrecisionArg {
    /// Matmul arithmetic: bf16 (bf16 operands, fp32 accumulation; fp32 weights, optimizer,
    /// norms and loss) or fp32. Default (every stage's recipe): bf16 where this CPU has
    /// AVX512-BF16, else fp32. A resumed run keeps the precision it was started with.
    #[arg(long = "precision", default_value_t = auto_precision(), value_parser = parse_precision)]
    pub value: Precision,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("{s:?}: expected fp32 or bf16"))
}

/// Seconds from `120`, `90s`, `2m` or `1h`.
pub fn parse_duration(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1.0),
        Some('m') => (&s[..s.len() - 1], 60.0),
        Some('h') => (&s[..s.len() - 1], 3600.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().with_context(|| format!("--time-budget {s:?}: expected seconds, or a number with s/m/h"))?;
    if v <= 0.0 {
        bail!("--time-budget must be positive");
    }
    Ok(v * mult)
}

fn p() -> ppo::Config {
    ppo::Config::default()
}

/// PPO's flags (also the PPO of every `pairs-curve` point).
#[derive(Args, Clone)]
pub struct PpoFlags {
    /// What scores the answers: rm (the reward model: RLHF, into R/ppo), graders (the suite's
    /// programmatic graders with the honesty ternary: RLVR, into R/rlvr), both (into R/ppo_both).
    #[arg(long, default_value = "rm", value_parser = ["rm", "graders", "both"])]
    pub reward: String,
    /// Rollout iterations (each samples --rollouts answers, then updates the policy).
    #[arg(long, default_value_t = p().iterations)]
    pub iterations: usize,
    /// Answers sampled per iteration.
    #[arg(long, default_value_t = p().rollouts)]
    pub rollouts: usize,
    /// Answers per prompt; each scored relative to its siblings (1: InstructGPT's one answer per prompt).
    #[arg(long, default_value_t = p().group)]
    pub group: usize,
    /// Initial KL coefficient β.
    #[arg(long, default_value_t = p().kl_coef)]
    pub kl_coef: f64,
    /// Target KL per answer (nats) for the adaptive controller; 0 keeps β fixed.
    #[arg(long, default_value_t = p().kl_target.unwrap_or(0.0))]
    pub kl_target: f64,
    /// Learning rate (constant).
    #[arg(long, default_value_t = p().optim.lr)]
    pub lr: f32,
    /// PPO-ptx: weight of the SFT next-token loss mixed into every update (0: off). InstructGPT's
    /// remedy for regressions; here it keeps JSON-only adherence at SFT's level.
    #[arg(long, default_value_t = p().ptx_coef)]
    pub ptx_coef: f64,
    /// Iterations between checkpoints (a killed run resumes from the last one, exactly).
    #[arg(long, default_value_t = p().checkpoint_every)]
    pub checkpoint_every: usize,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

impl PpoFlags {
    pub fn config(&self) -> ppo::Config {
        let mut c = ppo::Config {
            reward: self.reward.parse().expect("clap checked the reward"),
            iterations: self.iterations,
            rollouts: self.rollouts,
            group: self.group,
            kl_coef: self.kl_coef,
            kl_target: (self.kl_target > 0.0).then_some(self.kl_target),
            ptx_coef: self.ptx_coef,
            checkpoint_every: self.checkpoint_every,
            precision: self.precision.value,
            ..Default::default()
        };
        c.optim.lr = self.lr;
        c
    }
}
