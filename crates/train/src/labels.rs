//! Simulated labeling: sample several answers per task-suite prompt from a checkpoint, have the
//! simulated judge panel compare every pair, and store prompts, samples and verdicts in the
//! preference store (marked simulated). A share of pairs is labeled twice, by two different
//! judges, to measure the labelers' agreement the way InstructGPT did with its humans.

use std::collections::HashMap;
use std::time::Instant;

use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::sample::{GenOptions, SamplingParams};
use chatforge_data::chat::{encode_prompt_capped, Conversation};
use chatforge_data::tasks::Task;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::simulated::{features, Panel, PanelConfig};
use chatforge_feedback::{Choice, NewComparison, NewSample, Store};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelConfig {
    /// Prompts drawn from the suite's preference pool.
    pub prompts: usize,
    /// Answers sampled per prompt; every pair of them is compared (K·(K−1)/2 comparisons).
    pub samples_per_prompt: usize,
    pub max_new: usize,
    /// The k-th answer of each prompt is sampled at `temperatures[k % len]`: a spread of
    /// temperatures gives the judges answers of clearly different quality to compare.
    pub temperatures: Vec<f32>,
    pub top_p: f32,
    /// Share of pairs labeled by a second judge too (to measure agreement).
    pub overlap: f64,
    pub panel: PanelConfig,
    pub seed: u64,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            prompts: 500,
            samples_per_prompt: 4,
            max_new: 96,
            temperatures: vec![0.6, 1.0, 1.3, 1.6],
            top_p: 1.0,
            overlap: 0.2,
            panel: PanelConfig::default(),
            seed: 11,
        }
    }
}

/// What a labeling round did (`stages.labels` in report.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelOutcome {
    pub prompts: usize,
    pub samples: usize,
    pub comparisons: usize,
    /// Comparisons with a strict verdict (A or B): the Bradley–Terry pairs.
    pub pairs: usize,
    pub ties: usize,
    pub both_bad: usize,
    /// Share of doubly-labeled pairs on which the two judges gave the same verdict (two ties agree).
    pub simulated_agreement: f64,
    /// The same pairs on the reward model's terms: how often one judge's verdict predicts the
    /// other's strict verdict (see [`agreement`]); the figure to hold the reward model's accuracy
    /// against the noisy labels up to.
    pub strict_agreement: f64,
    pub agreement_pairs: usize,
    /// Share of strict verdicts that match the noise-free gold judge's.
    pub agreement_with_gold: f64,
    pub wall_s: f64,
}

/// Maps a prompt (its messages as JSON) to its task, so graders and judges can find the task of
/// a stored prompt.
pub fn task_index(tasks: &[Task]) -> HashMap<String, &Task> {
    tasks.iter().map(|t| (prompt_key(&t.prompt()), t)).collect()
}

pub fn prompt_key(c: &Conversation) -> String {
    serde_json::to_string(&c.messages).expect("messages serialize")
}

/// Samples `n` answers to each prompt (batched; per-answer seeds `seed + index`), with a progress
/// bar. The model has its built-in tools; an answer is its final turn's text.
#[allow(clippy::too_many_arguments)]
pub fn sample_answers(
    model: &Llama<Cpu>,
    tok: &Tokenizer,
    prompts: &[Conversation],
    n: usize,
    params: SamplingParams,
    max_new: usize,
    seed: u64,
    quiet: bool,
) -> Vec<Vec<String>> {
    let opts = GenOptions { max_new, params, stop_ids: tok.chat_stop_ids() };
    let cap = model.cfg.max_position_embeddings.saturating_sub(max_new).max(1);
    let encoded: Vec<Vec<u32>> = prompts.iter().map(|c| encode_prompt_capped(tok, c, cap)).collect();
    let jobs: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|i| (0..n).map(move |k| (i, k))).collect();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(jobs.len() as u64) };
    bar.set_style(ProgressStyle::with_template("sampling {bar:28.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").unwrap());
    let mut out = vec![Vec::with_capacity(n); prompts.len()];
    let started = Instant::now();
    let mut tokens = 0usize;
    for chunk in jobs.chunks(64) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|&(i, _)| encoded[i].clone()).collect();
        let seeds: Vec<u64> = chunk.iter().map(|&(i, k)| seed.wrapping_add((i * n + k) as u64)).collect();
        let toolbox = chatforge_data::tools::Toolbox::builtins();
        for (&(i, _), a) in chunk.iter().zip(crate::answer::answer_batch(model, tok, &ids, &opts, &seeds, &toolbox, |_, _| true)) {
            tokens += a.gen.tokens.len();
            out[i].push(a.answer.text);
        }
        bar.inc(chunk.len() as u64);
        bar.set_message(format!("{:.0} tok/s", tokens as f64 / started.elapsed().as_secs_f64()));
    }
    bar.finish_and_clear();
    out
}

