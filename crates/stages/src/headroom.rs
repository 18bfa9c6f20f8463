//! Headroom: how much better the assistant's answers could be if it chose among its own samples,
//! and how much of that the reward model can see.
//!
//! For each held-out prompt the stage answers N times. Best-of-k answers (k = 1, 2, 4, ... N) are
//! picked three ways and judged against SFT's single samples (the B side of `compare`):
//! - by the **reward model**: what RLHF against it can reach at best-of-k's KL (≤ ln k nats);
//! - by the **gold judge**: the ceiling if the reward model were perfect;
//! - by the gold judge **blind** to correctness and the reference answer: a judge that does not
//!   know the held-out facts and can only reward form, obedience and style.
//!
//! It also reports how often the reward model orders two of these answers as the gold judge does.

use std::collections::BTreeMap;

use chatforge_core::sample::SamplingParams;
use chatforge_data::chat::Conversation;
use chatforge_feedback::simulated::{features, Features, Panel, PanelConfig, Weights};
use chatforge_rundir::plot::line_plot;
use chatforge_rundir::Key;
use chatforge_train::compare::{best_of, judge, ranking_accuracy, WinRate};
use chatforge_train::labels::sample_answers;
use serde::{Deserialize, Serialize};

use crate::compare::stage_answers;
use crate::{Error, Result, Run};

/// Seeds of the candidate answers start here, away from `compare`'s seeds.
const SEED_BASE: u64 = 1 << 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The stage whose answers are sampled and picked from.
    pub stage: String,
    /// Answers per prompt; best-of-k is reported for k = 1, 2, 4, ... up to n.
    pub n: usize,
    pub temperature: f32,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { stage: "sft".into(), n: 8, temperature: 1.0, seed: 0 }
    }
}

/// A win rate against SFT's single samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Win {
    pub win_rate: f64,
    pub ci95: (f64, f64),
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
}

impl From<&WinRate> for Win {
    fn from(w: &WinRate) -> Win {
        Win { win_rate: w.win_rate, ci95: w.ci95, wins: w.wins, ties: w.ties, losses: w.losses }
    }
}

/// Best-of-k's win rate by each picker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BestOf {
    pub k: usize,
    pub reward_model: Win,
    pub gold: Win,
    pub blind: Win,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FamilyRanking {
    pub accuracy: f64,
    pub pairs: usize,
}

/// `stages.headroom`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub stage: String,
    pub n: usize,
    pub temperature: f32,
    pub prompts: usize,
    pub best_of: Vec<BestOf>,
    /// How often the reward model orders two answers to a prompt as the gold judge does.
    pub rm_ranking_accuracy: f64,
    pub rm_ranking_pairs: usize,
    pub rm_ranking_by_family: BTreeMap<String, FamilyRanking>,
}

/// Samples, picks and judges; records `stages.headroom` and draws `plots/headroom.svg`.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    if cfg.n < 1 {
        return Err(Error::Input("--n needs at least one answer per prompt".into()));
    }
    let mut rm = run.reward_model()?;
    let tok = run.tokenizer()?;
    let test = &run.suite()?.test;
    let model = run.model(&cfg.stage)?;
    let base = stage_answers(run, "sft", test, 1.0, 0)?;
    let prompts: Vec<Conversation> = test.iter().map(|t| t.prompt()).collect();
    let params = SamplingParams { temperature: cfg.temperature, top_k: 0, top_p: 1.0 };
    let samples = sample_answers(&model, tok, &prompts, cfg.n, params, 96, SEED_BASE + cfg.seed, run.quiet);
    drop(model);

    let panel = Panel::new(&PanelConfig::default());
    let blind_weights = Weights { correct: 0.0, similar: 0.0, ..Weights::GOLD };
    let (mut by_rm, mut by_gold, mut by_blind) = (vec![], vec![], vec![]);
    let mut ranking: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for ((task, prompt), answers) in test.iter().zip(&prompts).zip(&samples) {
        let items: Vec<(&Conversation, &str)> = answers.iter().map(|x| (prompt, x.as_str())).collect();
        let r = rm.score(tok, &items);
        let feats: Vec<Features> = answers.iter().map(|x| features(task, x)).collect();
        let g: Vec<f32> = feats.iter().map(|f| panel.gold_score(f)).collect();
        by_blind.push(feats.iter().map(|f| blind_weights.score(f)).collect::<Vec<f32>>());
        let (right, n) = ranking_accuracy(&r, &g, panel.tie_margin);
        let e = ranking.entry(task.meta.family.name().to_string()).or_default();
        e.0 += right;
        e.1 += n;
        by_rm.push(r);
        by_gold.push(g);
    }
    let (right, pairs) = ranking.values().fold((0.0, 0), |(r, n), v| (r + v.0, n + v.1));

    let mut rows = vec![];
    let mut k = 1;
    while k <= cfg.n {
        let pick =
            |scores: &[Vec<f32>]| -> Vec<String> { best_of(scores, k).into_iter().zip(&samples).map(|(j, s)| s[j].clone()).collect() };
        let w: Vec<WinRate> = [&by_rm, &by_gold, &by_blind].iter().map(|s| judge(&panel, test, &pick(s), &base)).collect();
        rows.push(BestOf { k, reward_model: (&w[0]).into(), gold: (&w[1]).into(), blind: (&w[2]).into() });
        k *= 2;
    }
    let figures = Figures {
        stage: cfg.stage.clone(),
        n: cfg.n,
        temperature: cfg.temperature,
        prompts: test.len(),
        best_of: rows,
        rm_ranking_accuracy: right / pairs.max(1) as f64,
        rm_ranking_pairs: pairs,
        rm_ranking_by_family: ranking
            .iter()
            .map(|(f, (r, n))| (f.clone(), FamilyRanking { accuracy: r / (*n).max(1) as f64, pairs: *n }))
            .collect(),
    };
    run.record(Key::Stage("headroom"), &figures)?;
    let series =
        |f: fn(&BestOf) -> &Win| -> Vec<(f64, f64)> { figures.best_of.iter().map(|b| (b.k as f64, 100.0 * f(b).win_rate)).collect() };
    let even: Vec<(f64, f64)> = figures.best_of.iter().map(|b| (b.k as f64, 50.0)).collect();
    line_plot(
        &run.dir.plot("headroom.svg"),
        "best-of-k vs SFT: what picking among its own answers is worth",
        "k (answers to choose from)",
        "win rate vs SFT (%)",
        &[
            ("picked by the reward model", series(|b| &b.reward_model)),
            ("by the gold judge", series(|b| &b.gold)),
            ("by the gold judge, blind to facts", series(|b| &b.blind)),
            ("even", even),
        ],
    )?;
    Ok(figures)
}

impl Figures {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "headroom: best-of-k of {} answers ({} at T={}) vs SFT's single samples on {} held-out prompts (noise-free judge)\n  {:>3}  {:>14} {:>14} {:>14}",
            self.n, self.stage, self.temperature, self.prompts, "k", "reward model", "gold judge", "blind judge"
        );
        for b in &self.best_of {
            s += &format!(
                "\n  {:>3}  {:>13.1}% {:>13.1}% {:>13.1}%",
                b.k,
                100.0 * b.reward_model.win_rate,
                100.0 * b.gold.win_rate,
                100.0 * b.blind.win_rate
            );
        }
        s += &format!(
            "\n  the reward model orders {:.1}% of {} pairs of these answers as the gold judge does",
            100.0 * self.rm_ranking_accuracy,
            self.rm_ranking_pairs
        );
        s
    }
}
