//! Supervised fine-tuning: the base model learns to chat on ChatML conversations, with the loss
//! on assistant tokens only. Batches pack whole conversations into rows of the context length.

use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_rundir::layout::STATE;
use chatforge_rundir::RunDir;

use chatforge_core::backend::IGNORE;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::lora::LoraConfig;
use chatforge_core::model::Llama;
use chatforge_core::sample::{generate_batch, GenOptions, SamplingParams};
use chatforge_data::chat::{encode_for_training, encode_prompt_capped, keep_last, Conversation};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_rundir::fs::sha256_hex;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ckpt;
use crate::optim::{AdamW, OptimConfig, Schedule};
use crate::pretrain::Budget;
use crate::trainer::{self, LoopSpec};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftConfig {
    /// Rows per micro-batch (each row packs several conversations into the model's context).
    pub batch: usize,
    pub grad_accum: usize,
    pub steps: usize,
    pub optim: OptimConfig,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// The matmuls' arithmetic (bf16 operands with fp32 accumulation, or fp32); weights,
    /// moments, norms, softmax, the loss and the optimizer stay fp32. Checkpoints saved before
    /// the field existed were fp32.
    #[serde(default)]
    pub precision: Precision,
    /// Train LoRA adapters on the frozen base instead of every weight (`--lora`); the stage
    /// folder then holds the merged model and the adapters in PEFT's format.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// Conversations packed into a row attend only to themselves: each ends with the EOT
    /// token, and attention stops at it (`Llama::doc_sep`), as at inference, where a model
    /// answers one conversation at a time. Runs saved before the field existed did not.
    #[serde(default)]
    pub doc_mask: bool,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            batch: 8,
            grad_accum: 1,
            steps: 1200,
            optim: OptimConfig { lr: 3e-3, warmup_steps: 10, schedule: Schedule::Linear, min_lr_frac: 0.0, ..Default::default() },
            eval_every: 100,
            checkpoint_every: 100,
            seed: 1,
            precision: auto_precision(),
            lora: None,
            doc_mask: true,
        }
    }
}

/// Conversations encoded for training: ids and the loss mask of each.
pub struct SftData {
    pub train: Vec<(Vec<u32>, Vec<bool>)>,
    pub val: Vec<(Vec<u32>, Vec<bool>)>,
    /// sha256 over the encoded training data, recorded in the checkpoint's state.
    pub sha256: String,
}

impl SftData {
    pub fn new(tok: &Tokenizer, train: &[Conversation], val: &[Conversation]) -> Result<Self> {
        if train.is_empty() {
            return Err(Error::Input("no training conversations".into()));
        }
        let enc = |c: &[Conversation]| -> Vec<(Vec<u32>, Vec<bool>)> { c.iter().map(|c| encode_for_training(tok, c)).collect() };
        let (train, val) = (enc(train), enc(val));
        let mut bytes = Vec::new();
        for (ids, mask) in &train {
            bytes.extend(ids.iter().flat_map(|x| x.to_le_bytes()));
            bytes.extend(mask.iter().map(|&m| m as u8));
        }
        Ok(SftData { train, val, sha256: sha256_hex(&bytes) })
    }
}

/// Packs conversations into a row of `t + 1` tokens and returns (ids `[t]`, targets `[t]`): the
/// target of position i is token i+1 where the mask says the model learns it, else IGNORE.
/// With `sep`, each conversation is followed by it (not learned).
fn pack_row(
    convs: impl Iterator<Item = usize>,
    data: &[(Vec<u32>, Vec<bool>)],
    t: usize,
    pad: u32,
    sep: Option<u32>,
) -> (Vec<u32>, Vec<u32>) {
    let (mut ids, mut mask) = (Vec::with_capacity(t + 1), Vec::with_capacity(t + 1));
    for i in convs {
        if ids.len() > t {
            break;
        }
        ids.extend_from_slice(&data[i].0);
        mask.extend_from_slice(&data[i].1);
        if let Some(s) = sep {
            ids.push(s);
            mask.push(false);
        }
    }
    ids.resize(t + 1, pad);
    mask.resize(t + 1, false);
    let targets = (0..t).map(|i| if mask[i + 1] { ids[i + 1] } else { IGNORE }).collect();
    ids.truncate(t);
    (ids, targets)
}

