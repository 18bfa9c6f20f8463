//! Pretraining: tokenise a corpus into shards, train the Llama model from scratch with AdamW,
//! evaluate val loss and bits per byte, sample text, checkpoint, and resume exactly.

use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_rundir::layout::STATE;
use chatforge_rundir::RunDir;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chatforge_core::config::{LlamaConfig, ShapeOverrides};
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::sample::{generate, SamplingParams};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_data::{clean, shards};
use chatforge_rundir::fs::{sha256_file, write_atomic};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ckpt;
use crate::optim::{AdamW, OptimConfig};
use crate::trainer::{self, LoopSpec};
use crate::{Error, Result};
use chatforge_rundir::report;

/// Everything that defines a pretraining run (saved in `state.json`; a resumed run uses it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// The size dial: layers = depth, hidden = 64·depth (see `LlamaConfig::from_depth`).
    pub depth: usize,
    pub shape: ShapeOverrides,
    pub context: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Total optimizer steps (resolved from --steps, --tokens or --time-budget).
    pub steps: usize,
    pub optim: OptimConfig,
    pub eval_every: usize,
    /// Validation tokens scored at each eval.
    pub eval_tokens: usize,
    /// Tokens generated for the sample printed at each eval (0: none).
    pub sample_tokens: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// The matmuls' arithmetic (bf16 operands with fp32 accumulation, or fp32); weights,
    /// moments, norms, softmax, the loss and the optimizer stay fp32. Checkpoints saved before
    /// the field existed were fp32.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            depth: 4,
            shape: ShapeOverrides::default(),
            context: 256,
            batch: 8,
            grad_accum: 1,
            steps: 1000,
            optim: OptimConfig { lr: lr_for_depth(BASE_LR, 4), ..Default::default() },
            eval_every: 100,
            eval_tokens: 32 * 1024,
            sample_tokens: 64,
            checkpoint_every: 100,
            seed: 1337,
            precision: auto_precision(),
        }
    }
}

/// Peak learning rate of the models up to depth 2 (width 128).
pub const BASE_LR: f32 = 3e-3;

/// The peak learning rate for a depth: `base` up to width 128, then ∝ 1/width (as μP scales
/// Adam's step for hidden matrices). Measured on the bundled corpus (context 256, batch 8):
/// depth 4 at 1.5e-3 reached val loss 5.45 after 1.2M tokens and 5.06 after 2.4M; at 3e-3 it
/// reached 5.73 and 5.05 only after 4.5M. One recipe across sizes is what a scaling ladder
/// needs: with a fixed rate the larger rungs fall off the trend the small ones set.
pub fn lr_for_depth(base: f32, depth: usize) -> f32 {
    base * (2.0 / depth.max(1) as f32).min(1.0)
}

impl PretrainConfig {
    pub fn model_config(&self, vocab: usize) -> LlamaConfig {
        LlamaConfig::with_overrides(self.depth, vocab, self.context, &self.shape)
    }
    pub fn tokens_per_step(&self) -> usize {
        self.batch * self.context * self.grad_accum
    }
}

/// How long to train: a step count, a token count, or a wall-clock budget.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Budget {
    Steps(usize),
    Tokens(usize),
    Seconds(f64),
}

/// A tokenised corpus: train and val token streams (documents joined by `<|endoftext|>`), and the
/// number of UTF-8 bytes each token id stands for (0 for special tokens) for bits per byte.
pub struct TokenShards {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub token_bytes: Vec<u32>,
    pub eot: u32,
    pub data_sha256: std::collections::BTreeMap<String, String>,
}

/// The figures a pretraining run reports (`stages.base` in report.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainOutcome {
    pub steps: usize,
    pub tokens: u64,
    pub params: usize,
    pub val_loss: f64,
    pub val_bpb: f64,
    /// [`next_token_accuracy`] at the end (NaN in a report written before it was measured).
    #[serde(default = "nan")]
    pub val_accuracy: f64,
    pub unigram_val_bpb: f64,
    pub train_tokens_per_s: f64,
    pub mfu: f64,
    pub wall_s: f64,
    pub samples: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Corpus preparation

/// Reads a plain text file, refusing binary files and invalid UTF-8 with the file and line named.
pub fn read_text_file(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::Input(format!("{}: the file is empty", path.display())));
    }
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        let line = bytes[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(Error::Input(format!("{}: line {line}: a NUL byte; this looks like a binary file, not text", path.display())));
    }
    String::from_utf8(bytes).map_err(|e| {
        let pos = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::Input(format!("{}: line {line}: invalid UTF-8 at byte {pos}", path.display()))
    })
}

