//! The training loop every stage shares: micro-batches with gradient accumulation, AdamW with
//! the schedule, metrics, progress bar, periodic evals and checkpoints, and resume bookkeeping.

use chatforge_rundir::layout::STATE;
use chatforge_rundir::RunDir;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chatforge_core::backend::{Precision, IGNORE};
use chatforge_core::cpu::{bf16, Cpu};
use chatforge_core::model::Llama;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::bench::matmul_peak_gflops;
use crate::ckpt::{self, TrainState};
use crate::optim::{AdamW, OptimConfig};
use crate::{Error, Result};
use chatforge_rundir::report;

/// The loop's knobs, taken from a stage's own config.
pub struct LoopSpec<'a> {
    pub run: &'a RunDir,
    /// Stage name: the metrics tag and the checkpoint folder `run/<stage>`.
    pub stage: &'a str,
    pub steps: usize,
    /// Rows per micro-batch and their length.
    pub batch: usize,
    pub context: usize,
    pub grad_accum: usize,
    pub optim: &'a OptimConfig,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub quiet: bool,
}

impl LoopSpec<'_> {
    pub fn dir(&self) -> PathBuf {
        self.run.stage(self.stage)
    }
}

/// Throughput of the loop as run (data, evals and checkpoints included).
pub struct LoopStats {
    pub wall_s: f64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub mfu: f64,
}

