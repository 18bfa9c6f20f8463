//! `chatforge sample`: many samples from a checkpoint of a run. For a chat stage, `--prompt` is
//! the user's message; with a reward model (`R/rm`) every answer is scored, and the command
//! prints the reward distribution and the best, median and worst answers ("ask it 10,000
//! times"), or only the best of N (`--best-of N`). For `--stage base`, plain text continuation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::sample::{generate, SamplingParams};
use chatforge_data::chat::{Conversation, Message};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_train::labels::sample_answers;
use chatforge_train::report;
use chatforge_train::rm::RewardModel;
use clap::Args;
use serde_json::json;

#[derive(Args)]
pub struct SampleArgs {
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint of the run: base (plain text) or a chat stage (sft, ppo, dpo).
    #[arg(long, default_value = "sft")]
    stage: String,
    /// The user's message (chat stages) or the text to continue (base).
    #[arg(long, default_value = "")]
    prompt: String,
    /// A system message (chat stages).
    #[arg(long)]
    system: Option<String>,
    /// How many samples.
    #[arg(short = 'n', long, default_value_t = 1)]
    n: usize,
    /// Sample N answers and print only the one the reward model scores highest.
    #[arg(long)]
    best_of: Option<usize>,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

pub fn run(a: SampleArgs) -> anyhow::Result<()> {
    let tok = Tokenizer::load(&a.run.join("tokenizer.json")).context("sampling needs a trained run")?;
    let dir = a.run.join(&a.stage);
    let model = load_model(Cpu, &dir).with_context(|| format!("loading {}", dir.display()))?;
    let params = SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p };
    if a.stage == "base" {
        if a.best_of.is_some() {
            anyhow::bail!("--best-of ranks chat answers with the reward model; the base stage continues plain text");
        }
        let mut prompt = tok.encode(&a.prompt);
        if prompt.is_empty() {
            prompt.push(tok.eot_id());
        }
        for i in 0..a.n {
            let out = generate(&model, &prompt, a.max_tokens, &params, &[tok.eot_id()], a.seed + i as u64);
            println!("--- sample {} ---\n{}{}", i + 1, a.prompt, tok.decode(&out, true));
        }
        return Ok(());
    }
    if a.prompt.trim().is_empty() {
        anyhow::bail!("--prompt is the user's message and must not be empty");
    }
    let mut msgs = Vec::new();
    if let Some(s) = &a.system {
        msgs.push(Message::system(s));
    }
    msgs.push(Message::user(&a.prompt));
    let conv = Conversation::new(msgs);
    let n = a.best_of.unwrap_or(a.n).max(1);
    let rm_dir = a.run.join("rm");
    let mut rm = if rm_dir.join("model.safetensors").exists() { Some(RewardModel::load(&rm_dir)?) } else { None };
    if a.best_of.is_some() && rm.is_none() {
        anyhow::bail!("best-of-N needs a reward model: train one with `chatforge rm --run {}`", a.run.display());
    }
    let t0 = Instant::now();
    let answers = sample_answers(&model, &tok, std::slice::from_ref(&conv), n, params, a.max_tokens, a.seed, false).remove(0);
    let sample_s = t0.elapsed().as_secs_f64();
    let Some(rm) = rm.as_mut() else {
        for (i, ans) in answers.iter().enumerate() {
            println!("--- sample {} ---\n{ans}", i + 1);
        }
        println!("({n} samples in {sample_s:.1} s; no reward model in {} to rank them)", rm_dir.display());
        return Ok(());
    };
    let t1 = Instant::now();
    let items: Vec<(&Conversation, &str)> = answers.iter().map(|s| (&conv, s.as_str())).collect();
    let rewards: Vec<f64> = rm.score(&tok, &items).into_iter().map(f64::from).collect();
    let score_s = t1.elapsed().as_secs_f64();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| rewards[y].total_cmp(&rewards[x]));
    if a.best_of.is_some() {
        let best = order[0];
        println!("{}", answers[best]);
        eprintln!("(best of {n} by the reward model: {:.3}; sampled in {sample_s:.1} s, scored in {score_s:.1} s)", rewards[best]);
        return Ok(());
    }
    let mut sorted = rewards.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let std = (sorted.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let distinct = answers.iter().collect::<std::collections::HashSet<_>>().len();
    let qs = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];
    println!("{n} samples ({distinct} distinct) in {sample_s:.1} s ({:.0}/s), scored in {score_s:.1} s", n as f64 / sample_s);
    println!("reward: mean {mean:.3}, std {std:.3}");
    println!(
        "  {}",
        qs.iter().map(|q| format!("p{:<3} {:>7.3}", (q * 100.0) as u32, percentile(&sorted, *q))).collect::<Vec<_>>().join("  ")
    );
    // A text histogram of the rewards.
    let bins = 12;
    let (lo, hi) = (sorted[0], sorted[n - 1].max(sorted[0] + 1e-6));
    let mut counts = vec![0usize; bins];
    for r in &rewards {
        counts[(((r - lo) / (hi - lo) * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap();
    for (i, c) in counts.iter().enumerate() {
        let x = lo + (hi - lo) * i as f64 / bins as f64;
        println!("  {x:>8.3} | {:<50} {c}", "#".repeat((c * 50).div_ceil(top.max(1))));
    }
    let show = |label: &str, i: usize| println!("--- {label} (reward {:.3}) ---\n{}", rewards[i], answers[i]);
    show("best", order[0]);
    show("median", order[n / 2]);
    show("worst", order[n - 1]);
    let worst = &answers[order[n - 1]];
    let worst_share = answers.iter().filter(|s| *s == worst).count() as f64 / n as f64;
    println!("the worst answer came up in {:.2}% of the samples", 100.0 * worst_share);
    let plot = a.run.join("plots").join(format!("rewards_{}.svg", a.stage));
    let title = format!("Rewards of {n} answers ({})", a.stage);
    report::histogram_plot(&plot, &title, "reward", &rewards, 40)?;
    report::update_report(
        &a.run,
        &format!("stages.{}.sample", a.stage),
        json!({"prompt": conv, "n": n, "distinct": distinct, "mean": mean, "std": std,
               "percentiles": qs.iter().map(|q| json!([q, percentile(&sorted, *q)])).collect::<Vec<_>>(),
               "worst_share": worst_share, "sample_s": sample_s, "score_s": score_s}),
    )?;
    println!("histogram: {}", plot.display());
    Ok(())
}