/// Train and val documents from `data`: a cleaned corpus folder (`train.jsonl` / `val.jsonl`
/// from `chatforge data`) or a plain text file, whose last ~10 % (cut at a blank line when there
/// is one) becomes the val document.
pub fn load_documents(data: &Path) -> Result<(Vec<String>, Vec<String>)> {
    if data.is_dir() {
        if !data.join("train.jsonl").exists() {
            return Err(Error::Input(format!(
                "{}: no train.jsonl here; run `chatforge data --input {} --out DIR` first and pass DIR, or pass a text file",
                data.display(),
                data.display()
            )));
        }
        let train: Vec<String> = clean::load_split(data, "train")?.into_iter().map(|d| d.text).collect();
        let val: Vec<String> = clean::load_split(data, "val")?.into_iter().map(|d| d.text).collect();
        if train.is_empty() || val.is_empty() {
            return Err(Error::Input(format!("{}: the corpus has an empty train or val split", data.display())));
        }
        return Ok((train, val));
    }
    let text = read_text_file(data)?;
    let target = text.len() * 9 / 10;
    // Cut after a blank line in the second half, else after a newline, else at 90 %.
    let cut = text[..target]
        .rfind("\n\n")
        .filter(|&c| c > text.len() / 2)
        .map(|c| c + 2)
        .or_else(|| text[..target].rfind('\n').map(|c| c + 1))
        .unwrap_or(target);
    let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let (train, val) = text.split_at(cut);
    if train.trim().is_empty() || val.trim().is_empty() {
        return Err(Error::Input(format!("{}: too little text to split into train and val", data.display())));
    }
    Ok((vec![train.to_string()], vec![val.to_string()]))
}

/// How the run gets its tokenizer: train a BPE, use raw bytes, or load a tokenizer.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TokenizerSpec {
    Bpe { vocab_size: usize },
    Bytes,
    File(PathBuf),
}

/// Copies of the tool-call format texts beside the corpus when the BPE is trained: enough for
/// their pairs to be merged among a 4,096-token vocabulary's merges.
pub const FORMAT_COPIES: usize = 400;

/// Prepares `R/tokenizer.json` and the token shards `R/tokens/{train,val}.bin` (reused when they
/// exist: a resumed run reads the very same tokens).
pub fn prepare_corpus(run: &RunDir, data: &Path, spec: &TokenizerSpec, verbose: bool) -> Result<(Tokenizer, TokenShards)> {
    std::fs::create_dir_all(run.tokens()).map_err(|e| Error::io(run.root(), e))?;
    let tok_path = run.tokenizer();
    let (train_path, val_path) = (run.train_tokens(), run.val_tokens());
    let have_shards = tok_path.exists() && train_path.exists() && val_path.exists();
    let tok = if tok_path.exists() {
        Tokenizer::load(&tok_path)?
    } else {
        let (train_docs, _) = load_documents(data)?;
        let t0 = Instant::now();
        let tok = match spec {
            // The corpus, and the chat format's tool calls (see `tools::format_texts`).
            TokenizerSpec::Bpe { vocab_size } => {
                let format = chatforge_data::tools::format_texts(FORMAT_COPIES);
                Tokenizer::train(train_docs.iter().map(|s| s.as_str()).chain(format.iter().map(|s| s.as_str())), *vocab_size)?
            }
            TokenizerSpec::Bytes => Tokenizer::bytes(),
            TokenizerSpec::File(p) => Tokenizer::load(p)?,
        };
        if verbose {
            println!("tokenizer: vocab {} ({:.1}s)", tok.vocab_size(), t0.elapsed().as_secs_f64());
        }
        tok.save(&tok_path)?;
        tok
    };
    let (train, val) = if have_shards {
        (shards::read(&train_path)?, shards::read(&val_path)?)
    } else {
        let (train_docs, val_docs) = load_documents(data)?;
        let t0 = Instant::now();
        let eot = tok.eot_id();
        let encode = |docs: &[String]| -> Vec<u32> {
            let refs: Vec<&str> = docs.iter().map(|s| s.as_str()).collect();
            let mut out = Vec::new();
            for ids in tok.encode_batch(&refs) {
                out.extend(ids);
                out.push(eot);
            }
            out
        };
        let (train, val) = (encode(&train_docs), encode(&val_docs));
        write_atomic(&train_path, &shards::to_bytes(&train))?;
        write_atomic(&val_path, &shards::to_bytes(&val))?;
        if verbose {
            println!("shards: {} train + {} val tokens ({:.1}s)", train.len(), val.len(), t0.elapsed().as_secs_f64());
        }
        (train, val)
    };
    let token_bytes = (0..tok.vocab_size() as u32)
        .map(|id| if tok.is_special(id) { 0 } else { tok.token_bytes(id).map_or(0, |b| b.len() as u32) })
        .collect();
    let mut data_sha256 = std::collections::BTreeMap::new();
    for (name, p) in [("tokenizer.json", &tok_path), ("tokens/train.bin", &train_path), ("tokens/val.bin", &val_path)] {
        data_sha256.insert(name.to_string(), sha256_file(p)?);
    }
    let corpus = TokenShards { train, val, token_bytes, eot: tok.eot_id(), data_sha256 };
    Ok((tok, corpus))
}

