//! `chatforge bench pretrain`: a whole pretraining run (data, evals, checkpoints) in chatforge
//! and, with `--python`, the same run in PyTorch (tools/pretrain_torch.py) on the same shards,
//! model config and threads; prints the ratio of end-to-end tokens/s.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use chatforge_core::backend::Precision;
use chatforge_stages::{pretrain, tokenizer, Run};
use chatforge_train::pretrain::{Budget, PretrainConfig, TokenizerSpec};
use clap::Args;

use super::find_tool;

#[derive(Args)]
pub struct PretrainBenchArgs {
    /// Run folder (default: a temporary folder, removed afterwards). A folder from an earlier
    /// `bench pretrain` keeps its cleaned corpus, tokenizer and shards; its models are retrained.
    #[arg(long)]
    run: Option<PathBuf>,
    /// A plain text file or a cleaned corpus folder (default: the bundled corpus, cleaned).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Size of the byte-level BPE trained on the corpus.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    #[arg(long, default_value_t = 4)]
    depth: usize,
    #[arg(long, default_value_t = 256)]
    context: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 60)]
    steps: usize,
    #[arg(long, default_value_t = 20)]
    eval_every: usize,
    #[arg(long, default_value_t = 16384)]
    eval_tokens: usize,
    /// Checkpoint interval for both (default: only the final checkpoint, which chatforge always
    /// writes; PyTorch then saves one with torch.save too).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// PyTorch's AdamW: `fused` (`torch.optim.AdamW(fused=True)`, the faster one on CPU) or `default`.
    #[arg(long, default_value = "fused", value_parser = ["fused", "default"])]
    torch_adamw: String,
    /// Comma-separated matmul precisions to train in, one run each on the same data and seed
    /// (fp32, bf16); default: every one this CPU runs natively. With two, prints how far bf16's
    /// final val loss is from fp32's.
    #[arg(long)]
    precision: Option<String>,
    /// A Python with torch + transformers + tokenizers (e.g. /tmp/venv/bin/python): runs
    /// tools/pretrain_torch.py on the same run folder and threads. Also read from CHATFORGE_PYTHON.
    #[arg(long, env = "CHATFORGE_PYTHON")]
    python: Option<PathBuf>,
}

/// Marks a run folder as made by `bench pretrain`, whose models it may delete and retrain.
const BENCH_MARKER: &str = ".bench-pretrain";

