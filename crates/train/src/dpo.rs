//! Direct Preference Optimization (Rafailov et al., 2023): the policy learns from preference
//! pairs directly, against a frozen reference (the SFT model), with no reward model and no
//! sampling. Sigmoid loss per pair, with log-probs summed over the answer's tokens:
//!
//! `Δ = β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]`, `L = −log σ(Δ)`,
//!
//! so dL/d log π(c) = −β·σ(−Δ) and dL/d log π(r) = +β·σ(−Δ). β defaults to 0.1 (the paper's and
//! TRL's default). Ties carry no preference and are not used. Optionally (`ptx_coef`), the SFT
//! next-token loss on a few SFT rows joins every step, as in PPO-ptx: DPO lowers the likelihood
//! of rejected *and* chosen answers, and the PTX term holds on to what SFT taught.

use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_rundir::layout::STATE;
use chatforge_rundir::RunDir;

use chatforge_core::backend::IGNORE;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::lora::LoraConfig;
use chatforge_core::model::Llama;
use chatforge_data::chat::encode_prompt;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::Pair;
use chatforge_rundir::fs::sha256_hex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ckpt;
use crate::optim::{AdamW, OptimConfig, Schedule};
use crate::trainer::{self, LoopSpec, StepOut};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoConfig {
    pub beta: f32,
    /// Pairs per step.
    pub batch_pairs: usize,
    pub epochs: f64,
    pub optim: OptimConfig,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Weight of the SFT next-token loss on [`PTX_ROWS`] SFT rows mixed into every step (0: off),
    /// as PPO-ptx does: it keeps what SFT taught (JSON-only answers) from drifting.
    #[serde(default)]
    pub ptx_coef: f64,
    /// The matmuls' arithmetic (bf16 operands with fp32 accumulation, or fp32); weights,
    /// moments, norms, softmax, the loss and the optimizer stay fp32. Checkpoints saved before
    /// the field existed were fp32.
    #[serde(default)]
    pub precision: Precision,
    /// Train LoRA adapters on the frozen SFT model instead of every weight (`--lora`).
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

/// SFT rows (each `context` tokens, packed) in every step's PTX term.
pub const PTX_ROWS: usize = 4;

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            batch_pairs: 16,
            epochs: 1.0,
            optim: OptimConfig {
                lr: 1e-4,
                warmup_steps: 5,
                schedule: Schedule::Linear,
                min_lr_frac: 0.0,
                weight_decay: 0.0,
                ..Default::default()
            },
            eval_every: 25,
            checkpoint_every: 25,
            seed: 3,
            ptx_coef: 1.0,
            precision: auto_precision(),
            lora: None,
        }
    }
}

/// DPO's per-pair loss and gradients with respect to the policy's summed log-probs:
/// (loss, dL/dlogπ(chosen), dL/dlogπ(rejected)).
pub fn dpo_loss(pc: f64, pr: f64, ref_c: f64, ref_r: f64, beta: f64) -> (f64, f64, f64) {
    let d = beta * ((pc - ref_c) - (pr - ref_r));
    let s = 1.0 / (1.0 + d.exp()); // σ(−Δ)
    ((1.0 + (-d).exp()).ln(), -beta * s, beta * s)
}

/// One sequence for DPO: prompt + answer + `<|im_end|>`, and its targets (the answer's tokens
/// and `<|im_end|>`; IGNORE elsewhere), shifted for next-token prediction.
#[derive(Debug, Clone)]
pub struct Seq {
    pub ids: Vec<u32>,
    pub targets: Vec<u32>,
}

pub fn encode_seq(tok: &Tokenizer, prompt: &chatforge_data::chat::Conversation, answer: &str, context: usize) -> Seq {
    let p = encode_prompt(tok, prompt);
    let mut a = tok.encode(answer);
    a.push(tok.im_end_id());
    let mut ids = p.clone();
    ids.extend(&a);
    // Position i predicts ids[i + 1]; the loss covers the answer's tokens.
    let mut targets = vec![IGNORE; ids.len()];
    let from = p.len().saturating_sub(1);
    let n = ids.len();
    targets[from..n - 1].copy_from_slice(&ids[from + 1..]);
    if ids.len() > context {
        let cut = ids.len() - context;
        ids.drain(..cut);
        targets.drain(..cut);
    }
    Seq { ids, targets }
}

