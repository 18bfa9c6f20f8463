//! `chatforge import`: an HF model folder (or a model id in the HF cache) becomes a stage of a
//! run, with its own tokenizer and chat template (`chatforge_stages::import`).

use std::path::PathBuf;

use chatforge_stages::import;
use chatforge_stages::Run;
use clap::Args;

#[derive(Args)]
pub struct ImportArgs {
    /// The model folder (config.json, model.safetensors or shards, tokenizer.json,
    /// tokenizer_config.json), or an org/name model id already in the HF cache.
    source: String,
    /// The run folder to import into.
    #[arg(long)]
    run: PathBuf,
    /// The stage it becomes: sft (an instruct model) or base.
    #[arg(long = "as", default_value_t = import::Config::default().stage)]
    stage: String,
    /// Cap on the context the run uses (training rows, prompt + answer).
    #[arg(long, default_value_t = import::Config::default().context)]
    context: usize,
    /// Replace a tokenizer the run already has.
    #[arg(long)]
    force: bool,
}

pub fn run(a: ImportArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    let cfg = import::Config { source: a.source.clone(), stage: a.stage.clone(), context: a.context, force: a.force };
    let f = import::run(&run, &cfg)?;
    println!(
        "imported {} ({}, {:.2}M parameters, {} from {} file(s)) as {}/{}; context {} (the model's: {}); stops at {}",
        f.source,
        f.model_type,
        f.params as f64 / 1e6,
        f.dtype,
        f.shards,
        run.dir.name(),
        a.stage,
        f.context,
        f.model_context,
        f.stop_tokens.join(" ")
    );
    println!("talk to it: chatforge chat --run {} --stage {}", a.run.display(), a.stage);
    if !run.dir.moderation().exists() {
        let r = a.run.display();
        println!("serve it (the server needs the run's moderation classifier): chatforge moderation train --run {r} && chatforge serve --run {r}");
    }
    Ok(())
}
