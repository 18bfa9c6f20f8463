//! Moderation for serving: a classifier of user inputs and model outputs (a bag-of-words
//! logistic regression per category, `chatforge_serve::moderation`), trained on the refusal
//! family of a task suite generated for it from the bundled corpus and measured on that suite's
//! test split: precision and recall on disallowed requests, and how often benign look-alikes
//! are flagged. `chatforge serve` loads `R/moderation.json`; it never trains one itself.

use chatforge_rundir::Key;
use chatforge_serve::moderation::{train, Measure};
use serde::{Deserialize, Serialize};

use crate::{Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Seed of the classifier's task suite and of its training.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { seed: 1 }
    }
}

/// Trains, saves `R/moderation.json` and records `stages.moderation` (the test-split figures).
pub fn run(run: &Run, cfg: &Config) -> Result<Measure> {
    let (classifier, measure) = train(cfg.seed)?;
    run.create()?;
    classifier.save(&run.dir.moderation())?;
    run.record(Key::Stage("moderation"), &measure)?;
    Ok(measure)
}

/// What the stage printed.
pub fn summary(m: &Measure) -> String {
    format!(
        "moderation (test split): precision {:.3}  recall {:.3}  F1 {:.3}  ({} disallowed requests, {} benign look-alikes)\nover-refusal: {:.1}% of benign look-alikes flagged, {:.1}% of {} other texts flagged",
        m.precision,
        m.recall,
        m.f1,
        m.harmful,
        m.lookalikes,
        100.0 * m.lookalike_false_positive_rate,
        100.0 * m.other_false_positive_rate,
        m.other
    )
}
