//! DPO: direct preference optimization from the store's preference pairs, against the frozen
//! SFT model, with the SFT next-token loss on a few SFT rows mixed into every step (as PPO-ptx).
//! In order: the pairs (oldest first, at most `pairs`), the reference log-probs of every distinct
//! answer, the loop (resumable), then the same figures as PPO: safety before and after and the
//! win rate against SFT on held-out prompts.

use chatforge_feedback::PairFilter;
use chatforge_rundir::Key;
use chatforge_train::compare::WinRate;
use chatforge_train::dpo::{dpo, DpoConfig, DpoData};
use chatforge_train::ppo::plot_rl;
use serde::{Deserialize, Serialize};

use crate::compare::{safety, win_rate, Safety};
use crate::{Result, Run};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// The loop's recipe: β 0.1, 16 pairs a step, 1 epoch, lr 1e-4, SFT-loss weight 1.0 (0.5
    /// did not keep JSON-only adherence at SFT's level in the speedrun).
    pub train: DpoConfig,
    /// Use at most this many pairs (the oldest first).
    pub pairs: Option<usize>,
}

/// The learning rate of `--lora` (adapters only, on the frozen SFT model): 10× the full
/// fine-tune's, the usual LoRA rule; not tuned (DPO has no val figure to tune it on yet).
pub const LORA_LR: f32 = 1e-3;

/// `stages.dpo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    #[serde(flatten)]
    pub after: Safety,
    pub win_rate_vs_sft: f64,
    pub win_rate_vs_sft_detail: WinRate,
    pub pairs: usize,
    pub steps: usize,
    /// Share of training pairs whose implicit reward orders them as the label does.
    pub reward_accuracy: f64,
    pub wall_s: f64,
    pub before: Safety,
}

/// Trains `R/dpo` (or resumes it) and records `stages.dpo`.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    // Policy weights, gradients and two moments, and the reference; with LoRA, the two models.
    run.check_memory("sft", if cfg.train.lora.is_some() { 2 } else { 5 }, "DPO")?;
    let tok = run.tokenizer()?;
    let store = run.existing_store()?;
    let mut pairs = store.pairs(&PairFilter::default())?;
    if let Some(n) = cfg.pairs {
        pairs.truncate(n);
    }
    let mut reference = run.model("sft")?;
    // The reference's log-probs in the policy's precision (a resumed run's own): their gap is
    // exactly 0 at step 0.
    let precision = chatforge_train::trainer::stage_precision(&run.dir, "dpo", cfg.train.precision)?;
    reference.be = chatforge_core::cpu::Cpu::with_precision(precision);
    let data = DpoData::new(tok, &pairs, &mut reference)?;
    let suite = run.suite()?;
    let ptx = crate::ppo::ptx_rows(run, cfg.train.ptx_coef)?;
    let out = dpo(&run.dir, cfg.train.clone(), &data, ptx.as_ref().map(|d| (d, tok.eot_id())), run.quiet)?;
    plot_rl(&run.dir)?;
    let before = safety(run, "sft", &suite.test)?;
    let after = safety(run, "dpo", &suite.test)?;
    let w = win_rate(run, "dpo", "sft", &suite.test, [1.0; 2], 0)?;
    let figures = Figures {
        after,
        win_rate_vs_sft: w.win_rate,
        win_rate_vs_sft_detail: w,
        pairs: out.pairs,
        steps: out.steps,
        reward_accuracy: out.reward_accuracy,
        wall_s: out.wall_s,
        before,
    };
    run.record(Key::Stage("dpo"), &figures)?;
    Ok(figures)
}

impl Figures {
    pub fn summary(&self) -> String {
        crate::ppo::summary("dpo", &self.win_rate_vs_sft_detail, &self.before, &self.after)
    }
}