/// Prints a line above the progress bar (or plainly when there is no terminal).
pub fn say(bar: &ProgressBar, quiet: bool, line: &str) {
    if quiet {
        return;
    }
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// The line a training stage prints about its arithmetic.
pub fn precision_line(stage: &str, p: Precision) -> String {
    match p {
        Precision::Bf16 => format!(
            "{stage}: bf16 matmuls with fp32 accumulation ({}), fp32 weights, norms, softmax, loss and AdamW",
            if bf16::native() { "AVX512-BF16" } else { "emulated: this CPU has no AVX512-BF16" }
        ),
        Precision::Fp32 => format!(
            "{stage}: fp32 throughout{}",
            if bf16::native() {
                let (x, margin) = (chatforge_core::cpu::bf16_speedup(), chatforge_core::cpu::BF16_MARGIN);
                let why = if x < margin { format!(", under the {margin:.2}x it takes to be the default") } else { String::new() };
                format!(" (this CPU's AVX512-BF16 matmul measured {x:.2}x fp32's{why}; --precision bf16 runs it)")
            } else {
                " (this CPU has no AVX512-BF16)".to_string()
            }
        ),
    }
}

/// What one optimizer step of a stage computed (its gradients are in the model).
pub struct StepOut {
    pub loss: f64,
    /// Tokens the step processed (for tokens/s).
    pub tokens: u64,
    /// More figures for metrics.jsonl (e.g. a reward model's batch accuracy).
    pub extra: Value,
}

/// Runs steps `state.step..spec.steps` of a next-token loss. `batch(step, micro)` gives a
/// micro-batch (ids, targets with IGNORE where no loss is taken); it must be a pure function of
/// its arguments for exact resume. `eval(model, step)` returns figures for metrics.jsonl and a
/// line to print.
pub fn run_loop(
    spec: &LoopSpec,
    model: &mut Llama<Cpu>,
    opt: &mut AdamW<Cpu>,
    state: &mut TrainState,
    mut batch: impl FnMut(usize, usize) -> (Vec<u32>, Vec<u32>),
    eval: impl FnMut(&mut Llama<Cpu>, usize, &ProgressBar) -> Result<(Value, String)>,
) -> Result<LoopStats> {
    let (b, t, accum) = (spec.batch, spec.context, spec.grad_accum);
    let step_fn = |model: &mut Llama<Cpu>, step: usize| -> Result<StepOut> {
        let micro: Vec<(Vec<u32>, Vec<u32>)> = (0..accum).map(|m| batch(step, m)).collect();
        // The loss is the mean over every counted target of the whole step.
        let count: usize = micro.iter().map(|(_, t)| t.iter().filter(|&&x| x != IGNORE).count()).sum();
        let scale = 1.0 / count.max(1) as f32;
        let mut loss_sum = 0.0f64;
        for (ids, targets) in &micro {
            let (l, n) = model.forward_backward(ids, targets, b, t, Some(scale));
            loss_sum += l as f64 * n as f64;
        }
        Ok(StepOut { loss: loss_sum / count.max(1) as f64, tokens: (b * t * accum) as u64, extra: json!({}) })
    };
    run_steps(spec, model, opt, state, step_fn, eval)
}

/// Runs steps `state.step..spec.steps` of any loss: `step_fn(model, step)` computes the step's
/// gradients (into zeroed `g`) and must be a pure function of the model and `step` for exact
/// resume; then AdamW steps, metrics are appended, evals and checkpoints run on schedule.
pub fn run_steps(
    spec: &LoopSpec,
    model: &mut Llama<Cpu>,
    opt: &mut AdamW<Cpu>,
    state: &mut TrainState,
    mut step_fn: impl FnMut(&mut Llama<Cpu>, usize) -> Result<StepOut>,
    mut eval: impl FnMut(&mut Llama<Cpu>, usize, &ProgressBar) -> Result<(Value, String)>,
) -> Result<LoopStats> {
    let dir = spec.dir();
    report::truncate_metrics(spec.run, spec.stage, state.step)?;
    // MFU is against the matmul peak measured here, at the start and again at the end (the
    // larger of the two, so a busy machine at one moment does not inflate it).
    let mut peak = matmul_peak_gflops(1024, model.be.precision);
    let flops_per_token = model.cfg.train_flops_per_token(spec.context);
    let bar = if spec.quiet { ProgressBar::hidden() } else { ProgressBar::new(spec.steps as u64) };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{} {{bar:28.cyan/blue}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}",
            spec.stage
        ))
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_position(state.step as u64);
    say(&bar, spec.quiet, &precision_line(spec.stage, model.be.precision));
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut loop_tokens = 0u64;
    while state.step < spec.steps {
        let step = state.step;
        let t0 = Instant::now();
        model.zero_grad();
        let out = step_fn(model, step)?;
        let loss = out.loss;
        if !loss.is_finite() {
            return Err(Error::Diverged(format!("loss is {loss} at step {}; the last good checkpoint is {}", step + 1, dir.display())));
        }
        let lr = spec.optim.lr_at(step, spec.steps);
        let norm = opt.step(model, lr);
        let dt = t0.elapsed().as_secs_f64();
        let tokens = out.tokens;
        state.step += 1;
        state.data_cursor = state.step;
        state.tokens_seen += tokens;
        loop_tokens += tokens;
        let tps = tokens as f64 / dt;
        let mfu = tps * flops_per_token / 1e9 / peak;
        let mut record = json!({"stage": spec.stage, "step": state.step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens": state.tokens_seen, "tokens_per_s": tps});
        if let (Some(r), Some(extra)) = (record.as_object_mut(), out.extra.as_object()) {
            r.extend(extra.clone());
        }
        report::append_metrics(spec.run, &record)?;
        bar.set_position(state.step as u64);
        bar.set_message(format!("loss {loss:.4} | {tps:.0} tok/s | MFU {:.0}%", 100.0 * mfu));
        let last = state.step == spec.steps;
        if state.step.is_multiple_of(spec.eval_every.max(1)) || last {
            let (mut figures, line) = eval(model, state.step, &bar)?;
            figures["stage"] = json!(spec.stage);
            figures["step"] = json!(state.step);
            report::append_metrics(spec.run, &figures)?;
            say(&bar, spec.quiet, &format!("step {:>5}: train {loss:.4}, {line}", state.step));
        }
        if state.step.is_multiple_of(spec.checkpoint_every.max(1)) || last {
            state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            ckpt::save(&dir, model, opt, state)?;
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    peak = peak.max(matmul_peak_gflops(1024, model.be.precision));
    let tps = if loop_tokens > 0 { loop_tokens as f64 / wall } else { f64::NAN };
    Ok(LoopStats { wall_s: wall, tokens: state.tokens_seen, tokens_per_s: tps, mfu: tps * flops_per_token / 1e9 / peak })
}

/// The items of step `step` when each step takes `batch` of `n` items: a seeded permutation per
/// epoch, walked in order (a pure function of its arguments, for exact resume).
pub fn epoch_order(n: usize, batch: usize, seed: u64, step: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    (0..batch)
        .map(|i| {
            let k = step * batch + i;
            let (epoch, at) = (k / n, k % n);
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            perm[at]
        })
        .collect()
}

/// Where a stage resumes from: an explicit `--resume-from` folder, else `run/<stage>` when it
/// holds a checkpoint (after finishing an interrupted commit), else nowhere (a fresh start).
pub fn resume_dir(run: &RunDir, stage: &str, resume_from: Option<&Path>) -> Result<Option<PathBuf>> {
    let dir = run.stage(stage);
    ckpt::recover(&dir)?;
    Ok(resume_from.map(Path::to_path_buf).or_else(|| dir.join(STATE).exists().then_some(dir)))
}

/// The precision stage `stage` will train in: its checkpoint's (a resumed run keeps the one it
/// started with; fp32 for checkpoints older than the setting), else `fresh`. For what a stage
/// computes before its loop must match it (DPO's reference log-probs).
pub fn stage_precision(run: &RunDir, stage: &str, fresh: Precision) -> Result<Precision> {
    Ok(match resume_dir(run, stage, None)? {
        Some(from) => {
            ckpt::read_state(&from)?.config.get("precision").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
        }
        None => fresh,
    })
}

/// A fresh `TrainState` for a stage.
pub fn fresh_state(
    stage: &str,
    steps: usize,
    seed: u64,
    config: Value,
    data_sha256: std::collections::BTreeMap<String, String>,
) -> TrainState {
    TrainState {
        stage: stage.into(),
        step: 0,
        total_steps: steps,
        tokens_seen: 0,
        data_cursor: 0,
        seed,
        rng: "ChaCha8 seeded by (seed, step, micro-step)".into(),
        config,
        data_sha256,
        files: Default::default(),
        elapsed_s: 0.0,
        lora_base: None,
    }
}
