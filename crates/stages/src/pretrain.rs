//! Pretraining: the base model from scratch on the run's token shards (a Llama: RMSNorm, RoPE,
//! GQA, SwiGLU; AdamW with warmup and cosine decay, gradient accumulation and clipping), with
//! val loss, bits per byte and a sample at every eval, atomic checkpoints and exact resume
//! (`chatforge_train::pretrain`). The tokenizer stage runs first when the shards are missing.

use std::path::PathBuf;

use chatforge_train::pretrain::{pretrain, Budget, PretrainConfig, PretrainOptions, PretrainOutcome};
use serde::{Deserialize, Serialize};

use crate::{Result, Run};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// The recipe: depth 4, context 256, 8 sequences a step, 1,000 steps, peak lr 1.5e-3 (the
    /// rule of `lr_for_depth`), cosine decay, seed 1337.
    pub train: PretrainConfig,
    /// How long; None: `train.steps` steps.
    pub budget: Option<Budget>,
    /// Resume from this checkpoint folder (e.g. `R/base.prev`) instead of `R/base`.
    pub resume_from: Option<PathBuf>,
    pub corpus: crate::tokenizer::Config,
}

/// Trains (or resumes) `R/base`; `stages.base` in report.json is the outcome.
pub fn run(run: &Run, cfg: &Config) -> Result<PretrainOutcome> {
    let (tok, corpus) = crate::tokenizer::run(run, &cfg.corpus)?;
    let budget = cfg.budget.unwrap_or(Budget::Steps(cfg.train.steps));
    let opts = PretrainOptions { resume_from: cfg.resume_from.clone(), quiet: run.quiet };
    Ok(pretrain(&run.dir, cfg.train.clone(), budget, &tok, &corpus, &opts)?)
}

/// What pretraining printed at the end: the figures and the samples of the last eval.
pub fn summary(run: &Run, o: &PretrainOutcome) -> String {
    let mut s = format!(
        "base: {} steps, {} tokens, {:.2}M params: val loss {:.4} nats/token, {:.4} bits/byte (unigram baseline {:.4}); {:.0} tokens/s end to end, MFU {:.0}%, {:.1}s",
        o.steps,
        o.tokens,
        o.params as f64 / 1e6,
        o.val_loss,
        o.val_bpb,
        o.unigram_val_bpb,
        o.train_tokens_per_s,
        100.0 * o.mfu,
        o.wall_s
    );
    for (i, x) in o.samples.iter().enumerate() {
        s += &format!("\n--- sample {} ---\n{}", i + 1, x.trim_end());
    }
    s + &format!("\nreport: {}", run.dir.report_md().display())
}
