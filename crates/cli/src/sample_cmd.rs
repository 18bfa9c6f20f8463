//! `chatforge sample`: many samples from a checkpoint of a run. For a chat stage, `--prompt` is
//! the user's message; with a reward model (`R/rm`) every answer is scored, and the command
//! prints the reward distribution and the best, median and worst answers ("ask it 10,000
//! times", `chatforge_stages::sample`), or only the best of N (`--best-of N`). For
//! `--stage base`, plain text continuation.

use std::path::PathBuf;

use chatforge_core::sample::{generate, SamplingParams};
use chatforge_stages::{sample, Run};
use clap::Args;

fn d() -> sample::Config {
    sample::Config::default()
}

#[derive(Args)]
pub struct SampleArgs {
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint of the run: base (plain text) or a chat stage (sft, ppo, dpo).
    #[arg(long, default_value_t = d().stage)]
    stage: String,
    /// The user's message (chat stages) or the text to continue (base).
    #[arg(long, default_value = "")]
    prompt: String,
    /// A system message (chat stages).
    #[arg(long)]
    system: Option<String>,
    /// How many samples.
    #[arg(short = 'n', long, default_value_t = d().n)]
    n: usize,
    /// Sample N answers and print only the one the reward model scores highest.
    #[arg(long)]
    best_of: Option<usize>,
    #[arg(long, default_value_t = d().max_tokens)]
    max_tokens: usize,
    #[arg(long, default_value_t = d().params.temperature)]
    temperature: f32,
    #[arg(long, default_value_t = d().params.top_k)]
    top_k: usize,
    #[arg(long, default_value_t = d().params.top_p)]
    top_p: f32,
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
}

impl SampleArgs {
    pub(crate) fn config(&self) -> sample::Config {
        sample::Config {
            stage: self.stage.clone(),
            prompt: self.prompt.clone(),
            system: self.system.clone(),
            n: self.best_of.unwrap_or(self.n),
            max_tokens: self.max_tokens,
            params: SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p },
            seed: self.seed,
        }
    }
}

pub fn run(a: SampleArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    let cfg = a.config();
    if a.stage == "base" {
        if a.best_of.is_some() {
            anyhow::bail!("--best-of ranks chat answers with the reward model; the base stage continues plain text");
        }
        let (tok, model) = (run.tokenizer()?, run.model("base")?);
        let mut prompt = tok.encode(&a.prompt);
        if prompt.is_empty() {
            prompt.push(tok.eot_id());
        }
        for i in 0..a.n {
            let out = generate(&model, &prompt, a.max_tokens, &cfg.params, &[tok.eot_id()], a.seed + i as u64);
            println!("--- sample {} ---\n{}{}", i + 1, a.prompt, tok.decode(&out, true));
        }
        return Ok(());
    }
    if a.best_of.is_some() && !run.dir.has_model("rm") {
        anyhow::bail!("best-of-N needs a reward model: train one with `chatforge rm --run {}`", a.run.display());
    }
    let f = sample::run(&run, &cfg, a.best_of.is_none())?;
    let Some(dist) = &f.distribution else {
        for (i, ans) in f.answers.iter().enumerate() {
            println!("--- sample {} ---\n{ans}", i + 1);
        }
        println!("({} samples in {:.1} s; no reward model in {} to rank them)", cfg.n, f.sample_s, run.dir.stage("rm").display());
        return Ok(());
    };
    let (n, best) = (dist.n, f.order[0]);
    if a.best_of.is_some() {
        println!("{}", f.answers[best]);
        eprintln!(
            "(best of {n} by the reward model: {:.3}; sampled in {:.1} s, scored in {:.1} s)",
            f.rewards[best], dist.sample_s, dist.score_s
        );
        return Ok(());
    }
    println!(
        "{n} samples ({} distinct) in {:.1} s ({:.0}/s), scored in {:.1} s",
        dist.distinct,
        dist.sample_s,
        n as f64 / dist.sample_s,
        dist.score_s
    );
    println!("reward: mean {:.3}, std {:.3}", dist.mean, dist.std);
    println!("  {}", dist.percentiles.iter().map(|(q, r)| format!("p{:<3} {:>7.3}", (q * 100.0) as u32, r)).collect::<Vec<_>>().join("  "));
    // A text histogram of the rewards.
    let bins = 12;
    let (lo, hi) = (dist.percentiles[0].1, dist.percentiles[8].1.max(dist.percentiles[0].1 + 1e-6));
    let mut counts = vec![0usize; bins];
    for r in &f.rewards {
        counts[(((r - lo) / (hi - lo) * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap();
    for (i, c) in counts.iter().enumerate() {
        let x = lo + (hi - lo) * i as f64 / bins as f64;
        println!("  {x:>8.3} | {:<50} {c}", "#".repeat((c * 50).div_ceil(top.max(1))));
    }
    for (label, i) in [("best", best), ("median", f.order[n / 2]), ("worst", f.order[n - 1])] {
        println!("--- {label} (reward {:.3}) ---\n{}", f.rewards[i], f.answers[i]);
    }
    println!("the worst answer came up in {:.2}% of the samples", 100.0 * dist.worst_share);
    println!("histogram: {}", run.dir.plot(&format!("rewards_{}.svg", a.stage)).display());
    Ok(())
}
