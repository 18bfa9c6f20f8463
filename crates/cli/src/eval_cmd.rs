//! `chatforge eval`: runs the evals registry on a stage's checkpoint and writes the report card
//! (`chatforge_stages::eval`).

use std::path::PathBuf;

use anyhow::Context;
use chatforge_data::tasks::Corpus;
use chatforge_eval::Registry;
use chatforge_stages::{eval, Run};
use clap::Args;

fn d() -> eval::Config {
    eval::Config::default()
}

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// The run folder (tokenizer.json and the stage's checkpoint folder).
    #[arg(long, required_unless_present_any = ["write_builtin", "list"])]
    pub run: Option<PathBuf>,
    /// The checkpoint to evaluate: base, sft, ppo, dpo, ... (base is prompted few-shot in plain text).
    #[arg(long, default_value_t = d().stage)]
    pub stage: String,
    /// Evals to run, by name or id (repeatable); all of the registry by default.
    #[arg(long = "eval")]
    pub evals: Vec<String>,
    /// The registry folder (default: the bundled `evals/`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Answers per prompt for `many_samples` evals ("ask it 10,000 times": --samples 10000).
    #[arg(long)]
    pub samples: Option<usize>,
    /// At most this many samples per eval.
    #[arg(long)]
    pub limit: Option<usize>,
    /// List the registry's evals and exit.
    #[arg(long)]
    pub list: bool,
    /// Write the built-in evals' samples (from the task suite's test split) into DIR and exit.
    #[arg(long, value_name = "DIR")]
    pub write_builtin: Option<PathBuf>,
}

impl EvalArgs {
    pub fn config(&self) -> eval::Config {
        eval::Config {
            stage: self.stage.clone(),
            evals: self.evals.clone(),
            registry: self.registry.clone(),
            samples: self.samples,
            limit: self.limit,
        }
    }
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.write_builtin {
        let corpus = Corpus::bundled().context("the built-in evals are made from the bundled corpus")?;
        for (name, n) in chatforge_eval::builtin::write_builtin(dir, &corpus)? {
            println!("{:<16} {n:>5} samples", format!("{name}.jsonl"));
        }
        return Ok(());
    }
    if a.list {
        let registry = Registry::load(&eval::registry_dir(a.registry.as_deref())?)?;
        for e in &registry.evals {
            println!("{:<16} {:<28} {:<16} {}", e.name, e.id, format!("{:?}", e.class), e.description);
        }
        return Ok(());
    }
    let run = Run::open(a.run.clone().context("--run is required")?);
    eval::run(&run, &a.config())?;
    println!("results: {}; report: {}", run.dir.evals(&a.stage).display(), run.dir.report_html().display());
    Ok(())
}
