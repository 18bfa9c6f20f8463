//! The reward model: the SFT trunk with a scalar head (`score.weight`, HF
//! `LlamaForSequenceClassification`), trained on the store's preference pairs with the
//! Bradley–Terry loss. The reward of an answer is the head's output at its last token
//! (`<|im_end|>`).
//!
//! Loss per pair, d = r(chosen) − r(rejected), label y (1: chosen better; 0.5: a tie):
//! `L = −y·log σ(d) − (1−y)·log σ(−d)`, so dL/dd = σ(d) − y. Ties pull the two rewards together;
//! "both bad" verdicts give no pair (see `chatforge_feedback::store`).
//!
//! Held-out pairs are split by prompt (no prompt in both halves). Figures: accuracy against the
//! stored (noisy) labels, accuracy against the noise-free gold judge, and calibration (expected
//! calibration error of σ(d) over 10 bins).

use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_rundir::layout::STATE;
use chatforge_rundir::RunDir;
use std::path::Path;

use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_data::chat::{encode_prompt, Conversation};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::Pair;
use chatforge_rundir::fs::sha256_hex;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ckpt;
use crate::optim::{AdamW, OptimConfig, Schedule};
use crate::trainer::{self, LoopSpec, StepOut};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RmConfig {
    /// Prompts per step (all their answers are rows, all their comparisons pairs).
    pub batch_prompts: usize,
    pub epochs: f64,
    pub optim: OptimConfig,
    /// Share of prompts held out for evaluation.
    pub heldout: f64,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// The matmuls' arithmetic (bf16 operands with fp32 accumulation, or fp32); weights,
    /// moments, norms, softmax, the loss and the optimizer stay fp32. Checkpoints saved before
    /// the field existed were fp32.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for RmConfig {
    fn default() -> Self {
        RmConfig {
            batch_prompts: 8,
            epochs: 1.0,
            optim: OptimConfig {
                lr: 3e-4,
                warmup_steps: 10,
                schedule: Schedule::Cosine,
                min_lr_frac: 0.1,
                weight_decay: 0.0,
                ..Default::default()
            },
            heldout: 0.1,
            eval_every: 50,
            checkpoint_every: 50,
            seed: 5,
            precision: auto_precision(),
        }
    }
}

/// Tokens of one (prompt, answer) as the reward model reads it: the ChatML prompt, the answer,
/// `<|im_end|>`; cut from the left to fit the context.
pub fn encode_answer(tok: &Tokenizer, prompt: &Conversation, answer: &str, context: usize) -> Vec<u32> {
    let mut ids = encode_prompt(tok, prompt);
    ids.extend(tok.encode(answer));
    ids.push(tok.im_end_id());
    if ids.len() > context {
        ids.drain(..ids.len() - context);
    }
    ids
}

/// Right-pads sequences (with 0, `<|endoftext|>`) into one `[B, T]` batch, T rounded up to 16;
/// returns the ids, T and each row's last real position.
pub fn pad_rows(seqs: &[&[u32]], context: usize) -> (Vec<u32>, usize, Vec<usize>) {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1).next_multiple_of(16).min(context);
    let mut ids = vec![0u32; seqs.len() * t];
    let mut last = Vec::with_capacity(seqs.len());
    for (r, s) in seqs.iter().enumerate() {
        let s = &s[..s.len().min(t)];
        ids[r * t..r * t + s.len()].copy_from_slice(s);
        last.push(r * t + s.len().max(1) - 1);
    }
    (ids, t, last)
}

/// Rewards of token sequences under a model with a score head, 32 at a time.
pub fn rewards(model: &mut Llama<Cpu>, seqs: &[Vec<u32>]) -> Vec<f32> {
    let ctx = model.cfg.max_position_embeddings;
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(32) {
        let refs: Vec<&[u32]> = chunk.iter().map(|s| s.as_slice()).collect();
        let (ids, t, last) = pad_rows(&refs, ctx);
        let (_, values) = model.forward_heads(&ids, chunk.len(), t, false, false);
        let values = values.expect("a model with a score head");
        out.extend(last.iter().map(|&i| values[i]));
    }
    out
}

/// A trained reward model, ready to score answers.
pub struct RewardModel {
    pub model: Llama<Cpu>,
}

impl RewardModel {
    pub fn load(dir: &Path) -> Result<RewardModel> {
        let model = load_model(Cpu, dir).map_err(|e| Error::Input(format!("reward model: {e}")))?;
        if !model.cfg.is_classifier() {
            return Err(Error::Input(format!("{}: not a reward model (architectures {:?})", dir.display(), model.cfg.architectures)));
        }
        Ok(RewardModel { model })
    }