/// One round of simulated labeling into `store`.
pub fn simulate(
    model: &Llama<Cpu>,
    model_name: &str,
    tok: &Tokenizer,
    tasks: &[Task],
    cfg: &LabelConfig,
    store: &mut Store,
    quiet: bool,
) -> Result<LabelOutcome> {
    let t0 = Instant::now();
    if tasks.is_empty() {
        return Err(Error::Input("no prompts to label: the task suite's preference pool is empty".into()));
    }
    if cfg.samples_per_prompt < 2 {
        return Err(Error::Input("simulated labeling compares answers: --samples-per-prompt must be at least 2".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.shuffle(&mut rng);
    order.truncate(cfg.prompts.min(tasks.len()));
    let chosen: Vec<&Task> = order.iter().map(|&i| &tasks[i]).collect();
    let prompts: Vec<Conversation> = chosen.iter().map(|t| t.prompt()).collect();
    if cfg.temperatures.is_empty() {
        return Err(Error::Input("no sampling temperatures given".into()));
    }
    let mut answers = vec![Vec::with_capacity(cfg.samples_per_prompt); prompts.len()];
    for k in 0..cfg.samples_per_prompt {
        let params = SamplingParams { temperature: cfg.temperatures[k % cfg.temperatures.len()], top_k: 0, top_p: cfg.top_p };
        let seed = cfg.seed.wrapping_add((k * prompts.len()) as u64);
        for (i, mut a) in sample_answers(model, tok, &prompts, 1, params, cfg.max_new, seed, quiet).into_iter().enumerate() {
            answers[i].push(a.remove(0));
        }
    }
    let panel = Panel::new(&cfg.panel);
    let sampling = |k: usize| serde_json::json!({"temperature": cfg.temperatures[k % cfg.temperatures.len()], "top_p": cfg.top_p, "max_tokens": cfg.max_new});
    let mut comparisons = Vec::new();
    let (mut doubled, mut gold_agree, mut strict) = (vec![], 0usize, 0usize);
    let mut samples = 0;
    for (p, (task, outs)) in chosen.iter().zip(&answers).enumerate() {
        let pid = store.add_prompt(&prompts[p], "suite:prefs")?;
        let new: Vec<NewSample> = outs
            .iter()
            .enumerate()
            .map(|(k, text)| NewSample {
                prompt_id: pid,
                model: model_name.into(),
                text: text.clone(),
                params: sampling(k),
                seed: cfg.seed.wrapping_add((k * prompts.len() + p) as u64),
            })
            .collect();
        let ids = store.add_samples(&new)?;
        samples += ids.len();
        let feats: Vec<_> = outs.iter().map(|a| features(task, a)).collect();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                // Random side, so position carries no signal.
                let (a, b) = if rng.random::<bool>() { (i, j) } else { (j, i) };
                let first = rng.random_range(0..panel.judges.len());
                let v = panel.verdict(&panel.judges[first], &feats[a], &feats[b], &mut rng);
                let gold = panel.gold_verdict(&feats[a], &feats[b]);
                if matches!(v, Choice::A | Choice::B) {
                    strict += 1;
                    gold_agree += (v == gold) as usize;
                }
                let cmp = |judge: usize, choice: Choice| NewComparison {
                    prompt_id: pid,
                    sample_a: ids[a],
                    sample_b: ids[b],
                    choice,
                    rater: panel.judges[judge].name.clone(),
                    simulated: true,
                    reason: None,
                };
                comparisons.push(cmp(first, v));
                if panel.judges.len() > 1 && rng.random::<f64>() < cfg.overlap {
                    let second = (first + 1 + rng.random_range(0..panel.judges.len() - 1)) % panel.judges.len();
                    let w = panel.verdict(&panel.judges[second], &feats[a], &feats[b], &mut rng);
                    doubled.push((v, w));
                    comparisons.push(cmp(second, w));
                }
            }
        }
    }
    store.add_comparisons(&comparisons)?;
    let count = |c: Choice| comparisons.iter().filter(|x| x.choice == c).count();
    let (simulated_agreement, strict_agreement) = agreement(&doubled);
    Ok(LabelOutcome {
        prompts: prompts.len(),
        samples,
        comparisons: comparisons.len(),
        pairs: count(Choice::A) + count(Choice::B),
        ties: count(Choice::Tie),
        both_bad: count(Choice::BothBad),
        simulated_agreement,
        strict_agreement,
        agreement_pairs: doubled.len(),
        agreement_with_gold: gold_agree as f64 / strict.max(1) as f64,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

/// Agreement of doubly-labeled comparisons, two ways: the share of verdict pairs that are equal
/// (a tie and a tie agree: InstructGPT's inter-labeler agreement), and, on the reward model's
/// terms, how well one judge's verdict predicts the other's strict (A or B) verdict, over every
/// strict verdict: 1 if the same, 0 if the opposite, ½ for a tie (a coin flip, since a reward
/// model's accuracy against the labels is scored on strict labels and it must pick a side).
pub fn agreement(doubled: &[(Choice, Choice)]) -> (f64, f64) {
    let same = doubled.iter().filter(|(v, w)| v == w).count();
    let strict = |c: &Choice| matches!(c, Choice::A | Choice::B);
    let (mut score, mut n) = (0.0, 0usize);
    for (v, w) in doubled {
        for (label, pred) in [(v, w), (w, v)] {
            if strict(label) {
                n += 1;
                score += if pred == label {
                    1.0
                } else if strict(pred) {
                    0.0
                } else {
                    0.5
                };
            }
        }
    }
    (same as f64 / doubled.len().max(1) as f64, score / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_by_hand() {
        use Choice::*;
        // Equal verdicts: (A,A) and (tie,tie) of 4. Strict labels: A,A (predicted 1, 1), A,B (0, 0),
        // A (predicted by a tie: ½) -> 2.5 of 5.
        let (same, strict) = agreement(&[(A, A), (A, B), (A, Tie), (Tie, Tie)]);
        assert_eq!((same, strict), (0.5, 0.5));
        assert_eq!(agreement(&[]), (0.0, 0.0));
        assert_eq!(agreement(&[(B, B), (A, A)]), (1.0, 1.0));
    }
}
