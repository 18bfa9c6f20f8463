//! `chatforge eval`: runs the evals registry on a stage's checkpoint and writes the report card.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::tasks::Corpus;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_eval::registry::{bundled_registry_dir, Class};
use chatforge_eval::runner::training_keys;
use chatforge_eval::{record, run_eval, CheckpointReward, EvalOptions, EvalSpec, Helpers, ModelPolicy, Policy, Registry, Rewarder};
use clap::Args;
use serde_json::Value;

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// The run folder (tokenizer.json and the stage's checkpoint folder).
    #[arg(long, required_unless_present_any = ["write_builtin", "list"])]
    pub run: Option<PathBuf>,
    /// The checkpoint to evaluate: base, sft, ppo, dpo, ... (base is prompted few-shot in plain text).
    #[arg(long, default_value = "sft")]
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

pub fn registry_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => bundled_registry_dir().context("the bundled evals registry (evals/) was not found; pass --registry DIR"),
    }
}

/// The reward model of a run (`R/rm`, a classifier checkpoint), if it has one.
pub fn load_reward(run: &Path, tok: &Tokenizer) -> anyhow::Result<Option<CheckpointReward>> {
    let dir = run.join("rm");
    if !dir.join("model.safetensors").exists() {
        return Ok(None);
    }
    let rm = chatforge_train::rm::RewardModel::load(&dir)?;
    Ok(Some(CheckpointReward { rm, tok: tok.clone() }))
}

/// What an eval needs that a run may not have; `None` when it can run.
fn missing(spec: &EvalSpec, run: &Path, reward: bool) -> Option<String> {
    let need = |p: PathBuf| (!p.exists()).then(|| format!("{} does not exist", p.display()));
    match spec.class {
        Class::Bpb => need(run.join("tokens/val.bin")),
        Class::NextWord => need(spec.samples_path(run).unwrap_or_else(|| run.join("data/val.jsonl"))),
        Class::ModelGraded => match spec.args.judge.as_deref().unwrap_or("rm") {
            "rm" if !reward => Some("the run has no reward model".into()),
            "rm" => None,
            stage => need(run.join(stage).join("model.safetensors")),
        },
        _ => spec.args.samples_jsonl.as_deref().filter(|p| p.starts_with("run:")).and_then(|_| need(spec.samples_path(run)?)),
    }
}

/// Runs the chosen evals on `run/<stage>` and records them; returns the summary.
pub fn run_evals(a: &EvalArgs, quiet: bool) -> anyhow::Result<Value> {
    let run = a.run.clone().context("--run is required")?;
    let registry = Registry::load(&registry_dir(a.registry.as_deref())?)?;
    let chosen = registry.select(&a.evals)?;
    let tok = Tokenizer::load(&run.join("tokenizer.json")).context("eval needs a run with tokenizer.json")?;
    let dir = run.join(&a.stage);
    let model = load_model(Cpu, &dir).with_context(|| format!("loading the {} model from {}", a.stage, dir.display()))?;
    let mut policy = ModelPolicy::new(model, tok.clone());
    // The run's reward model (R/rm), when it has one: reward gaps, reward distributions, `judge: rm`.
    let mut reward = load_reward(&run, &tok)?;
    let has_reward = reward.is_some();
    if !quiet && !has_reward {
        println!("no reward model ({}): reward figures stay empty", run.join("rm").display());
    }
    let mut specs: Vec<&EvalSpec> = Vec::new();
    for spec in chosen {
        match missing(spec, &run, has_reward) {
            Some(why) if !a.evals.is_empty() => bail!("{}: {why}", spec.name),
            Some(why) => {
                if !quiet {
                    println!("skipping {}: {why}", spec.name);
                }
            }
            None => specs.push(spec),
        }
    }
    let mut judge_models: BTreeMap<String, ModelPolicy> = BTreeMap::new();
    for spec in &specs {
        if let Some(j) = spec.args.judge.as_deref().filter(|j| *j != "rm") {
            if !judge_models.contains_key(j) {
                let m = load_model(Cpu, &run.join(j)).with_context(|| format!("loading the judge {j}"))?;
                judge_models.insert(j.to_string(), ModelPolicy::new(m, tok.clone()));
            }
        }
    }
    let mut helpers = Helpers {
        judges: judge_models.iter_mut().map(|(k, v)| (k.clone(), v as &mut dyn Policy)).collect(),
        reward: reward.as_mut().map(|r| r as &mut dyn Rewarder),
    };
    let opts =
        EvalOptions { run: run.clone(), stage: a.stage.clone(), plain: a.stage == "base", many_samples: a.samples, limit: a.limit, quiet };
    let keys = training_keys(&run);
    let mut outcomes = Vec::new();
    for spec in &specs {
        let o = run_eval(spec, &mut policy, &mut helpers, &opts, &keys).with_context(|| format!("eval {}", spec.id))?;
        if !quiet {
            println!("{:<16} {:>6} samples {:>6.1}s  {}", o.name, o.n, o.seconds, headline(&o.metrics));
        }
        outcomes.push(o);
    }
    let summary = record(&opts, &specs, &outcomes)?;
    if !quiet {
        println!("results: {}; report: {}", run.join("evals").join(&a.stage).display(), run.join("report.html").display());
    }
    Ok(summary)
}

/// The scalar metrics of an eval, briefly.
fn headline(m: &serde_json::Map<String, Value>) -> String {
    m.iter().filter_map(|(k, v)| v.as_f64().filter(|_| v.is_f64()).map(|x| format!("{k} {x:.3}"))).take(4).collect::<Vec<_>>().join(", ")
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
        let registry = Registry::load(&registry_dir(a.registry.as_deref())?)?;
        for e in &registry.evals {
            println!("{:<16} {:<28} {:<16} {}", e.name, e.id, format!("{:?}", e.class), e.description);
        }
        return Ok(());
    }
    run_evals(&a, false).map(|_| ())
}