    /// Rewards of token sequences (each ending with `<|im_end|>`).
    pub fn score_ids(&mut self, seqs: &[Vec<u32>]) -> Vec<f32> {
        rewards(&mut self.model, seqs)
    }

    /// Rewards of answers to prompts.
    pub fn score(&mut self, tok: &Tokenizer, items: &[(&Conversation, &str)]) -> Vec<f32> {
        let ctx = self.model.cfg.max_position_embeddings;
        let seqs: Vec<Vec<u32>> = items.iter().map(|(p, a)| encode_answer(tok, p, a, ctx)).collect();
        self.score_ids(&seqs)
    }
}

/// The pairs of one prompt: its distinct answers (encoded once) and the comparisons among them,
/// as (better row, worse row, label). As InstructGPT did, every comparison of a prompt is
/// trained from a single forward pass over its K answers.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub rows: Vec<Vec<u32>>,
    pub pairs: Vec<(usize, usize, f32)>,
    /// The gold judge's verdict per pair (held-out only; None where it does not know the task):
    /// 1 (chosen better), 0 (rejected better), ½ (a tie).
    pub gold: Vec<Option<f32>>,
}

/// Pairs encoded for training and evaluation, grouped by prompt.
pub struct RmData {
    pub train: Vec<Group>,
    pub heldout: Vec<Group>,
    pub train_pairs: usize,
    pub heldout_pairs: usize,
    pub sha256: String,
}