// ---------------------------------------------------------------------------------------------
// Batches and evaluation

/// The micro-batch of (step, micro): `batch` random windows of `context + 1` tokens, drawn from a
/// ChaCha8 stream seeded by (seed, step, micro) — a pure function, so resume is exact.
pub fn batch_at(tokens: &[u32], cfg: &PretrainConfig, step: usize, micro: usize) -> (Vec<u32>, Vec<u32>) {
    let t = cfg.context;
    let stream = (step as u64) * 1_000_003 + micro as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream);
    let (mut ids, mut targets) = (Vec::with_capacity(cfg.batch * t), Vec::with_capacity(cfg.batch * t));
    for _ in 0..cfg.batch {
        let start = rng.random_range(0..tokens.len() - t);
        ids.extend_from_slice(&tokens[start..start + t]);
        targets.extend_from_slice(&tokens[start + 1..start + t + 1]);
    }
    (ids, targets)
}

/// Val loss (nats per token) and bits per byte over the first `eval_tokens` of the val stream,
/// in non-overlapping windows. Special-token targets are left out of both.
pub fn evaluate(model: &mut Llama<Cpu>, corpus: &TokenShards, cfg: &PretrainConfig) -> (f64, f64) {
    let (b, t) = (cfg.batch, cfg.context);
    let windows = ((corpus.val.len() - 1) / t).min(cfg.eval_tokens.div_ceil(t)).max(1);
    let (mut nats, mut count, mut bytes) = (0.0f64, 0usize, 0u64);
    for chunk in (0..windows).collect::<Vec<_>>().chunks(b) {
        let mut ids = vec![corpus.eot; b * t];
        let mut targets = vec![chatforge_core::backend::IGNORE; b * t];
        for (row, &w) in chunk.iter().enumerate() {
            let s = w * t;
            let end = (s + t + 1).min(corpus.val.len());
            let n = end - s - 1;
            ids[row * t..row * t + n].copy_from_slice(&corpus.val[s..s + n]);
            for i in 0..n {
                let y = corpus.val[s + i + 1];
                if corpus.token_bytes[y as usize] > 0 {
                    targets[row * t + i] = y;
                }
            }
        }
        let lp = model.logprobs(&ids, &targets, b, t);
        for (i, &y) in targets.iter().enumerate() {
            if y != chatforge_core::backend::IGNORE {
                nats -= lp[i] as f64;
                count += 1;
                bytes += corpus.token_bytes[y as usize] as u64;
            }
        }
    }
    let loss = nats / count.max(1) as f64;
    let bpb = nats / std::f64::consts::LN_2 / bytes.max(1) as f64;
    (loss, bpb)
}

