//! Simulated labels: a panel of judges built on the task suite's graders (plus style
//! preferences, each flipping a share of its verdicts at random) compares answers the chat
//! model sampled to the suite's preference-pool prompts (disjoint from SFT's demonstrations and PPO's
//! prompts), into the preference store. Humans label on
//! the rater page instead (`chatforge label` without `--simulated`, in `chatforge_serve::label`).
//! In order: pick the prompts, sample K answers to each at a spread of temperatures, judge every
//! pair (some twice, to measure agreement), store prompts, samples and verdicts in one
//! transaction each, and record how much the judges agree with each other and with the
//! noise-free judge.

use chatforge_rundir::Key;
use chatforge_train::labels::{simulate, LabelConfig, LabelOutcome};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The checkpoint whose answers are compared.
    pub stage: String,
    /// The labeling round: 500 prompts × 4 answers (3,000 comparisons), 8 judges flipping 20 %
    /// of their verdicts, 20 % of pairs labeled twice.
    pub labels: LabelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config { stage: "sft".into(), labels: LabelConfig::default() }
    }
}

/// Comparisons per prompt with `k` answers: every pair of them.
pub fn pairs_per_prompt(k: usize) -> usize {
    k * k.saturating_sub(1) / 2
}

/// `stages.labels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    #[serde(flatten)]
    pub round: LabelOutcome,
    pub noise: f64,
    /// Comparisons in the store after this round (earlier rounds and human votes included).
    pub store_comparisons: usize,
}

/// Labels one round into `R/feedback.sqlite` and records `stages.labels`.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    let noise = cfg.labels.panel.noise;
    if !(0.0..=0.5).contains(&noise) {
        return Err(Error::Input(format!("--noise is the share of verdicts a judge flips: between 0 and 0.5, not {noise}")));
    }
    let tok = run.tokenizer()?;
    let model = run.model(&cfg.stage)?;
    let suite = run.suite()?;
    let mut store = run.store()?;
    if suite.prefs.is_empty() {
        return Err(crate::Error::Input(format!(
            "the task suite in {} has no preference pool (it predates the disjoint pools): start a new run folder",
            run.dir.suite().display()
        )));
    }
    let round = simulate(&model, &run.model_name(&cfg.stage), tok, &suite.prefs, &cfg.labels, &mut store, run.quiet)?;
    let figures = Figures { round, noise, store_comparisons: store.counts()?.comparisons };
    run.record(Key::Stage("labels"), &figures)?;
    Ok(figures)
}

impl Figures {
    pub fn summary(&self, k: usize) -> String {
        let r = &self.round;
        format!(
            "labels: {} prompts x {k} answers -> {} comparisons ({} strict pairs, {} ties, {} both bad) in {:.1} s\n  judges agree on {:.1}% of {} doubly-labeled pairs (InstructGPT's humans: ~73%); {:.1}% of verdicts match the noise-free judge\n  on the reward model's terms, one judge's verdict predicts another's strict verdict {:.1}% of the time (a tie counts ½)\n  the store holds {} comparisons in all",
            r.prompts,
            r.comparisons,
            r.pairs,
            r.ties,
            r.both_bad,
            r.wall_s,
            100.0 * r.simulated_agreement,
            r.agreement_pairs,
            100.0 * r.agreement_with_gold,
            100.0 * r.strict_agreement,
            self.store_comparisons
        )
    }
}
