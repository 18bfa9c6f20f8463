//! `chatforge bench train`: our training step vs PyTorch eager on the same model and threads.
//! `chatforge bench pretrain` (`pretrain.rs`): a whole pretraining run (data, evals, checkpoints)
//! vs the same run in PyTorch (tools/pretrain_torch.py) on the same shards, model config and
//! threads. `chatforge bench serve` (`serve.rs`): a loopback load test of the server.
//! `chatforge bench decode` (`decode.rs`): decoding (prefill, single stream, batched, through the
//! server) against llama.cpp on the same model exported to GGUF, the same threads.

mod decode;
mod pretrain;
mod serve;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use chatforge_core::backend::Precision;
use chatforge_core::cpu::bf16;
use chatforge_train::bench::{bench_train, BenchConfig};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Training tokens/s, MFU against the measured matmul peak, peak RSS; optional PyTorch peer.
    Train(TrainArgs),
    /// End-to-end pretraining tokens/s (data loading, evals and checkpoints included) of the same
    /// run in chatforge and, with --python, in PyTorch; prints the ratio.
    Pretrain(pretrain::PretrainBenchArgs),
    /// Loopback load test of `chatforge serve` (or any OpenAI-compatible server with --url):
    /// concurrent streaming clients, some hanging up mid-stream; aggregate tokens/s.
    Serve(serve::BenchServeArgs),
    /// Decoding vs llama.cpp on the same model (exported to GGUF) and threads: prefill, single
    /// stream, 1/8/32/64 sequences, and 32 clients through each server; ratios, one line for scripts.
    Decode(decode::BenchDecodeArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 4)]
    kv_heads: usize,
    #[arg(long, default_value_t = 704)]
    intermediate: usize,
    #[arg(long, default_value_t = 256)]
    context: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    #[arg(long)]
    tied: bool,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Comma-separated matmul precisions to run (fp32, bf16); default: every one this CPU runs
    /// natively (bf16 needs AVX512-BF16).
    #[arg(long)]
    precision: Option<String>,
    /// Train LoRA adapters of this rank (alpha 16, every linear layer) on the frozen model; the
    /// PyTorch peer then uses `peft` with the same adapters.
    #[arg(long)]
    lora: Option<usize>,
    /// A Python with torch + transformers (e.g. /tmp/venv/bin/python): runs tools/bench_torch.py
    /// on the same shape and threads and prints the ratio. Also read from CHATFORGE_PYTHON.
    #[arg(long, env = "CHATFORGE_PYTHON")]
    python: Option<PathBuf>,
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Train(a) => train(a),
        BenchCmd::Pretrain(a) => pretrain::bench_pretrain(a),
        BenchCmd::Serve(a) => serve::bench(a),
        BenchCmd::Decode(a) => decode::bench_decode(a),
    }
}

