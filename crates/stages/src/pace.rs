//! The speedrun's pace: the share of its recipe that fits its 20 minutes on this machine.
//!
//! Some of the speedrun's work scales with its budgets (pretraining and SFT, labels, the reward
//! model, PPO, RLVR, DPO) and some does not (the scaling ladder, the evals, the headroom probe,
//! the tokenizer and data stages): a slower machine pays the fixed part in full. The pace is
//! the factor on the scaling part that makes both end within [`TARGET_S`]. In order:
//! 1. [`measure`]: the base model's training step (`bench train`'s shape, the speedrun's
//!    precision), a few steps after a warm-up: tokens per second, `s`.
//! 2. [`Pace::new`]: the factor, `(TARGET_S · s − FIXED_WORK) / PACED_WORK` in [0.05, 1]: the
//!    fixed work takes `FIXED_WORK / s` seconds and the full recipe's paced work
//!    `PACED_WORK / s`, both counted in the base model's training tokens. On a machine fast enough
//!    for the whole recipe it is 1 and the speedrun gives the same models everywhere; on a slower
//!    one every budget that scales a stage's work (pretraining tokens, prompts to label, RL
//!    iterations) is multiplied by it. SFT keeps its steps, and pretraining pays for them
//!    ([`Pace::pretrain_steps`]). The scaling ladder keeps its full rungs, each cut
//!    only where it exceeds a tenth of the base run's compute (`speedrun::ladder`), and eval
//!    sample sizes never shrink.
//! 3. [`Pace::load_or_measure`]: kept in `R/pace.json`, so a resumed speedrun keeps the budgets it
//!    started with; `--pace` sets it (1: the full recipe whatever the machine).

use std::path::PathBuf;

use chatforge_core::backend::Precision;
use chatforge_train::bench::{bench_train, BenchConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// The seconds the speedrun is sized to end within: 20 minutes less a margin for the drift of a
/// shared machine's speed after the pace is measured (20–40 % between same-binary reruns here).
pub const TARGET_S: f64 = 1_100.0;

/// The speedrun's unpaced work, in seconds times the base model's training tokens per second.
/// Measured on a 2-core AMD EPYC that trained at 8,745 tokens/s (pace 0.53, 2026-12-07, the
/// README command): the scaling ladder 176.8 s, the evals 105.0, headroom 15.3 and the rest
/// outside the stages 18 (pace measurement, data, tokenizer): 315 s x 8,745.
pub const FIXED_WORK: f64 = 2.75e6;

/// The full recipe's paced work, same units. The same run's paced stages took 875.5 s at 0.53
/// (pretraining 231.7, SFT 318.3, labels 46.5, reward model 52.0, PPO 70.1, RLVR 95.2, DPO 61.6):
/// 875.5 x 8,745 / 0.53. That run took 1,190.5 s, 9.5 s inside the bar; this model gives it
/// 0.475 of the recipe and 1,100 s.
pub const PACED_WORK: f64 = 14.45e6;

/// The throughput at which the full recipe ends within [`TARGET_S`] (about 15,640 tokens/s).
pub fn full_recipe_tokens_per_s() -> f64 {
    (FIXED_WORK + PACED_WORK) / TARGET_S
}

/// The share of the recipe this run does, and why.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// The base model's training throughput measured here (0 when the factor was given).
    pub tokens_per_s: f64,
    /// The throughput at which the whole recipe fits ([`full_recipe_tokens_per_s`]).
    pub reference_tokens_per_s: f64,
    /// In (0, 1]: the budgets' multiplier.
    pub factor: f64,
    /// Whether the factor was given (`--pace`) instead of measured.
    pub fixed: bool,
}

impl Pace {
    /// The pace of a machine that trains at `tokens_per_s`.
    pub fn new(tokens_per_s: f64) -> Pace {
        let factor = ((TARGET_S * tokens_per_s - FIXED_WORK) / PACED_WORK).clamp(0.05, 1.0);
        Pace { tokens_per_s, reference_tokens_per_s: full_recipe_tokens_per_s(), factor, fixed: false }
    }

    /// The full recipe (tests, `--quick`, `--pace 1`).
    pub fn full() -> Pace {
        Pace::given(1.0).expect("1 is a pace")
    }

