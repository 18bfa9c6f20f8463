//! `chatforge sample`: text from a checkpoint of a run.

use std::path::PathBuf;

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::sample::{generate, SamplingParams};
use chatforge_data::tokenizer::Tokenizer;
use clap::Args;

#[derive(Args)]
pub struct SampleArgs {
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint of the run.
    #[arg(long, default_value = "base")]
    stage: String,
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(short = 'n', long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: SampleArgs) -> anyhow::Result<()> {
    let tok = Tokenizer::load(&a.run.join("tokenizer.json"))?;
    let dir = a.run.join(&a.stage);
    let model = load_model(Cpu, &dir).with_context(|| format!("loading {}", dir.display()))?;
    let mut prompt = tok.encode(&a.prompt);
    if prompt.is_empty() {
        prompt.push(tok.eot_id());
    }
    let params = SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p };
    for i in 0..a.n {
        let out = generate(&model, &prompt, a.max_tokens, &params, &[tok.eot_id()], a.seed + i as u64);
        println!("--- sample {} ---\n{}{}", i + 1, a.prompt, tok.decode(&out, true));
    }
    Ok(())
}