/// The micro-batch of (step, micro): rows packed with conversations drawn by a ChaCha8 stream
/// seeded by (seed, step, micro).
pub fn sft_batch(data: &SftData, cfg: &SftConfig, t: usize, pad: u32, step: usize, micro: usize) -> (Vec<u32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((step as u64) * 1_000_003 + micro as u64));
    let n = data.train.len();
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..cfg.batch {
        let picks: Vec<usize> = (0..64).map(|_| rng.random_range(0..n)).collect();
        let (i, tg) = pack_row(picks.into_iter(), &data.train, t, pad, cfg.doc_mask.then_some(pad));
        ids.extend(i);
        targets.extend(tg);
    }
    (ids, targets)
}

/// Mean loss (nats per assistant token) over the val conversations, packed in order (each
/// followed by `model.doc_sep` where the model has one).
pub fn val_loss(model: &mut Llama<Cpu>, data: &SftData, batch: usize, pad: u32) -> f64 {
    let t = model.cfg.max_position_embeddings;
    let sep = model.doc_sep;
    let extra = sep.is_some() as usize;
    let (mut rows_ids, mut rows_tg) = (Vec::new(), Vec::new());
    let mut next = 0;
    while next < data.val.len() {
        // Whole conversations per row, in order.
        let start = next;
        let mut len = 0;
        while next < data.val.len() && (next == start || len + data.val[next].0.len() + extra <= t + 1) {
            len += data.val[next].0.len() + extra;
            next += 1;
        }
        let (i, tg) = pack_row(start..next, &data.val, t, pad, sep);
        rows_ids.push(i);
        rows_tg.push(tg);
    }
    let (mut nats, mut count) = (0.0f64, 0usize);
    for chunk in rows_ids.chunks(batch).zip(rows_tg.chunks(batch)) {
        let (mut ids, mut tg): (Vec<u32>, Vec<u32>) = (chunk.0.concat(), chunk.1.concat());
        ids.resize(batch * t, pad);
        tg.resize(batch * t, IGNORE);
        let lp = model.logprobs(&ids, &tg, batch, t);
        for (l, &y) in lp.iter().zip(&tg) {
            if y != IGNORE {
                nats -= *l as f64;
                count += 1;
            }
        }
    }
    nats / count.max(1) as f64
}

/// Greedy answers to prompts (conversations without their final assistant message), batched,
/// with the built-in tools.
pub fn answer_all(model: &Llama<Cpu>, tok: &Tokenizer, prompts: &[Conversation], max_new: usize) -> Vec<String> {
    let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let opts = GenOptions { max_new, params: greedy, stop_ids: tok.chat_stop_ids() };
    let cap = model.cfg.max_position_embeddings.saturating_sub(max_new);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(32) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|c| encode_prompt_capped(tok, c, cap)).collect();
        let seeds = vec![0; ids.len()];
        let toolbox = chatforge_data::tools::Toolbox::builtins();
        for a in crate::answer::answer_batch(model, tok, &ids, &opts, &seeds, &toolbox, |_, _| true) {
            out.push(a.answer.text);
        }
    }
    out
}

/// The SFT run's figures (`stages.sft` in report.json; the family scores are added by the caller).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftOutcome {
    pub steps: usize,
    pub tokens: u64,
    pub val_loss: f64,
    pub train_tokens_per_s: f64,
    pub wall_s: f64,
    /// Parameters the optimizer stepped (the adapters' with LoRA) and the model's total.
    pub trainable_params: usize,
    pub total_params: usize,
    /// The adapters' recipe, read from the trained model (a resumed run's own).
    pub lora: Option<LoraConfig>,
}

/// Runs at each eval step of SFT on the model being trained (`chatforge sft --eval-every N`):
/// returns figures for that step's metrics line and a short line to print.
pub type EvalHook<'a> = &'a mut dyn FnMut(&mut Llama<Cpu>, usize) -> Result<(serde_json::Value, String)>;

/// Fine-tunes `run/base` into `run/sft` (or resumes `run/sft`).
pub fn sft(run: &RunDir, cfg: SftConfig, budget: Budget, tok: &Tokenizer, data: &SftData, quiet: bool) -> Result<SftOutcome> {
    sft_with_hook(run, cfg, budget, tok, data, quiet, None)
}

