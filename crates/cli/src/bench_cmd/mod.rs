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

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = BenchConfig {
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
    };
    let threads = rayon::current_num_threads();
    println!(
        "bench train: {} layers, hidden {}, {} heads ({} kv), mlp {}, context {}, batch {}, vocab {}, {}, {} threads",
        cfg.layers,
        cfg.hidden,
        cfg.heads,
        cfg.kv_heads,
        cfg.intermediate,
        cfg.context,
        cfg.batch,
        cfg.vocab,
        if cfg.tied { "tied" } else { "untied" },
        threads
    );
    let bar = indicatif::ProgressBar::new((cfg.warmup + cfg.steps) as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg}").unwrap());
    let r = bench_train(&cfg, |_, loss| {
        bar.inc(1);
        bar.set_message(format!("loss {loss:.3}"));
    });
    bar.finish_and_clear();
    println!("cpu: {}", decode::cpu_line());
    println!("params: {:.2}M", r.params as f64 / 1e6);
    println!("chatforge: {:.1} tokens/s, {:.1} ms/step, {:.1} GFLOP/s", r.tokens_per_s, r.step_ms, r.gflops);
    println!("matmul peak (1024^3 f32, same run): {:.1} GFLOP/s -> MFU {:.1}%", r.matmul_peak_gflops, 100.0 * r.mfu);
    println!("peak RSS: {:.0} MiB", r.peak_rss_mb);
    let torch = match &a.python {
        Some(py) => Some(torch_peer(py, &cfg, threads)?),
        None => None,
    };
    match torch {
        Some((f, t)) => {
            println!("forward tokens/s: chatforge {:.1}, pytorch {:.1}, ratio {:.2}", r.forward_tokens_per_s, f, r.forward_tokens_per_s / f);
            println!("train tokens/s: chatforge {:.1}, pytorch {:.1}, ratio {:.2}", r.tokens_per_s, t, r.tokens_per_s / t)
        }
        None => println!(
            "forward tokens/s: chatforge {:.1}; train tokens/s: chatforge {:.1}; pytorch n/a (pass --python /path/to/python with torch to compare)",
            r.forward_tokens_per_s, r.tokens_per_s
        ),
    }
    Ok(())
}

/// Runs tools/bench_torch.py with the same shape and thread count; returns its forward and
/// training tokens/s.
fn torch_peer(python: &PathBuf, cfg: &BenchConfig, threads: usize) -> anyhow::Result<(f64, f64)> {
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
    println!("running the PyTorch peer: {} {}", python.display(), script.display());
    let out = cmd.output().with_context(|| format!("running {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} failed:\n{}{}", script.display(), stdout, String::from_utf8_lossy(&out.stderr));
    }
    let figure = |prefix: &str| -> anyhow::Result<f64> {
        let line =
            stdout.lines().rev().find(|l| l.starts_with(prefix)).with_context(|| format!("no {prefix:?} line from bench_torch.py"))?;
        println!("{line}");
        Ok(line.rsplit(':').next().unwrap().trim().parse()?)
    };
    Ok((figure("pytorch forward tokens/s:")?, figure("pytorch train tokens/s:")?))
}

/// tools/<name>, looked up from the current directory and from the source tree this binary was built in.
pub fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    let candidates = [PathBuf::from("tools").join(name), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools").join(name)];
    candidates.into_iter().find(|p| p.exists()).with_context(|| format!("tools/{name} not found (run from the repository root)"))
}
