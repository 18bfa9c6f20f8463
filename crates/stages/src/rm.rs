//! The reward model: the SFT trunk with a scalar head, trained with the Bradley–Terry loss on
//! the store's preference pairs (all K answers of a prompt in one forward pass; ties as label ½).
//! In order: the pairs (filtered, at most `pairs`), the gold judge's verdict of each pair whose
//! prompt is a suite task (for the held-out accuracy against the noise-free judge), the loop
//! (resumable), then the held-out figures beside the labelers' own agreement.

use chatforge_core::config::LlamaConfig;
use chatforge_data::tasks::{Pool, Task};
use chatforge_feedback::simulated::{features, Panel, PanelConfig};
use chatforge_feedback::{Choice, Pair, PairFilter};
use chatforge_rundir::layout::CONFIG;
use chatforge_rundir::Key;
use chatforge_train::labels::{prompt_key, task_index};
use chatforge_train::rm::{train_rm, RmConfig, RmData};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// Whose labels the reward model learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Raters {
    #[default]
    All,
    Human,
    Simulated,
}

impl std::str::FromStr for Raters {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Raters, String> {
        match s {
            "all" => Ok(Raters::All),
            "human" => Ok(Raters::Human),
            "simulated" => Ok(Raters::Simulated),
            o => Err(format!("takes all, human or simulated, not {o:?}")),
        }
    }
}

impl Raters {
    /// The store filter's `simulated` field.
    pub fn simulated(self) -> Option<bool> {
        match self {
            Raters::All => None,
            Raters::Human => Some(false),
            Raters::Simulated => Some(true),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The loop's recipe: 8 prompts a step, 1 epoch, lr 3e-4, 10 % of prompts held out.
    pub train: RmConfig,
    /// Train on ties too (label ½: the two rewards are pulled together, which teaches the model
    /// what does not matter); false trains on strict pairs only.
    pub ties: bool,
    /// Use at most this many pairs (the oldest first).
    pub pairs: Option<usize>,
    pub raters: Raters,
}

impl Default for Config {
    fn default() -> Self {
        Config { train: RmConfig::default(), ties: true, pairs: None, raters: Raters::All }
    }
}

/// `stages.rm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    /// Held-out accuracy against the noise-free judge.
    pub heldout_accuracy: f64,
    /// Against the noisy labels (strict pairs).
    pub heldout_accuracy_noisy: f64,
    /// The noise-free judge's own accuracy against those labels: the most any reward model scores.
    pub gold_accuracy_noisy: f64,
    pub ece: f64,
    pub heldout_loss: f64,
    pub reliability: Vec<(f64, f64, usize)>,
    pub pairs: usize,
    pub tie_pairs: usize,
    pub train_pairs: usize,
    pub heldout_pairs: usize,
    pub gold_pairs: usize,
    pub steps: usize,
    pub wall_s: f64,
}

/// Trains `R/rm` (or resumes it) and records `stages.rm`.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    run.check_memory("sft", 4, "the reward model")?;
    let tok = run.tokenizer()?;
    let store = run.existing_store()?;
    let mut pairs = store.pairs(&PairFilter { ties: cfg.ties, simulated: cfg.raters.simulated() })?;
    if let Some(n) = cfg.pairs {
        pairs.truncate(n);
    }
    if pairs.is_empty() {
        return Err(Error::Missing { what: format!("{} holds no preference pairs", store.path().display()), hint: run.label_hint() });
    }
    // The gold judge knows the task of every suite prompt; other prompts have no gold verdict.
    let suite = run.suite()?;
    let all: Vec<Task> = Pool::ALL.iter().flat_map(|&p| suite.pool(p).iter().cloned()).collect();
    let index = task_index(&all);
    let panel = Panel::new(&PanelConfig::default());
    let gold = |p: &Pair| {
        let task = index.get(&prompt_key(&p.prompt))?;
        Some(match panel.gold_verdict(&features(task, &p.chosen), &features(task, &p.rejected)) {
            Choice::A => 1.0,
            Choice::B => 0.0,
            Choice::Tie | Choice::BothBad => 0.5,
        })
    };
    let context = LlamaConfig::from_json_file(&run.dir.stage("sft").join(CONFIG))?.max_position_embeddings;
    let data = RmData::new(tok, &pairs, context, &cfg.train, gold)?;
    let out = train_rm(&run.dir, cfg.train.clone(), &data, run.quiet)?;
    let e = out.eval;
    let figures = Figures {
        heldout_accuracy: e.heldout_accuracy,
        heldout_accuracy_noisy: e.heldout_accuracy_noisy,
        gold_accuracy_noisy: e.gold_accuracy_noisy,
        ece: e.ece,
        heldout_loss: e.mean_loss,
        reliability: e.reliability,
        pairs: pairs.len(),
        tie_pairs: pairs.iter().filter(|p| p.label == 0.5).count(),
        train_pairs: out.train_pairs,
        heldout_pairs: e.heldout_pairs,
        gold_pairs: e.gold_pairs,
        steps: out.steps,
        wall_s: out.wall_s,
    };
    run.record(Key::Stage("rm"), &figures)?;
    Ok(figures)
}

impl Figures {
    /// The held-out figures; `strict_agreement` is the labelers' (from the label stage), when known.
    pub fn summary(&self, strict_agreement: Option<f64>) -> String {
        let mut s = format!(
            "rm: held-out accuracy {:.1}% vs the noise-free judges ({} pairs), {:.1}% vs the noisy labels ({} pairs; the noise-free judge itself scores {:.1}% against them); ECE {:.3}",
            100.0 * self.heldout_accuracy,
            self.gold_pairs,
            100.0 * self.heldout_accuracy_noisy,
            self.heldout_pairs,
            100.0 * self.gold_accuracy_noisy,
            self.ece
        );
        if let Some(a) = strict_agreement {
            s += &format!("\n  the simulated labelers predict each other's strict labels {:.1}% of the time", 100.0 * a);
        }
        s
    }
}