/// Next-token accuracy: the share of the val tokens [`evaluate`] scores whose target is the
/// model's most likely token (ties to the lowest id). A capability figure the scaling stage
/// predicts from the ladder, measured on the same 32,768 tokens as the loss.
pub fn next_token_accuracy(model: &mut Llama<Cpu>, corpus: &TokenShards, cfg: &PretrainConfig) -> f64 {
    let (b, t, v) = (cfg.batch, cfg.context, model.cfg.vocab_size);
    let windows = ((corpus.val.len() - 1) / t).min(cfg.eval_tokens.div_ceil(t)).max(1);
    let (mut hits, mut count) = (0usize, 0usize);
    for chunk in (0..windows).collect::<Vec<_>>().chunks(b) {
        let mut ids = vec![corpus.eot; b * t];
        for (row, &w) in chunk.iter().enumerate() {
            let s = w * t;
            let n = (s + t + 1).min(corpus.val.len()) - s - 1;
            ids[row * t..row * t + n].copy_from_slice(&corpus.val[s..s + n]);
        }
        let logits = model.forward(&ids, b, t); // [b·t, V]
        for (row, &w) in chunk.iter().enumerate() {
            let s = w * t;
            let n = (s + t + 1).min(corpus.val.len()) - s - 1;
            for i in 0..n {
                let y = corpus.val[s + i + 1];
                if corpus.token_bytes[y as usize] == 0 {
                    continue;
                }
                let l = &logits[(row * t + i) * v..(row * t + i + 1) * v];
                let best = l.iter().enumerate().fold(0, |m, (j, &x)| if x > l[m] { j } else { m });
                hits += usize::from(best == y as usize);
                count += 1;
            }
        }
    }
    hits as f64 / count.max(1) as f64
}

fn nan() -> f64 {
    f64::NAN
}