    /// Pretraining's steps at this pace when SFT keeps its `sft_full` steps whole: the paced
    /// share of `full` less the SFT steps the pace would have cut (the two steps cost about
    /// the same), and at least half the paced share. SFT stays whole because tool use is learnt
    /// there: on the same paced base (pace 0.53), val arithmetic with tools was 17.5 % after
    /// 531 SFT steps and 87.5 % after 1,000 (n = 40 each; the full base after 531 steps: 52.5 %).
    pub fn pretrain_steps(&self, full: usize, sft_full: usize) -> usize {
        let paced = self.of(full);
        paced.saturating_sub(sft_full - self.of(sft_full).min(sft_full)).max(paced / 2).max(1)
    }

    pub fn given(factor: f64) -> Result<Pace> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::Input(format!("--pace must be in (0, 1], got {factor}")));
        }
        Ok(Pace { tokens_per_s: 0.0, reference_tokens_per_s: full_recipe_tokens_per_s(), factor, fixed: true })
    }

    /// `n` (a count of steps, tokens, prompts) at this pace: at least 1.
    pub fn of(&self, n: usize) -> usize {
        ((n as f64 * self.factor).round() as usize).max(1)
    }

    /// A fractional budget (epochs) at this pace.
    pub fn of_f(&self, x: f64) -> f64 {
        x * self.factor
    }

    fn path(run: &Run) -> PathBuf {
        run.dir.root().join("pace.json")
    }

    /// The run's pace: the one it started with, else `given`, else measured now; written to
    /// `R/pace.json`.
    pub fn load_or_measure(run: &Run, given: Option<f64>, precision: Precision) -> Result<Pace> {
        let path = Pace::path(run);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let kept: Pace = serde_json::from_slice(&bytes).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
            return Ok(kept);
        }
        let pace = match given {
            Some(f) => Pace::given(f)?,
            None => Pace::new(measure(precision)),
        };
        let bytes = serde_json::to_vec_pretty(&pace).expect("a pace serializes");
        chatforge_rundir::fs::write_atomic(&path, &bytes)?;
        Ok(pace)
    }

    pub fn line(&self) -> String {
        if self.fixed {
            format!("pace: {:.2} of the recipe (given)", self.factor)
        } else {
            format!(
                "pace: base model trains at {:.0} tokens/s here, the whole recipe fits {:.0}s at {:.0}: {:.2} of the recipe",
                self.tokens_per_s, TARGET_S, self.reference_tokens_per_s, self.factor
            )
        }
    }
}

/// The base model's training throughput here: `bench train`'s shape (the speedrun's base
/// model), 5 warm-up and 10 timed steps, the better of two tries (about 8 s). With 2 warm-up
/// steps the first try read 6.5k tokens/s on a machine that trains at 9k.
pub fn measure(precision: Precision) -> f64 {
    let once = || bench_train(&BenchConfig { steps: 10, warmup: 5, precision, ..Default::default() }, |_, _| {}).tokens_per_s;
    once().max(once())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_factor_fits_the_fixed_and_the_paced_work() {
        assert_eq!(Pace::new(1.01 * full_recipe_tokens_per_s()).factor, 1.0);
        assert_eq!(Pace::new(100.0).factor, 0.05);
        // The run the constants were measured on: 0.475 of the recipe, TARGET_S seconds.
        let p = Pace::new(8_745.0);
        assert!((p.factor - 0.475).abs() < 0.002, "{}", p.factor);
        let seconds = (FIXED_WORK + p.factor * PACED_WORK) / 8_745.0;
        assert!((seconds - TARGET_S).abs() < 1e-6);
        // A slower machine pays the fixed work in full, so its factor falls faster than its speed.
        assert!(Pace::new(6_000.0).factor / p.factor < 6_000.0 / 8_745.0);
        let p = Pace::given(0.7).unwrap();
        assert!(p.of(2500) == 1750 && p.of(1) == 1);
        assert!(Pace::given(0.0).is_err() && Pace::given(1.5).is_err() && Pace::given(0.5).is_ok());
        // Pretraining pays for SFT's whole 1,000 steps, down to half its paced share.
        assert_eq!(Pace::full().pretrain_steps(2500, 1000), 2500);
        assert_eq!(Pace::given(0.6).unwrap().pretrain_steps(2500, 1000), 1500 - 400);
        assert_eq!(Pace::given(0.2).unwrap().pretrain_steps(2500, 1000), 250);
    }

    #[test]
    fn a_run_keeps_its_pace() {
        let dir = std::env::temp_dir().join(format!("chatforge-pace-{}", std::process::id()));
        let run = Run::open(&dir);
        run.create().unwrap();
        let first = Pace::load_or_measure(&run, Some(0.5), Precision::Fp32).unwrap();
        let again = Pace::load_or_measure(&run, Some(1.0), Precision::Fp32).unwrap();
        assert_eq!((first.factor, again), (0.5, first));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