/// Splits pairs by prompt into train and held-out (`frac` of prompts, seeded), returning indices.
pub fn split_by_prompt(pairs: &[Pair], frac: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut ids: Vec<i64> = pairs.iter().map(|p| p.prompt_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_held = ((ids.len() as f64 * frac).round() as usize).min(ids.len().saturating_sub(1));
    let held: std::collections::HashSet<i64> = ids[..n_held].iter().copied().collect();
    (0..pairs.len()).partition(|&i| !held.contains(&pairs[i].prompt_id))
}

fn group(tok: &Tokenizer, pairs: &[Pair], idx: &[usize], context: usize, gold: &impl Fn(&Pair) -> Option<f32>) -> Vec<Group> {
    let mut by_prompt: std::collections::BTreeMap<i64, (Group, std::collections::HashMap<String, usize>)> = Default::default();
    for &i in idx {
        let p = &pairs[i];
        let (g, rows) = by_prompt.entry(p.prompt_id).or_default();
        let mut row = |text: &str| -> usize {
            if let Some(&r) = rows.get(text) {
                return r;
            }
            g.rows.push(encode_answer(tok, &p.prompt, text, context));
            rows.insert(text.to_string(), g.rows.len() - 1);
            g.rows.len() - 1
        };
        let (a, b) = (row(&p.chosen), row(&p.rejected));
        if a == b {
            continue; // the same text on both sides: nothing to learn
        }
        g.pairs.push((a, b, p.label));
        g.gold.push(gold(p));
    }
    by_prompt.into_values().map(|(g, _)| g).filter(|g| !g.pairs.is_empty()).collect()
}

impl RmData {
    /// `gold(pair)` gives the gold judge's verdict for the held-out pairs.
    pub fn new(tok: &Tokenizer, pairs: &[Pair], context: usize, cfg: &RmConfig, gold: impl Fn(&Pair) -> Option<f32>) -> Result<RmData> {
        let (train_idx, held_idx) = split_by_prompt(pairs, cfg.heldout, cfg.seed);
        let train = group(tok, pairs, &train_idx, context, &|_| None);
        if train.is_empty() {
            return Err(Error::Input("no preference pairs to train on: label some first (chatforge label)".into()));
        }
        let heldout = group(tok, pairs, &held_idx, context, &gold);
        let mut bytes = Vec::new();
        for g in &train {
            for r in &g.rows {
                bytes.extend(r.iter().flat_map(|x| x.to_le_bytes()));
                bytes.push(0xff);
            }
            for &(a, b, y) in &g.pairs {
                bytes.extend((a as u32).to_le_bytes().into_iter().chain((b as u32).to_le_bytes()).chain(y.to_le_bytes()));
            }
        }
        let count = |gs: &[Group]| gs.iter().map(|g| g.pairs.len()).sum();
        Ok(RmData { train_pairs: count(&train), heldout_pairs: count(&heldout), train, heldout, sha256: sha256_hex(&bytes) })
    }
}

/// Held-out figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RmEval {
    /// Accuracy against the gold judge, on pairs where it has a strict preference.
    pub heldout_accuracy: f64,
    pub gold_pairs: usize,
    /// Accuracy against the stored (noisy) labels, strict pairs.
    pub heldout_accuracy_noisy: f64,
    /// The gold judge's own accuracy against those labels (its ties count ½): what a reward model
    /// that had learned the gold judge exactly would score against them.
    pub gold_accuracy_noisy: f64,
    pub heldout_pairs: usize,
    /// Expected calibration error of σ(r_chosen − r_rejected) against the stored labels.
    pub ece: f64,
    /// Reliability diagram: (mean confidence, accuracy, count) per bin of confidence.
    pub reliability: Vec<(f64, f64, usize)>,
    pub mean_loss: f64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Evaluates on held-out pairs.
pub fn evaluate(model: &mut Llama<Cpu>, data: &RmData) -> RmEval {
    let mut e = RmEval::default();
    let (mut right_noisy, mut n_noisy, mut right_gold, mut n_gold, mut loss, mut n) = (0usize, 0usize, 0usize, 0usize, 0.0f64, 0usize);
    let (mut gold_vs_labels, mut n_gold_labels) = (0.0f64, 0usize);
    let mut bins = vec![(0.0f64, 0.0f64, 0usize); 10];
    let seqs: Vec<Vec<u32>> = data.heldout.iter().flat_map(|g| g.rows.iter().cloned()).collect();
    let all = rewards(model, &seqs);
    let mut at = 0;
    for g in &data.heldout {
        let r = &all[at..at + g.rows.len()];
        at += g.rows.len();
        for (k, &(a, b, y)) in g.pairs.iter().enumerate() {
            let d = (r[a] - r[b]) as f64;
            let y = y as f64;
            loss += -(y * sigmoid(d).max(1e-12).ln() + (1.0 - y) * sigmoid(-d).max(1e-12).ln());
            n += 1;
            if y == 1.0 {
                n_noisy += 1;
                right_noisy += (d > 0.0) as usize;
                let conf = sigmoid(d.abs());
                let bin = (((conf - 0.5) / 0.05) as usize).min(9);
                bins[bin].0 += conf;
                bins[bin].1 += (d > 0.0) as u8 as f64;
                bins[bin].2 += 1;
            }
            match g.gold[k] {
                Some(gold) if gold != 0.5 => {
                    n_gold += 1;
                    right_gold += ((d > 0.0) == (gold == 1.0)) as usize;
                }
                _ => {}
            }
            if let (Some(gold), true) = (g.gold[k], y == 1.0) {
                n_gold_labels += 1;
                gold_vs_labels += gold as f64;
            }
        }
    }
    e.heldout_pairs = n_noisy;
    e.heldout_accuracy_noisy = right_noisy as f64 / n_noisy.max(1) as f64;
    e.gold_pairs = n_gold;
    e.heldout_accuracy = right_gold as f64 / n_gold.max(1) as f64;
    e.gold_accuracy_noisy = gold_vs_labels / n_gold_labels.max(1) as f64;
    e.mean_loss = loss / n.max(1) as f64;
    e.reliability = bins.iter().filter(|b| b.2 > 0).map(|b| (b.0 / b.2 as f64, b.1 / b.2 as f64, b.2)).collect();
    e.ece = bins.iter().filter(|b| b.2 > 0).map(|b| (b.0 - b.1).abs() / n_noisy.max(1) as f64).sum();
    e
}

/// The reward model run's figures (`stages.rm`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RmOutcome {
    pub steps: usize,
    pub train_pairs: usize,
    pub eval: RmEval,
    pub wall_s: f64,
}