/// Bits per byte of the val stream under the train stream's unigram distribution (add-one
/// smoothing): the baseline a model that ignores context would reach.
pub fn unigram_bpb(corpus: &TokenShards) -> f64 {
    let v = corpus.token_bytes.len();
    let mut counts = vec![1.0f64; v];
    for &x in &corpus.train {
        counts[x as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let (mut nats, mut bytes) = (0.0, 0u64);
    for &y in &corpus.val[1..] {
        if corpus.token_bytes[y as usize] > 0 {
            nats -= (counts[y as usize] / total).ln();
            bytes += corpus.token_bytes[y as usize] as u64;
        }
    }
    nats / std::f64::consts::LN_2 / bytes.max(1) as f64
}

fn sample_text(model: &Llama<Cpu>, tok: &Tokenizer, corpus: &TokenShards, n: usize, seed: u64) -> String {
    // Prompt: the first line of the val text (a person can judge the continuation).
    let prompt: Vec<u32> = corpus.val.iter().copied().take(8).collect();
    let params = SamplingParams { temperature: 0.8, top_k: 40, top_p: 1.0 };
    let out = generate(model, &prompt, n, &params, &[corpus.eot], seed);
    format!("{}{}", tok.decode(&prompt, true), tok.decode(&out, true))
}

// ---------------------------------------------------------------------------------------------
// The training loop

/// Options that are about this invocation, not the run.
#[derive(Debug, Clone, Default)]
pub struct PretrainOptions {
    /// Load this checkpoint folder instead of `R/base` (e.g. `R/base.prev` after corruption).
    pub resume_from: Option<PathBuf>,
    pub quiet: bool,
}

/// Seconds one optimizer step takes for this config, measured on a throwaway forward+backward.
fn calibrate_step_seconds(model: &mut Llama<Cpu>, corpus: &TokenShards, cfg: &PretrainConfig) -> f64 {
    let (ids, targets) = batch_at(&corpus.train, cfg, 0, 0);
    let mut best = f64::MAX;
    for _ in 0..2 {
        let t = Instant::now();
        model.forward_backward(&ids, &targets, cfg.batch, cfg.context, None);
        best = best.min(t.elapsed().as_secs_f64());
    }
    model.zero_grad();
    best * cfg.grad_accum as f64 * 1.03 // + optimizer step
}

/// Trains (or resumes) the base model of run folder `run`. `cfg.steps` is replaced by what
/// `budget` resolves to on a fresh run; a resumed run keeps its saved configuration.
pub fn pretrain(
    run: &RunDir,
    cfg: PretrainConfig,
    budget: Budget,
    tok: &Tokenizer,
    corpus: &TokenShards,
    opts: &PretrainOptions,
) -> Result<PretrainOutcome> {
    let say = |s: String| {
        if !opts.quiet {
            println!("{s}");
        }
    };
    if corpus.train.len() <= cfg.context + 1 || corpus.val.len() < 2 {
        return Err(Error::Input(format!("the corpus is too small: {} train tokens for a context of {}", corpus.train.len(), cfg.context)));
    }
    let (mut model, mut opt, mut state, cfg) = match trainer::resume_dir(run, "base", opts.resume_from.as_deref())? {
        Some(from) => {
            let saved: PretrainConfig = ckpt::read_state(&from)?.config_as()?;
            let (model, opt, state) = ckpt::load(&from, saved.optim.clone())?;
            if state.data_sha256 != corpus.data_sha256 {
                return Err(Error::Checkpoint {
                    path: from.join(STATE),
                    msg: "the tokenizer or token shards differ from the ones this run was trained on".into(),
                });
            }
            if state.step >= saved.steps {
                // Already trained: report what the finished run measured.
                if let Ok(mut done) =
                    serde_json::from_value::<PretrainOutcome>(report::Report::load(run).section(report::Key::Stage("base")).clone())
                {
                    say(format!("{}: the base model is already trained ({} steps)", run.root().display(), state.step));
                    if done.val_accuracy.is_nan() {
                        let mut model = model;
                        model.be = Cpu::with_precision(saved.precision);
                        done.val_accuracy = next_token_accuracy(&mut model, corpus, &saved);
                        report::record(run, report::Key::Stage("base"), &done)?;
                    }
                    return Ok(done);
                }
            }
            say(format!("resuming {} from step {}/{} ({})", run.root().display(), state.step, state.total_steps, from.display()));
            (model, opt, state, saved)
        }
        None => {
            let mut cfg = cfg;
            let mc = cfg.model_config(tok.vocab_size());
            mc.validate()?;
            check_memory(&mc, &cfg)?;
            say(format!(
                "model: {} layers, hidden {}, {} heads ({} kv), mlp {}, context {}, vocab {}: {:.2}M parameters",
                mc.num_hidden_layers,
                mc.hidden_size,
                mc.num_attention_heads,
                mc.kv_heads(),
                mc.intermediate_size,
                cfg.context,
                mc.vocab_size,
                mc.num_params() as f64 / 1e6
            ));
            let mut model = Llama::new(Cpu::with_precision(cfg.precision), mc, cfg.seed);
            cfg.steps = match budget {
                Budget::Steps(s) => s,
                Budget::Tokens(n) => n.div_ceil(cfg.tokens_per_step()),
                Budget::Seconds(secs) => {
                    let per_step = calibrate_step_seconds(&mut model, corpus, &cfg);
                    // Leave room for evals (~1/3 the cost of a train token) and checkpoints.
                    let evals = 1.0 + (cfg.eval_tokens as f64 / cfg.tokens_per_step() as f64) / 3.0 / cfg.eval_every.max(1) as f64;
                    ((secs * 0.95 / (per_step * evals)) as usize).max(1)
                }
            }
            .max(1);
            cfg.optim.warmup_steps = cfg.optim.warmup_steps.min(cfg.steps / 5);
            let opt = AdamW::new(&model, cfg.optim.clone());
            let state = trainer::fresh_state("base", cfg.steps, cfg.seed, serde_json::to_value(&cfg).unwrap(), corpus.data_sha256.clone());
            (model, opt, state, cfg)
        }
    };
    // bf16 or fp32 matmuls, as the recipe says (a resumed run keeps its saved precision).
    model.be = Cpu::with_precision(cfg.precision);
    say(format!(
        "config: steps {}, batch {} x context {} x accum {} = {} tokens/step, lr {}, warmup {}, {:?} decay, weight decay {}, clip {}, seed {}",
        cfg.steps,
        cfg.batch,
        cfg.context,
        cfg.grad_accum,
        cfg.tokens_per_step(),
        cfg.optim.lr,
        cfg.optim.warmup_steps,
        cfg.optim.schedule,
        cfg.optim.weight_decay,
        cfg.optim.grad_clip,
        cfg.seed
    ));
    let spec = LoopSpec {
        run,
        stage: "base",
        steps: cfg.steps,
        batch: cfg.batch,
        context: cfg.context,
        grad_accum: cfg.grad_accum,
        optim: &cfg.optim,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        quiet: opts.quiet,
    };
    let mut last = (f64::NAN, f64::NAN);
    let mut samples = Vec::new();
    let stats = trainer::run_loop(
        &spec,
        &mut model,
        &mut opt,
        &mut state,
        |step, micro| batch_at(&corpus.train, &cfg, step, micro),
        |model, step, _| {
            let (vl, bpb) = evaluate(model, corpus, &cfg);
            last = (vl, bpb);
            let mut line = format!("val {vl:.4} nats/token, {bpb:.4} bits/byte");
            if cfg.sample_tokens > 0 {
                let s = sample_text(model, tok, corpus, cfg.sample_tokens, cfg.seed + step as u64);
                line += &format!("\n  sample: {}", s.replace('\n', "\n          "));
                if step == cfg.steps {
                    samples.push(s);
                }
            }
            plot_loss(run)?;
            Ok((json!({"val_loss": vl, "val_bpb": bpb}), line))
        },
    )?;
    if last.0.is_nan() {
        last = evaluate(&mut model, corpus, &cfg);
    }
    plot_loss(run)?;
    for i in 0..3u64 {
        if samples.len() < 3 {
            samples.push(sample_text(&model, tok, corpus, cfg.sample_tokens.max(48), cfg.seed + 17 * (i + 1)));
        }
    }
    let outcome = PretrainOutcome {
        steps: state.step,
        tokens: state.tokens_seen,
        params: model.cfg.num_params(),
        val_loss: last.0,
        val_bpb: last.1,
        val_accuracy: next_token_accuracy(&mut model, corpus, &cfg),
        unigram_val_bpb: unigram_bpb(corpus),
        train_tokens_per_s: stats.tokens_per_s,
        mfu: stats.mfu,
        wall_s: stats.wall_s,
        samples,
    };
    report::record(run, report::Key::Stage("base"), &outcome)?;
    Ok(outcome)
}

/// Refuses a shape whose training would not fit in the memory this machine has available.
fn check_memory(mc: &LlamaConfig, cfg: &PretrainConfig) -> Result<()> {
    let (n, d, f, l) = ((cfg.batch * cfg.context) as f64, mc.hidden_size as f64, mc.intermediate_size as f64, mc.num_hidden_layers as f64);
    let heads = mc.num_attention_heads as f64;
    // weights + grads + 2 moments (+ the bf16 packed weights, half a copy); per-layer
    // activations; attention probabilities; logits.
    let packed = if cfg.precision == Precision::Bf16 { 0.5 } else { 0.0 };
    let bytes = 4.0
        * ((4.0 + packed) * mc.num_params() as f64
            + l * (8.0 * n * d + 3.0 * n * f + heads * n * cfg.context as f64)
            + 12.0 * n * d
            + 2.0 * n * mc.vocab_size as f64);
    let avail = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb * 1024.0);
    if let Some(avail) = avail {
        if bytes > 0.9 * avail {
            return Err(Error::Input(format!(
                "this shape needs ~{:.1} GiB to train but {:.1} GiB is available; lower --depth, --batch or --context (or use --grad-accum)",
                bytes / (1u64 << 30) as f64,
                avail / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

/// `R/plots/loss.svg`: train loss per step and val loss at each eval.
pub fn plot_loss(run: &RunDir) -> Result<()> {
    Ok(report::plot_stage_loss(run, "base", "pretraining loss", "loss.svg")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chatforge-pretrain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn bad_text_files_are_named_with_their_line() {
        let e = read_text_file(&write("bin.txt", b"hello\nwor\0ld")).unwrap_err().to_string();
        assert!(e.contains("bin.txt") && e.contains("line 2") && e.contains("binary"), "{e}");
        let e = read_text_file(&write("utf8.txt", b"ok\nok\n\xff\xfe")).unwrap_err().to_string();
        assert!(e.contains("utf8.txt") && e.contains("line 3") && e.contains("UTF-8"), "{e}");
        let e = read_text_file(&write("empty.txt", b"")).unwrap_err().to_string();
        assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
        let e = load_documents(&write("tiny.txt", b"x")).unwrap_err().to_string();
        assert!(e.contains("too little text"), "{e}");
    }

    #[test]
    fn a_text_file_splits_into_train_and_val_at_a_paragraph() {
        let text = (0..100).map(|i| format!("Line {i} of the play.\n\n")).collect::<String>();
        let (train, val) = load_documents(&write("play.txt", text.as_bytes())).unwrap();
        assert_eq!(train.len(), 1);
        assert!(val[0].starts_with("Line 9"), "{}", &val[0][..20]);
        assert_eq!(train[0].len() + val[0].len(), text.len());
    }

    #[test]
    fn batches_are_a_pure_function_of_step_and_micro() {
        let tokens: Vec<u32> = (0..1000).collect();
        let cfg = PretrainConfig { context: 16, batch: 3, ..Default::default() };
        let (a, ta) = batch_at(&tokens, &cfg, 5, 1);
        assert_eq!((a.clone(), ta.clone()), batch_at(&tokens, &cfg, 5, 1));
        assert_ne!(a, batch_at(&tokens, &cfg, 6, 1).0);
        for (x, y) in a.iter().zip(&ta) {
            assert_eq!(x + 1, *y, "targets are the next tokens");
        }
    }
}
