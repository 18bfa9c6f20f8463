//! Eval: the evals registry (`evals/`, OpenAI Evals' YAML + JSONL) run on one stage's
//! checkpoint, with the run's reward model for reward figures and `judge: rm` evals and other
//! stages as judges where an eval names one. Evals whose inputs the run lacks are skipped (or
//! are an error when asked for by name). Per-sample results go to `R/evals/<stage>/`, the
//! figures into `report.json` and the report card.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatforge_eval::registry::{bundled_registry_dir, Class};
use chatforge_eval::runner::training_keys;
use chatforge_eval::{
    record, run_eval, CheckpointReward, EvalOptions, EvalOutcome, EvalSpec, Helpers, ModelPolicy, Policy, Registry, Rewarder,
};
use chatforge_rundir::RunDir;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The checkpoint evaluated: base (prompted few-shot in plain text), sft, ppo, dpo, ...
    pub stage: String,
    /// Evals by name or id; empty: the whole registry.
    pub evals: Vec<String>,
    /// The registry folder; None: the bundled `evals/`.
    pub registry: Option<PathBuf>,
    /// Answers per prompt for `many_samples` evals ("ask it 10,000 times").
    pub samples: Option<usize>,
    /// At most this many samples per eval.
    pub limit: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config { stage: "sft".into(), evals: vec![], registry: None, samples: None, limit: None }
    }
}

/// What the stage measured: every eval's outcome and the summary it recorded.
pub struct Figures {
    pub outcomes: Vec<EvalOutcome>,
    pub skipped: Vec<(String, String)>,
    /// `R/evals/<stage>/summary.json`: every eval's metrics and the stage's headline figures.
    pub summary: Value,
}

/// The registry folder: `given`, or the bundled `evals/`.
pub fn registry_dir(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => bundled_registry_dir()
            .ok_or_else(|| Error::Input("the bundled evals registry (evals/) was not found; pass --registry DIR".into())),
    }
}

/// What an eval needs that a run may not have; `None` when it can run.
fn missing(spec: &EvalSpec, run: &RunDir, reward: bool) -> Option<String> {
    let need = |p: PathBuf| (!p.exists()).then(|| format!("{} does not exist", p.display()));
    match spec.class {
        Class::Bpb => need(run.val_tokens()),
        Class::NextWord => need(spec.samples_path(run.root()).unwrap_or_else(|| run.val_docs())),
        Class::ModelGraded => match spec.args.judge.as_deref().unwrap_or("rm") {
            "rm" if !reward => Some("the run has no reward model".into()),
            "rm" => None,
            stage => need(run.model(stage)),
        },
        _ => spec.args.samples_jsonl.as_deref().filter(|p| p.starts_with("run:")).and_then(|_| need(spec.samples_path(run.root())?)),
    }
}

/// Runs the chosen evals on `R/<stage>` and records them.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    let registry = Registry::load(&registry_dir(cfg.registry.as_deref())?)?;
    let chosen = registry.select(&cfg.evals)?;
    let tok = run.tokenizer()?;
    let mut policy = ModelPolicy::new(run.model(&cfg.stage)?, tok.clone());
    let mut reward = run.reward_model_if_any()?.map(|rm| CheckpointReward { rm, tok: tok.clone() });
    let has_reward = reward.is_some();
    if !run.quiet && !has_reward {
        println!("no reward model ({}): reward figures stay empty", run.dir.stage("rm").display());
    }
    let (mut specs, mut skipped): (Vec<&EvalSpec>, Vec<(String, String)>) = (vec![], vec![]);
    for spec in chosen {
        let why = if spec.args.tools && cfg.stage == "base" {
            Some("a base model, prompted in plain text, has no tools".to_string())
        } else {
            missing(spec, &run.dir, has_reward)
        };
        match why {
            Some(why) if !cfg.evals.is_empty() => return Err(Error::Input(format!("{}: {why}", spec.name))),
            Some(why) => {
                if !run.quiet {
                    println!("skipping {}: {why}", spec.name);
                }
                skipped.push((spec.name.clone(), why));
            }
            None => specs.push(spec),
        }
    }
    let mut judge_models: BTreeMap<String, ModelPolicy> = BTreeMap::new();
    for spec in &specs {
        if let Some(j) = spec.args.judge.as_deref().filter(|j| *j != "rm") {
            if !judge_models.contains_key(j) {
                judge_models.insert(j.to_string(), ModelPolicy::new(run.model(j)?, tok.clone()));
            }
        }
    }
    let mut helpers = Helpers {
        judges: judge_models.iter_mut().map(|(k, v)| (k.clone(), v as &mut dyn Policy)).collect(),
        reward: reward.as_mut().map(|r| r as &mut dyn Rewarder),
    };
    let opts = EvalOptions {
        run: run.dir.clone(),
        stage: cfg.stage.clone(),
        plain: cfg.stage == "base",
        many_samples: cfg.samples,
        limit: cfg.limit,
        quiet: run.quiet,
    };
    let keys = training_keys(&run.dir);
    let mut outcomes = Vec::new();
    for spec in &specs {
        let o = run_eval(spec, &mut policy, &mut helpers, &opts, &keys).map_err(|e| Error::Input(format!("eval {}: {e}", spec.id)))?;
        if !run.quiet {
            println!("{:<16} {:>6} samples {:>6.1}s  {}", o.name, o.n, o.seconds, brief(&o.metrics));
        }
        outcomes.push(o);
    }
    let summary = record(&opts, &specs, &outcomes)?;
    Ok(Figures { outcomes, skipped, summary })
}

/// Family scores without the built-in tools, with them writing arguments freely, and with
/// grounded arguments, and tool calls per answer, for each of `stages` (name, its eval
/// summary's `figures`): the speedrun's tools table.
pub fn tools_table(stages: &[(&str, &Value)]) -> String {
    let mut out =
        String::from("tools: family accuracy without tools → with them, arguments free → grounded (calls per answer), test split\n");
    let pct = |v: &Value| v.as_f64().map_or("–".into(), |x| format!("{:.1} %", 100.0 * x));
    for (stage, figures) in stages {
        let Some(with) = figures["tools.family_scores"].as_object() else { continue };
        let cells: Vec<String> = with
            .iter()
            .map(|(family, w)| {
                let (wo, free) = (pct(&figures["family_scores"][family]), pct(&figures["tools_free.family_scores"][family]));
                let calls = figures["tools.calls_per_answer"][family].as_f64().unwrap_or(0.0);
                format!("{family} {wo} → {free} → {} ({calls:.2})", pct(w))
            })
            .collect();
        out += &format!("  {stage:<5} {}\n", cells.join(", "));
    }
    out
}

/// The scalar metrics of an eval, briefly.
fn brief(m: &serde_json::Map<String, Value>) -> String {
    m.iter().filter_map(|(k, v)| v.as_f64().filter(|_| v.is_f64()).map(|x| format!("{k} {x:.3}"))).take(4).collect::<Vec<_>>().join(", ")
}