/// Right-pads sequences into `[B, T]` (T rounded up to 16): ids with 0, targets with IGNORE.
pub fn pad_seqs(seqs: &[&Seq], context: usize) -> (Vec<u32>, Vec<u32>, usize) {
    let t = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1).max(1).next_multiple_of(16).min(context);
    let mut ids = vec![0u32; seqs.len() * t];
    let mut tg = vec![IGNORE; seqs.len() * t];
    for (r, s) in seqs.iter().enumerate() {
        let n = s.ids.len().min(t);
        ids[r * t..r * t + n].copy_from_slice(&s.ids[..n]);
        tg[r * t..r * t + n].copy_from_slice(&s.targets[..n]);
    }
    (ids, tg, t)
}

/// Summed log-probs of each sequence's targets under `model`, 16 sequences at a time.
pub fn seq_logprobs(model: &mut Llama<Cpu>, seqs: &[Seq]) -> Vec<f64> {
    let ctx = model.cfg.max_position_embeddings;
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(16) {
        let refs: Vec<&Seq> = chunk.iter().collect();
        let (ids, tg, t) = pad_seqs(&refs, ctx);
        let lp = model.logprobs(&ids, &tg, chunk.len(), t);
        out.extend((0..chunk.len()).map(|r| lp[r * t..(r + 1) * t].iter().map(|&x| x as f64).sum::<f64>()));
    }
    out
}

/// [`seq_logprobs`] of each distinct sequence once (an answer is in up to K−1 pairs of its
/// prompt), shortest first so that a batch pads little; returned in the order of `seqs`.
pub fn distinct_logprobs(model: &mut Llama<Cpu>, seqs: &[&Seq]) -> Vec<f64> {
    let mut index: std::collections::HashMap<(&[u32], &[u32]), usize> = Default::default();
    let slot: Vec<usize> = seqs
        .iter()
        .map(|s| {
            let n = index.len();
            *index.entry((s.ids.as_slice(), s.targets.as_slice())).or_insert(n)
        })
        .collect();
    let mut distinct: Vec<(usize, Seq)> = vec![(0, Seq { ids: vec![], targets: vec![] }); index.len()];
    for (i, s) in seqs.iter().enumerate() {
        distinct[slot[i]] = (slot[i], (*s).clone());
    }
    distinct.sort_by_key(|(_, s)| s.ids.len());
    let (order, sorted): (Vec<usize>, Vec<Seq>) = distinct.into_iter().unzip();
    let mut by_slot = vec![0.0; order.len()];
    for (&k, lp) in order.iter().zip(seq_logprobs(model, &sorted)) {
        by_slot[k] = lp;
    }
    slot.iter().map(|&k| by_slot[k]).collect()
}

/// Preference pairs encoded, with the reference model's log-probs.
pub struct DpoData {
    pub chosen: Vec<Seq>,
    pub rejected: Vec<Seq>,
    pub ref_chosen: Vec<f64>,
    pub ref_rejected: Vec<f64>,
    pub sha256: String,
}

impl DpoData {
    /// Encodes the strict pairs and scores them under the reference model.
    pub fn new(tok: &Tokenizer, pairs: &[Pair], reference: &mut Llama<Cpu>) -> Result<DpoData> {
        let ctx = reference.cfg.max_position_embeddings;
        let strict: Vec<&Pair> = pairs.iter().filter(|p| p.label == 1.0 && p.chosen != p.rejected).collect();
        if strict.is_empty() {
            return Err(Error::Input("no strict preference pairs for DPO: label some first (chatforge label)".into()));
        }
        let chosen: Vec<Seq> = strict.iter().map(|p| encode_seq(tok, &p.prompt, &p.chosen, ctx)).collect();
        let rejected: Vec<Seq> = strict.iter().map(|p| encode_seq(tok, &p.prompt, &p.rejected, ctx)).collect();
        let all: Vec<&Seq> = chosen.iter().chain(&rejected).collect();
        let mut lp = distinct_logprobs(reference, &all);
        let ref_rejected = lp.split_off(chosen.len());
        let ref_chosen = lp;
        let mut bytes = Vec::new();
        for s in chosen.iter().chain(&rejected) {
            bytes.extend(s.ids.iter().flat_map(|x| x.to_le_bytes()));
            bytes.push(0xff);
        }
        Ok(DpoData { chosen, rejected, ref_chosen, ref_rejected, sha256: sha256_hex(&bytes) })
    }
}