/// Trains `run/rm` from `run/sft` (or resumes it).
pub fn train_rm(run: &RunDir, cfg: RmConfig, data: &RmData, quiet: bool) -> Result<RmOutcome> {
    let mut data_sha = std::collections::BTreeMap::new();
    data_sha.insert("pairs".to_string(), data.sha256.clone());
    let (mut model, mut opt, mut state, cfg) = match trainer::resume_dir(run, "rm", None)? {
        Some(from) => {
            let saved: RmConfig = ckpt::read_state(&from)?.config_as()?;
            let (model, opt, state) = ckpt::load(&from, saved.optim.clone())?;
            if state.data_sha256 != data_sha {
                return Err(Error::Checkpoint {
                    path: from.join(STATE),
                    msg: "the preference pairs differ from those this reward model was trained on; delete the rm folder to start over"
                        .into(),
                });
            }
            if !quiet {
                println!("resuming the reward model from step {}/{}", state.step, state.total_steps);
            }
            (model, opt, state, saved)
        }
        None => {
            let sft =
                load_model(Cpu, &run.stage("sft")).map_err(|e| Error::Input(format!("the reward model starts from the SFT model: {e}")))?;
            let model = sft.into_classifier();
            let mut cfg = cfg;
            let steps = ((data.train.len() as f64 * cfg.epochs) / cfg.batch_prompts as f64).ceil().max(1.0) as usize;
            cfg.optim.warmup_steps = cfg.optim.warmup_steps.min(steps / 5);
            let opt = AdamW::new(&model, cfg.optim.clone());
            let state = trainer::fresh_state("rm", steps, cfg.seed, serde_json::to_value(&cfg).unwrap(), data_sha);
            (model, opt, state, cfg)
        }
    };
    // bf16 or fp32 matmuls, as the recipe says (a resumed run keeps its saved precision).
    model.be = Cpu::with_precision(cfg.precision);
    let ctx = model.cfg.max_position_embeddings;
    if !quiet {
        println!(
            "rm: {} train pairs ({} prompts) / {} held-out pairs, {} steps of {} prompts, lr {}",
            data.train_pairs,
            data.train.len(),
            data.heldout_pairs,
            state.total_steps,
            cfg.batch_prompts,
            cfg.optim.lr
        );
    }
    let spec = LoopSpec {
        run,
        stage: "rm",
        steps: state.total_steps,
        batch: cfg.batch_prompts * 4,
        context: ctx,
        grad_accum: 1,
        optim: &cfg.optim,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        quiet,
    };
    let n = data.train.len();
    let step_fn = |model: &mut Llama<Cpu>, step: usize| -> Result<StepOut> {
        let groups: Vec<&Group> = trainer::epoch_order(n, cfg.batch_prompts, cfg.seed, step).into_iter().map(|i| &data.train[i]).collect();
        let rows: Vec<&[u32]> = groups.iter().flat_map(|g| g.rows.iter().map(|r| r.as_slice())).collect();
        let (ids, t, last) = pad_rows(&rows, ctx);
        let (_, values) = model.forward_heads(&ids, rows.len(), t, false, true);
        let values = values.expect("score head");
        let np: usize = groups.iter().map(|g| g.pairs.len()).sum();
        let mut dv = vec![0.0f32; rows.len() * t];
        let (mut loss, mut right, mut strict) = (0.0f64, 0usize, 0usize);
        let mut at = 0;
        for g in &groups {
            for &(a, b, y) in &g.pairs {
                let (ia, ib) = (last[at + a], last[at + b]);
                let d = (values[ia] - values[ib]) as f64;
                let y = y as f64;
                loss += -(y * sigmoid(d).max(1e-12).ln() + (1.0 - y) * sigmoid(-d).max(1e-12).ln());
                if y == 1.0 {
                    strict += 1;
                    right += (d > 0.0) as usize;
                }
                let gr = ((sigmoid(d) - y) / np as f64) as f32;
                dv[ia] += gr;
                dv[ib] -= gr;
            }
            at += g.rows.len();
        }
        model.backward_heads(None, Some(&dv));
        Ok(StepOut {
            loss: loss / np as f64,
            tokens: (rows.len() * t) as u64,
            extra: json!({"batch_accuracy": right as f64 / strict.max(1) as f64}),
        })
    };
    let mut last_eval = None;
    let stats = trainer::run_steps(&spec, &mut model, &mut opt, &mut state, step_fn, |model, _, _| {
        let e = evaluate(model, data);
        let line = format!(
            "held-out accuracy {:.1}% vs gold, {:.1}% vs labels, ECE {:.3}",
            100.0 * e.heldout_accuracy,
            100.0 * e.heldout_accuracy_noisy,
            e.ece
        );
        let fig =
            json!({"heldout_accuracy": e.heldout_accuracy, "heldout_accuracy_noisy": e.heldout_accuracy_noisy, "val_loss": e.mean_loss});
        last_eval = Some(e);
        Ok((fig, line))
    })?;
    let eval = match last_eval {
        Some(e) => e,
        None => evaluate(&mut model, data),
    };
    chatforge_rundir::report::plot_stage_loss(run, "rm", "Reward model loss (Bradley–Terry)", "rm_loss.svg")?;
    Ok(RmOutcome { steps: state.step, train_pairs: data.train_pairs, eval, wall_s: stats.wall_s })
}