/// `--precision a,b`, or every precision this CPU runs natively: fp32 always, bf16 where it has
/// AVX512-BF16.
fn precisions(list: Option<&str>) -> anyhow::Result<Vec<Precision>> {
    match list {
        Some(list) => list
            .split(',')
            .map(|p| Precision::parse(p.trim()).with_context(|| format!("--precision {p:?}: expected fp32 or bf16")))
            .collect(),
        None => Ok(std::iter::once(Precision::Fp32).chain(bf16::native().then_some(Precision::Bf16)).collect()),
    }
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let precisions = precisions(a.precision.as_deref())?;
    let base = BenchConfig {
        layers: a.layers,
        hidden: a.hidden,
        heads: a.heads,
        kv_heads: a.kv_heads,
        intermediate: a.intermediate,
        context: a.context,
        batch: a.batch,
        vocab: a.vocab,
        tied: a.tied,
        steps: a.steps,
        warmup: a.warmup,
        precision: Precision::Fp32,
        lora: a.lora,
    };
    let threads = rayon::current_num_threads();
    println!(
        "bench train: {} layers, hidden {}, {} heads ({} kv), mlp {}, context {}, batch {}, vocab {}, {}, {} threads",
        base.layers,
        base.hidden,
        base.heads,
        base.kv_heads,
        base.intermediate,
        base.context,
        base.batch,
        base.vocab,
        if base.tied { "tied" } else { "untied" },
        threads
    );
    if let Some(r) = base.lora {
        println!("lora: rank {r}, alpha 16, all seven linear layers; the base frozen");
    }
    println!("cpu: {} (native bf16 matmul: {})", decode::cpu_line(), if bf16::native() { "yes" } else { "no" });
    let mut ours = Vec::new();
    for &precision in &precisions {
        let cfg = BenchConfig { precision, ..base.clone() };
        let bar = indicatif::ProgressBar::new((cfg.warmup + cfg.steps) as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg}").unwrap());
        let r = bench_train(&cfg, |_, loss| {
            bar.inc(1);
            bar.set_message(format!("{} loss {loss:.3}", precision.name()));
        });
        bar.finish_and_clear();
        let p = precision.name();
        println!("params: {:.2}M", r.params as f64 / 1e6);
        println!(
            "chatforge {p}: {:.1} tokens/s, {:.1} ms/step, {:.1} GFLOP/s, forward {:.1} tokens/s",
            r.tokens_per_s, r.step_ms, r.gflops, r.forward_tokens_per_s
        );
        println!("chatforge {p}: matmul peak (1024^3 {p}, same run) {:.1} GFLOP/s -> MFU {:.1}%", r.matmul_peak_gflops, 100.0 * r.mfu);
        ours.push((precision, r));
    }
    println!("peak RSS: {:.0} MiB", ours.iter().map(|(_, r)| r.peak_rss_mb).fold(0.0, f64::max));
    let (best_p, best) = ours.iter().max_by(|x, y| x.1.tokens_per_s.total_cmp(&y.1.tokens_per_s)).context("no precision to run")?;
    let best_fwd = ours.iter().map(|(_, r)| r.forward_tokens_per_s).fold(0.0, f64::max);
    match &a.python {
        Some(py) => {
            let (f, t, mode) = torch_peer(py, &base, threads)?;
            for (p, r) in &ours {
                println!("ratio chatforge {} / pytorch {mode}: train {:.2}, forward {:.2}", p.name(), r.tokens_per_s / t, r.forward_tokens_per_s / f);
            }
            println!("forward tokens/s: chatforge {best_fwd:.1}, pytorch {f:.1} (fastest mode), ratio {:.2}", best_fwd / f);
            // The machine-readable last line: our fastest mode against PyTorch's fastest mode.
            println!("train tokens/s: chatforge {:.1} ({}), pytorch {t:.1} ({mode}), ratio {:.2}", best.tokens_per_s, best_p.name(), best.tokens_per_s / t)
        }
        None => println!(
            "forward tokens/s: chatforge {best_fwd:.1}; train tokens/s: chatforge {:.1} ({}); pytorch n/a (pass --python /path/to/python with torch to compare)",
            best.tokens_per_s,
            best_p.name()
        ),
    }
    Ok(())
}

/// Runs tools/bench_torch.py (every PyTorch mode) with the same shape and thread count; returns
/// its fastest forward and training tokens/s and the fastest training mode.
fn torch_peer(python: &PathBuf, cfg: &BenchConfig, threads: usize) -> anyhow::Result<(f64, f64, String)> {
    let script = find_tool("bench_torch.py")?;
    let mut cmd = Command::new(python);
    cmd.arg(&script);
    for (flag, v) in [
        ("--layers", cfg.layers),
        ("--hidden", cfg.hidden),
        ("--heads", cfg.heads),
        ("--kv-heads", cfg.kv_heads),
        ("--intermediate", cfg.intermediate),
        ("--context", cfg.context),
        ("--batch", cfg.batch),
        ("--vocab", cfg.vocab),
        ("--threads", threads),
        ("--steps", cfg.steps),
        ("--warmup", cfg.warmup),
    ] {
        cmd.arg(flag).arg(v.to_string());
    }
    if cfg.tied {
        cmd.arg("--tied");
    }
    if let Some(r) = cfg.lora {
        cmd.arg("--lora").arg(r.to_string());
    }
    println!("running the PyTorch peer: {} {}", python.display(), script.display());
    let out = cmd.output().with_context(|| format!("running {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} failed:\n{}{}", script.display(), stdout, String::from_utf8_lossy(&out.stderr));
    }
    let figure = |prefix: &str| -> anyhow::Result<f64> {
        let line =
            stdout.lines().rev().find(|l| l.starts_with(prefix)).with_context(|| format!("no {prefix:?} line from bench_torch.py"))?;
        Ok(line.rsplit(':').next().unwrap().trim().parse()?)
    };
    for line in stdout.lines().filter(|l| l.starts_with("pytorch ") && (l.contains(" tokens/s: ") || l.contains(" failed: "))) {
        println!("{line}");
    }
    let mode = stdout.lines().rev().find_map(|l| l.strip_prefix("pytorch best train mode: ")).unwrap_or("?").trim().to_string();
    Ok((figure("pytorch forward tokens/s:")?, figure("pytorch train tokens/s:")?, mode))
}

/// tools/<name>, looked up from the current directory and from the source tree this binary was built in.
pub fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    let candidates = [PathBuf::from("tools").join(name), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools").join(name)];
    candidates.into_iter().find(|p| p.exists()).with_context(|| format!("tools/{name} not found (run from the repository root)"))
}