/// [`sft`], with `hook` run at every eval step (every `cfg.eval_every` steps and at the end).
pub fn sft_with_hook(
    run: &RunDir,
    cfg: SftConfig,
    budget: Budget,
    tok: &Tokenizer,
    data: &SftData,
    quiet: bool,
    mut hook: Option<EvalHook>,
) -> Result<SftOutcome> {
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    let mut data_sha = std::collections::BTreeMap::new();
    data_sha.insert("sft_data".to_string(), data.sha256.clone());
    let pad = tok.eot_id();
    let (mut model, mut opt, mut state, cfg) = match trainer::resume_dir(run, "sft", None)? {
        Some(from) => {
            let saved: SftConfig = ckpt::read_state(&from)?.config_as()?;
            let (model, opt, state) = ckpt::load(&from, saved.optim.clone())?;
            if state.data_sha256 != data_sha {
                return Err(Error::Checkpoint {
                    path: from.join(STATE),
                    msg: "the SFT data differ from the data this checkpoint was trained on; delete the sft folder to start over".into(),
                });
            }
            say(format!("resuming SFT from step {}/{}", state.step, state.total_steps));
            (model, opt, state, saved)
        }
        None => {
            let base = run.stage("base");
            let mut model = load_model(Cpu::with_precision(cfg.precision), &base)
                .map_err(|e| Error::Input(format!("SFT starts from the base model: {e}")))?;
            let mut cfg = cfg;
            if let Some(l) = &cfg.lora {
                model.add_lora(l, cfg.seed)?;
            }
            let t = model.cfg.max_position_embeddings;
            cfg.steps = match budget {
                Budget::Steps(s) => s,
                Budget::Tokens(n) => n.div_ceil(cfg.batch * cfg.grad_accum * t),
                Budget::Seconds(secs) => {
                    let (ids, tg) = sft_batch(data, &cfg, t, pad, 0, 0);
                    let t0 = std::time::Instant::now();
                    model.forward_backward(&ids, &tg, cfg.batch, t, None);
                    let t1 = std::time::Instant::now();
                    model.forward_backward(&ids, &tg, cfg.batch, t, None);
                    let per = t1.elapsed().as_secs_f64().min(t1.duration_since(t0).as_secs_f64());
                    model.zero_grad();
                    ((secs * 0.9 / (per * 1.05 * cfg.grad_accum as f64)) as usize).max(1)
                }
            }
            .max(1);
            cfg.optim.warmup_steps = cfg.optim.warmup_steps.min(cfg.steps / 5);
            let opt = AdamW::new(&model, cfg.optim.clone());
            let mut state = trainer::fresh_state("sft", cfg.steps, cfg.seed, serde_json::to_value(&cfg).unwrap(), data_sha);
            if cfg.lora.is_some() {
                state.lora_base = Some(ckpt::LoraBase::of(&base)?);
            }
            (model, opt, state, cfg)
        }
    };
    // bf16 or fp32 matmuls, as the recipe says (a resumed run keeps its saved precision).
    model.be = Cpu::with_precision(cfg.precision);
    model.doc_sep = cfg.doc_mask.then_some(pad);
    let t = model.cfg.max_position_embeddings;
    say(format!(
        "sft: {} train / {} val conversations, {} steps of {} rows x {} tokens, lr {}",
        data.train.len(),
        data.val.len(),
        cfg.steps,
        cfg.batch * cfg.grad_accum,
        t,
        cfg.optim.lr
    ));
    if let Some(l) = &cfg.lora {
        let (trainable, total) = model.trainable_count();
        say(format!(
            "sft: LoRA r {} alpha {} on {}: {trainable} of {total} parameters train ({:.2} %)",
            l.r,
            l.alpha,
            l.targets.join(","),
            100.0 * trainable as f64 / total as f64
        ));
    }
    let spec = LoopSpec {
        run,
        stage: "sft",
        steps: cfg.steps,
        batch: cfg.batch,
        context: t,
        grad_accum: cfg.grad_accum,
        optim: &cfg.optim,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        quiet,
    };
    let mut last = f64::NAN;
    let stats = trainer::run_loop(
        &spec,
        &mut model,
        &mut opt,
        &mut state,
        |step, micro| sft_batch(data, &cfg, t, pad, step, micro),
        |model, step, _| {
            let vl = val_loss(model, data, cfg.batch, pad);
            last = vl;
            chatforge_rundir::report::plot_stage_loss(run, "sft", "SFT loss (assistant tokens)", "sft_loss.svg")?;
            let (mut figures, mut line) = (json!({"val_loss": vl}), format!("val {vl:.4} nats/assistant token"));
            if let Some(h) = hook.as_mut() {
                let (extra, said) = h(model, step)?;
                if let (Some(f), serde_json::Value::Object(e)) = (figures.as_object_mut(), extra) {
                    f.extend(e);
                }
                line += &format!("; {said}");
            }
            Ok((figures, line))
        },
    )?;
    if last.is_nan() {
        last = val_loss(&mut model, data, cfg.batch, pad);
    }
    chatforge_rundir::report::plot_stage_loss(run, "sft", "SFT loss (assistant tokens)", "sft_loss.svg")?;
    let (trainable_params, total_params) = model.trainable_count();
    Ok(SftOutcome {
        lora: model.lora_config(),
        trainable_params,
        total_params,
        steps: state.step,
        tokens: state.tokens_seen,
        val_loss: last,
        train_tokens_per_s: stats.tokens_per_s,
        wall_s: stats.wall_s,
    })
}

