//! Flags more than one command shares: where a run's text comes from and how it is tokenised,
//! PPO's settings (ppo, pairs-curve), LoRA (sft, dpo), and durations.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_core::model::lora::LoraConfig;
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
    /// AVX512-BF16 and it measures faster than fp32 here, else fp32. A resumed run keeps the
    /// precision it was started with.
    #[arg(long = "precision", default_value_t = auto_precision(), value_parser = parse_precision)]
    pub value: Precision,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("{s:?}: expected fp32 or bf16"))
}

/// `--lora` and the adapters' shape, for `sft` and `dpo`.
#[derive(Args, Clone)]
pub struct LoraArgs {
    /// Train LoRA adapters on the frozen model instead of every weight. The stage folder then
    /// holds the merged model (what every later stage reads) and the adapters in PEFT's format
    /// in adapter/ (adapter_config.json, adapter_model.safetensors), which `peft` loads.
    #[arg(long)]
    pub lora: bool,
    /// The adapters' rank [default: 8].
    #[arg(long, requires = "lora")]
    pub lora_r: Option<usize>,
    /// The adapters' alpha: the update is scaled by alpha / r [default: 16].
    #[arg(long, requires = "lora")]
    pub lora_alpha: Option<f32>,
    /// The linear layers that get adapters, comma-separated, of q_proj, k_proj, v_proj, o_proj,
    /// gate_proj, up_proj, down_proj [default: all seven].
    #[arg(long, requires = "lora", value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
}

impl LoraArgs {
    pub fn config(&self) -> Option<LoraConfig> {
        self.lora.then(|| {
            let d = LoraConfig::default();
            LoraConfig {
                r: self.lora_r.unwrap_or(d.r),
                alpha: self.lora_alpha.unwrap_or(d.alpha),
                targets: self.lora_targets.clone().unwrap_or(d.targets),
                rslora: false,
            }
        })
    }
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

/// PPO's flags (also the PPO of every `pairs-curve` point).
#[derive(Args, Clone)]
pub struct PpoFlags {
    /// What scores the answers: rm (the reward model: RLHF, into R/ppo), graders (the suite's
    /// programmatic graders with the honesty ternary: RLVR, into R/rlvr), both (into R/ppo_both).
    /// Each has its own recipe (`PpoConfig::for_reward`); the flags below override it.
    #[arg(long, default_value = "rm", value_parser = ["rm", "graders", "both"])]
    pub reward: String,
    /// Rollout iterations (each samples --rollouts answers, then updates the policy) [default: 20].
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Answers sampled per iteration [default: 32; graders 128].
    #[arg(long)]
    pub rollouts: Option<usize>,
    /// Answers per prompt; each scored relative to its siblings (1: InstructGPT's one answer per
    /// prompt) [default: 4].
    #[arg(long)]
    pub group: Option<usize>,
    /// Advantage estimator: gae (the value head, InstructGPT's PPO) or rloo (no critic: the
    /// group's leave-one-out mean is the baseline) [default: gae; graders rloo].
    #[arg(long, value_parser = ["gae", "rloo"])]
    pub advantage: Option<String>,
    /// Answers per gradient step [default: 16; graders 32].
    #[arg(long)]
    pub minibatch: Option<usize>,
    /// Passes of minibatch updates over each iteration's answers [default: 4; graders 2].
    #[arg(long)]
    pub ppo_epochs: Option<usize>,
    /// Sampling temperature of the rollouts [default: 1].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Initial KL coefficient β [default: 0.02].
    #[arg(long)]
    pub kl_coef: Option<f64>,
    /// Target KL per answer (nats) for the adaptive controller; 0 keeps β fixed [default: 3;
    /// graders 8].
    #[arg(long)]
    pub kl_target: Option<f64>,
    /// Learning rate (constant) [default: 5e-5; graders 2e-4].
    #[arg(long)]
    pub lr: Option<f32>,
    /// PPO-ptx: weight of the SFT next-token loss mixed into every update (0: off).
    /// InstructGPT's remedy for regressions [default: 0.5; graders 0.15].
    #[arg(long)]
    pub ptx_coef: Option<f64>,
    /// Iterations between checkpoints (a killed run resumes from the last one, exactly)
    /// [default: 5].
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    #[command(flatten)]
    pub precision: PrecisionArg,
}

impl PpoFlags {
    /// The reward's recipe with the flags given on top.
    pub fn config(&self) -> ppo::Config {
        let mut c = ppo::Config::for_reward(self.reward.parse().expect("clap checked the reward"));
        let set = |slot: &mut usize, v: Option<usize>| *slot = v.unwrap_or(*slot);
        set(&mut c.iterations, self.iterations);
        set(&mut c.rollouts, self.rollouts);
        set(&mut c.group, self.group);
        set(&mut c.minibatch, self.minibatch);
        set(&mut c.ppo_epochs, self.ppo_epochs);
        set(&mut c.checkpoint_every, self.checkpoint_every);
        if let Some(a) = &self.advantage {
            c.advantage = a.parse().expect("clap checked the estimator");
        }
        c.temperature = self.temperature.unwrap_or(c.temperature);
        c.kl_coef = self.kl_coef.unwrap_or(c.kl_coef);
        if let Some(t) = self.kl_target {
            c.kl_target = (t > 0.0).then_some(t);
        }
        c.optim.lr = self.lr.unwrap_or(c.optim.lr);
        c.ptx_coef = self.ptx_coef.unwrap_or(c.ptx_coef);
        c.precision = self.precision.value;
        c
    }
}