/// The DPO run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoOutcome {
    pub steps: usize,
    pub pairs: usize,
    /// Share of pairs whose implicit reward margin is positive, at the end (training pairs).
    pub reward_accuracy: f64,
    pub wall_s: f64,
}

/// Trains `run/dpo` from `run/sft` (or resumes it). `ptx`: the SFT rows and the pad id for the
/// PTX term (used when `cfg.ptx_coef > 0`).
pub fn dpo(run: &RunDir, cfg: DpoConfig, data: &DpoData, ptx: Option<(&crate::sft::SftData, u32)>, quiet: bool) -> Result<DpoOutcome> {
    let mut data_sha = std::collections::BTreeMap::new();
    data_sha.insert("pairs".to_string(), data.sha256.clone());
    let n = data.chosen.len();
    let (mut model, mut opt, mut state, cfg) = match trainer::resume_dir(run, "dpo", None)? {
        Some(from) => {
            let saved: DpoConfig = ckpt::read_state(&from)?.config_as()?;
            let (model, opt, state) = ckpt::load(&from, saved.optim.clone())?;
            if state.data_sha256 != data_sha {
                return Err(Error::Checkpoint {
                    path: from.join(STATE),
                    msg: "the preference pairs changed; delete the dpo folder to start over".into(),
                });
            }
            (model, opt, state, saved)
        }
        None => {
            let mut model = load_model(Cpu, &run.stage("sft")).map_err(|e| Error::Input(format!("DPO starts from the SFT model: {e}")))?;
            if let Some(l) = &cfg.lora {
                model.add_lora(l, cfg.seed)?;
            }
            let mut cfg = cfg;
            let steps = ((n as f64 * cfg.epochs) / cfg.batch_pairs as f64).ceil().max(1.0) as usize;
            cfg.optim.warmup_steps = cfg.optim.warmup_steps.min(steps / 5);
            let opt = AdamW::new(&model, cfg.optim.clone());
            let mut state = trainer::fresh_state("dpo", steps, cfg.seed, serde_json::to_value(&cfg).unwrap(), data_sha);
            if cfg.lora.is_some() {
                state.lora_base = Some(ckpt::LoraBase::of(&run.stage("sft"))?);
            }
            (model, opt, state, cfg)
        }
    };
    // bf16 or fp32 matmuls, as the recipe says (a resumed run keeps its saved precision).
    model.be = Cpu::with_precision(cfg.precision);
    let ctx = model.cfg.max_position_embeddings;
    if !quiet {
        println!("dpo: {n} pairs, {} steps of {} pairs, beta {}, lr {}", state.total_steps, cfg.batch_pairs, cfg.beta, cfg.optim.lr);
    }
    let spec = LoopSpec {
        run,
        stage: "dpo",
        steps: state.total_steps,
        batch: cfg.batch_pairs * 2,
        context: ctx,
        grad_accum: 1,
        optim: &cfg.optim,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        quiet,
    };
    let beta = cfg.beta as f64;
    let mut last_acc = f64::NAN;
    let step_fn = |model: &mut Llama<Cpu>, step: usize| -> Result<StepOut> {
        let idx = trainer::epoch_order(n, cfg.batch_pairs, cfg.seed, step);
        let p = idx.len();
        let rows: Vec<&Seq> = idx.iter().map(|&i| &data.chosen[i]).chain(idx.iter().map(|&i| &data.rejected[i])).collect();
        let (ids, tg, t) = pad_seqs(&rows, ctx);
        let out = model.policy_forward(&ids, &tg, 2 * p, t, true);
        let sum = |r: usize| out.logp[r * t..(r + 1) * t].iter().map(|&x| x as f64).sum::<f64>();
        let mut dlogp = vec![0.0f32; 2 * p * t];
        let (mut loss, mut right, mut margin, mut kl) = (0.0, 0usize, 0.0, 0.0);
        for (k, &i) in idx.iter().enumerate() {
            let (pc, pr) = (sum(k), sum(p + k));
            let (l, gc, gr) = dpo_loss(pc, pr, data.ref_chosen[i], data.ref_rejected[i], beta);
            let d = beta * ((pc - data.ref_chosen[i]) - (pr - data.ref_rejected[i]));
            loss += l;
            right += (d > 0.0) as usize;
            margin += d;
            kl += pc - data.ref_chosen[i];
            for j in 0..t {
                if tg[k * t + j] != IGNORE {
                    dlogp[k * t + j] = (gc / p as f64) as f32;
                }
                if tg[(p + k) * t + j] != IGNORE {
                    dlogp[(p + k) * t + j] = (gr / p as f64) as f32;
                }
            }
        }
        model.policy_backward(&tg, &dlogp, None);
        let mut ptx_loss = f64::NAN;
        if let (Some((sft, pad)), true) = (ptx, cfg.ptx_coef > 0.0) {
            let sft_cfg = crate::sft::SftConfig { batch: PTX_ROWS, seed: cfg.seed, doc_mask: false, ..Default::default() };
            let (pid, ptg) = crate::sft::sft_batch(sft, &sft_cfg, ctx, pad, step, 0);
            let count = ptg.iter().filter(|&&x| x != IGNORE).count().max(1);
            ptx_loss = model.forward_backward(&pid, &ptg, PTX_ROWS, ctx, Some((cfg.ptx_coef / count as f64) as f32)).0 as f64;
        }
        let acc = right as f64 / p as f64;
        last_acc = acc;
        Ok(StepOut {
            loss: loss / p as f64,
            tokens: (2 * p * t) as u64,
            extra: json!({"reward_accuracy": acc, "reward_margin": margin / p as f64, "logratio_chosen": kl / p as f64, "ptx_loss": ptx_loss}),
        })
    };
    let stats = trainer::run_steps(&spec, &mut model, &mut opt, &mut state, step_fn, |_, _, _| Ok((json!({}), String::new())))?;
    chatforge_rundir::report::plot_stage_loss(run, "dpo", "DPO loss", "dpo_loss.svg")?;
    Ok(DpoOutcome { steps: state.step, pairs: n, reward_accuracy: last_acc, wall_s: stats.wall_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_logprobs_match_every_sequence_scored() {
        let cfg = chatforge_core::config::LlamaConfig::from_depth(1, 64, 32);
        let mut model = Llama::new(Cpu, cfg, 3);
        let seq = |ids: &[u32]| Seq { ids: ids.to_vec(), targets: ids[1..].iter().copied().chain([IGNORE]).collect() };
        let (a, b, c) = (seq(&[1, 2, 3, 4, 5]), seq(&[7, 8, 9]), seq(&[1, 2, 3]));
        let seqs = [&a, &b, &a, &c, &b, &a];
        let each = seq_logprobs(&mut model, &seqs.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
        let distinct = distinct_logprobs(&mut model, &seqs);
        assert_eq!(each.len(), distinct.len());
        for (x, y) in each.iter().zip(&distinct) {
            assert!((x - y).abs() < 1e-4, "{each:?} vs {distinct:?}");
        }
        assert!((each[0] - each[1]).abs() > 1e-3 && (each[0] - each[2]).abs() < 1e-4);
    }

    #[test]
    fn dpo_loss_by_hand() {
        // β = 0.1; policy − reference: chosen +2, rejected −1 → Δ = 0.3.
        let (l, gc, gr) = dpo_loss(-8.0, -12.0, -10.0, -11.0, 0.1);
        let s = 1.0 / (1.0 + 0.3f64.exp()); // σ(−0.3) ≈ 0.425557
        assert!((l - (1.0 + (-0.3f64).exp()).ln()).abs() < 1e-12 && (l - 0.554355).abs() < 1e-6);
        assert!((gc + 0.1 * s).abs() < 1e-12 && (gr - 0.1 * s).abs() < 1e-12);
    }
}