/// Per-family mean grades of a model on tasks, and the JSON-only adherence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scores {
    pub family: std::collections::BTreeMap<String, f64>,
    /// Share of JSON-only tasks answered with a JSON object holding the required keys.
    pub json_adherence: f64,
    pub n: usize,
}

/// A few-shot plain-text prompt for a base model that never saw the chat format:
/// `k` solved examples of the same family, then the task, each as `Q:` / `A:` lines.
fn few_shot_prompt(task: &chatforge_data::tasks::Task, shots: &[&chatforge_data::tasks::Task]) -> String {
    use chatforge_data::chat::Role;
    let render = |c: &Conversation, with_answer: bool| {
        let mut s = String::new();
        let n = c.messages.len();
        for (i, m) in c.messages.iter().enumerate() {
            let last = i + 1 == n;
            match m.role {
                Role::System => s += &format!("Instruction: {}\n", m.content),
                Role::User => s += &format!("Q: {}\n", m.content),
                // A base model sees answers, not the tool calls on the way to them.
                Role::Assistant if !m.tool_calls.is_empty() => {}
                Role::Assistant if !last || with_answer => s += &format!("A: {}\n", m.content),
                Role::Assistant | Role::Tool => {}
            }
        }
        s
    };
    let mut p = String::new();
    for s in shots {
        p += &render(&s.conversation, true);
        p += "\n";
    }
    p += &render(&task.prompt(), false);
    p += "A:";
    p
}

/// Scores `tasks` by greedy decoding. With `few_shot` (a pool of solved tasks), the model is
/// prompted in plain text with 3 examples of the family (for a base model); otherwise in ChatML.
pub fn score_tasks(
    model: &Llama<Cpu>,
    tok: &Tokenizer,
    tasks: &[chatforge_data::tasks::Task],
    few_shot: Option<&[chatforge_data::tasks::Task]>,
) -> (Scores, Vec<String>) {
    use chatforge_data::tasks::{grade, json_adherence};
    let answers = match few_shot {
        None => {
            let prompts: Vec<Conversation> = tasks.iter().map(|t| t.prompt()).collect();
            answer_all(model, tok, &prompts, 96)
        }
        Some(pool) => {
            let prompts: Vec<Vec<u32>> = tasks
                .iter()
                .map(|t| {
                    let shots: Vec<&chatforge_data::tasks::Task> = pool.iter().filter(|s| s.meta.family == t.meta.family).take(3).collect();
                    keep_last(tok.encode(&few_shot_prompt(t, &shots)), model.cfg.max_position_embeddings - 48)
                })
                .collect();
            let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
            let opts = GenOptions { max_new: 40, params: greedy, stop_ids: vec![tok.eot_id()] };
            let mut out = Vec::new();
            for chunk in prompts.chunks(32) {
                for a in generate_batch(model, chunk, &opts, &vec![0; chunk.len()], |_, _| true) {
                    let text = tok.decode(&a, true);
                    // The answer is the rest of the `A:` line.
                    out.push(text.split('\n').next().unwrap_or("").trim().to_string());
                }
            }
            out
        }
    };
    let mut sums: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    let (mut json_ok, mut json_n) = (0usize, 0usize);
    for (t, a) in tasks.iter().zip(&answers) {
        let e = sums.entry(t.meta.family.name().to_string()).or_default();
        e.0 += grade(t, a).score as f64;
        e.1 += 1;
        if let Some(ok) = json_adherence(t, a) {
            json_n += 1;
            json_ok += ok as usize;
        }
    }
    let scores = Scores {
        family: sums.into_iter().map(|(k, (s, n))| (k, s / n.max(1) as f64)).collect(),
        json_adherence: json_ok as f64 / json_n.max(1) as f64,
        n: tasks.len(),
    };
    (scores, answers)
}