/// Makes `run` ready for a fresh training: removes what an earlier bench trained there, keeping
/// the cleaned corpus, tokenizer and shards. Refuses a folder holding a model the bench did not make.
fn reset_bench_run(run: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let marker = run.join(BENCH_MARKER);
    if !marker.exists() {
        if ["base", "base.prev", "base.tmp"].iter().any(|d| run.join(d).exists()) {
            bail!(
                "{} holds a base model that `bench pretrain` did not train; pass a fresh --run folder (the bench trains from scratch)",
                run.display()
            );
        }
        std::fs::write(&marker, "made by `chatforge bench pretrain`: its models are retrained on every run\n")?;
    }
    for d in ["base", "base.prev", "base.tmp", "torch", "plots"] {
        let p = run.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for f in ["metrics.jsonl", "report.json", "report.md", "report.html"] {
        let p = run.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

pub fn bench_pretrain(a: PretrainBenchArgs) -> anyhow::Result<()> {
    if a.steps == 0 || a.depth == 0 || a.batch == 0 || a.grad_accum == 0 || a.context < 2 {
        bail!("--steps, --depth, --batch and --grad-accum must be at least 1 and --context at least 2");
    }
    let temp = a.run.is_none();
    let run = a.run.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("chatforge-bench-pretrain-{}", std::process::id())));
    let result = bench_pretrain_in(&a, &run);
    if temp {
        let _ = std::fs::remove_dir_all(&run);
    }
    result
}

fn bench_pretrain_in(a: &PretrainBenchArgs, run: &Path) -> anyhow::Result<()> {
    let precisions = super::precisions(a.precision.as_deref())?;
    let threads = rayon::current_num_threads();
    let checkpoint_every = a.checkpoint_every.unwrap_or(a.steps).max(1);
    println!(
        "bench pretrain: depth {}, context {}, batch {} x accum {}, {} steps, eval every {} over {} val tokens, checkpoint every {}, {} threads, run {}",
        a.depth,
        a.context,
        a.batch,
        a.grad_accum,
        a.steps,
        a.eval_every,
        a.eval_tokens,
        checkpoint_every,
        threads,
        run.display()
    );
    println!("cpu: {}", super::decode::cpu_line());
    let corpus = tokenizer::Config { data: a.data.clone(), spec: TokenizerSpec::Bpe { vocab_size: a.vocab_size } };
    let mut cfg = PretrainConfig {
        depth: a.depth,
        context: a.context,
        batch: a.batch,
        grad_accum: a.grad_accum,
        eval_every: a.eval_every,
        eval_tokens: a.eval_tokens,
        sample_tokens: 0,
        checkpoint_every,
        seed: a.seed,
        ..Default::default()
    };
    cfg.optim.lr = a.lr;
    cfg.optim.warmup_steps = a.warmup;
    let (lr, min_lr_frac, weight_decay) = (cfg.optim.lr, cfg.optim.min_lr_frac, cfg.optim.weight_decay);
    // One run per precision, the same data, seed and batches; the fastest is compared with PyTorch.
    let mut runs = Vec::new();
    for &precision in &precisions {
        reset_bench_run(run)?;
        let train = PretrainConfig { precision, ..cfg.clone() };
        let out = pretrain::run(
            &Run::open(run),
            &pretrain::Config { train, budget: Some(Budget::Steps(a.steps)), resume_from: None, corpus: corpus.clone() },
        )?;
        println!(
            "chatforge {precision} final: val loss {:.4} nats/token, {:.4} bits/byte, {} tokens in {:.1}s, {:.1} tokens/s",
            out.val_loss, out.val_bpb, out.tokens, out.wall_s, out.train_tokens_per_s
        );
        runs.push((precision, out));
    }
    if let (Some((_, f)), Some((_, b))) =
        (runs.iter().find(|(p, _)| *p == Precision::Fp32), runs.iter().find(|(p, _)| *p == Precision::Bf16))
    {
        println!(
            "bf16 vs fp32: val loss {:.4} vs {:.4} ({:+.2} %), tokens/s {:.1} vs {:.1} ({:.2}x)",
            b.val_loss,
            f.val_loss,
            100.0 * (b.val_loss / f.val_loss - 1.0),
            b.train_tokens_per_s,
            f.train_tokens_per_s,
            b.train_tokens_per_s / f.train_tokens_per_s
        );
    }
    let (best_p, ours) =
        runs.iter().max_by(|x, y| x.1.train_tokens_per_s.total_cmp(&y.1.train_tokens_per_s)).context("no precision ran")?;
    let ours_line = format!(
        "chatforge final ({best_p}): val loss {:.4} nats/token, {:.4} bits/byte, {} tokens in {:.1}s",
        ours.val_loss, ours.val_bpb, ours.tokens, ours.wall_s
    );
    println!("chatforge pretrain tokens/s: {:.1}", ours.train_tokens_per_s);
    let Some(python) = &a.python else {
        println!(
            "pretrain tokens/s: chatforge {:.1}, pytorch n/a, ratio n/a (pass --python /path/to/python with torch to compare)",
            ours.train_tokens_per_s
        );
        return Ok(());
    };
    let script = find_tool("pretrain_torch.py")?;
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg("--run").arg(run);
    for (flag, v) in [
        ("--steps", a.steps.to_string()),
        ("--batch", a.batch.to_string()),
        ("--context", a.context.to_string()),
        ("--grad-accum", a.grad_accum.to_string()),
        ("--eval-every", a.eval_every.to_string()),
        ("--eval-tokens", a.eval_tokens.to_string()),
        ("--checkpoint-every", checkpoint_every.to_string()),
        ("--threads", threads.to_string()),
        ("--lr", lr.to_string()),
        ("--min-lr-frac", min_lr_frac.to_string()),
        ("--warmup", a.warmup.min(a.steps / 5).to_string()),
        ("--weight-decay", weight_decay.to_string()),
        ("--seed", a.seed.to_string()),
        ("--adamw", a.torch_adamw.clone()),
    ] {
        cmd.arg(flag).arg(v);
    }
    println!("running the PyTorch peer: {} {}", python.display(), script.display());
    let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("running {}", python.display()))?;
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("  {line}");
        lines.push(line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let find = |prefix: &str| lines.iter().rev().find(|l| l.starts_with(prefix)).cloned();
    let torch: f64 =
        find("pytorch pretrain tokens/s:").context("no result line from pretrain_torch.py")?.rsplit(':').next().unwrap().trim().parse()?;
    println!("{ours_line}");
    if let Some(l) = find("pytorch final:") {
        println!("{l}");
    }
    println!(
        "pretrain tokens/s: chatforge {:.1}, pytorch {:.1}, ratio {:.2}",
        ours.train_tokens_per_s,
        torch,
        ours.train_tokens_per_s / torch
    );
    Ok(())
}
