//! SFT: the base model fine-tuned to chat (system / user / assistant turns, loss on the
//! assistant's tokens only) on the task suite's training split and the user's own JSONL, then
//! every task family scored on the held-out test split before (the base model, few-shot in
//! plain text: it never saw the chat format) and after. In order:
//! 1. the task suite (made once per run) and the extra conversations;
//! 2. the base model's scores (cached in `R/sft_data/scores_base.json`);
//! 3. the loop (resumable), optionally with evals of the registry at every eval step;
//! 4. the SFT model's greedy answers to the test split, graded, in `R/sft/test_answers.jsonl`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_data::chat::{load_jsonl, write_jsonl, Conversation};
use chatforge_data::tasks::grade;
use chatforge_eval::runner::training_keys;
use chatforge_eval::{headline, run_eval, Borrowed, EvalOptions, Helpers, Registry};
use chatforge_rundir::fs::write_atomic;
use chatforge_rundir::plot::line_plot;
use chatforge_rundir::report::read_metrics;
use chatforge_rundir::Key;
use chatforge_train::pretrain::Budget;
use chatforge_train::sft::{score_tasks, sft_with_hook, Scores, SftConfig, SftData};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The loop's recipe: 1,200 steps of 8 packed rows, lr 3e-3 (linear decay), seed 1.
    pub train: SftConfig,
    /// Train for this many seconds instead of `train.steps` (the step count is fixed from a
    /// measured step).
    pub time_budget_s: Option<f64>,
    /// Extra conversations (JSONL `{"messages": [...]}`) besides the task suite.
    pub data: Vec<PathBuf>,
    /// Count and skip malformed lines of `data` instead of failing.
    pub skip_bad: bool,
    /// Make the run's task suite small (150 conversations a family) if it does not exist yet.
    pub small_suite: bool,
    /// Every N steps (and at the end), also run `evals` on the model being trained.
    pub eval_every: Option<usize>,
    pub evals: Vec<String>,
    /// Samples per eval with `eval_every`.
    pub eval_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            train: SftConfig::default(),
            time_budget_s: None,
            data: vec![],
            skip_bad: false,
            small_suite: false,
            eval_every: None,
            evals: ["system", "injection", "refusal", "arithmetic"].map(String::from).to_vec(),
            eval_limit: 40,
        }
    }
}

/// The learning rate of `--lora` (adapters only, on the frozen base), chosen on val; see the
/// README.
pub const LORA_LR: f32 = 1e-2;

/// A family's mean grade on the test split before (base, few-shot) and after SFT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeforeAfter {
    pub before: f64,
    pub after: f64,
}

/// `stages.sft`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub val_loss: f64,
    pub json_adherence: f64,
    pub json_adherence_before: f64,
    pub family_scores: BTreeMap<String, BeforeAfter>,
    pub test_tasks: usize,
    /// Tasks in each pool of the suite (`train` is the SFT pool; `prefs` and `rl` hold the
    /// prompts of labels and PPO), and how many prompts are in more than one pool (0).
    pub pools: BTreeMap<String, usize>,
    pub pool_overlaps: usize,
    pub steps: usize,
    pub tokens: u64,
    pub train_tokens_per_s: f64,
    pub wall_s: f64,
    /// With `--lora`, the adapters' recipe (`R/sft/adapter/` holds the adapters in PEFT's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<chatforge_core::model::lora::LoraConfig>,
    /// Parameters SFT trained (the adapters' with LoRA) and the model's total.
    #[serde(default)]
    pub trainable_params: usize,
    #[serde(default)]
    pub total_params: usize,
    /// Malformed lines of `data` skipped (not recorded).
    #[serde(skip)]
    pub skipped_lines: Vec<(PathBuf, usize)>,
}

/// Trains `R/sft` from `R/base` (or resumes it), scores before and after, records `stages.sft`.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    // Weights, gradients and two moments; with LoRA, the frozen weights (the adapters are small).
    run.check_memory("base", if cfg.train.lora.is_some() { 1 } else { 4 }, "SFT")?;
    let tok = run.tokenizer()?;
    let suite = run.suite_sized(cfg.small_suite)?;
    let mut train: Vec<Conversation> = suite.train.iter().map(|t| t.conversation.clone()).collect();
    let mut skipped_lines = vec![];
    for path in &cfg.data {
        let (convs, skipped) = load_jsonl(path, cfg.skip_bad)?;
        if skipped > 0 {
            skipped_lines.push((path.clone(), skipped));
        }
        train.extend(convs);
    }
    let val: Vec<Conversation> = suite.val.iter().map(|t| t.conversation.clone()).collect();
    let data = SftData::new(tok, &train, &val)?;

    let before_path = run.dir.base_scores();
    let before: Scores = match std::fs::read_to_string(&before_path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        Some(s) => s,
        None => {
            let base = run.model("base")?;
            let (s, _) = score_tasks(&base, tok, &suite.test, Some(&suite.train));
            write_atomic(&before_path, serde_json::to_string_pretty(&s).expect("scores serialize").as_bytes())?;
            s
        }
    };
    let mut train_cfg = cfg.train.clone();
    let budget = match cfg.time_budget_s {
        Some(s) => Budget::Seconds(s),
        None => Budget::Steps(train_cfg.steps),
    };
    let out = match cfg.eval_every {
        None => sft_with_hook(&run.dir, train_cfg, budget, tok, &data, run.quiet, None)?,
        Some(every) => {
            train_cfg.eval_every = every.max(1);
            let registry = Registry::load(&crate::eval::registry_dir(None)?)?;
            let specs = registry.select(&cfg.evals)?;
            let keys = training_keys(&run.dir);
            let opts = EvalOptions { limit: Some(cfg.eval_limit), many_samples: Some(10), ..EvalOptions::new(&run.dir, "sft") };
            let mut hook = |model: &mut Llama<Cpu>, _step: usize| -> chatforge_train::Result<(serde_json::Value, String)> {
                let mut policy = Borrowed { model, tok, batch: 32 };
                let mut figures = serde_json::Map::new();
                for spec in &specs {
                    let o = run_eval(spec, &mut policy, &mut Helpers::default(), &opts, &keys)
                        .map_err(|e| chatforge_train::Error::Input(format!("eval {} during SFT: {e}", spec.name)))?;
                    for (k, v) in headline(spec, &o) {
                        figures.insert(k, json!(v));
                    }
                }
                let line = figures.iter().filter_map(|(k, v)| Some(format!("{k} {:.2}", v.as_f64()?))).collect::<Vec<_>>().join(", ");
                Ok((json!({"evals": figures}), line))
            };
            let out = sft_with_hook(&run.dir, train_cfg, budget, tok, &data, run.quiet, Some(&mut hook))?;
            plot_eval_curves(run)?;
            out
        }
    };

    // After: the SFT model in ChatML on the same held-out tasks.
    let model = run.model("sft")?;
    let (after, answers) = score_tasks(&model, tok, &suite.test, None);
    let rows: Vec<serde_json::Value> = suite
        .test
        .iter()
        .zip(&answers)
        .map(|(t, ans)| {
            json!({"id": t.meta.id, "family": t.meta.family.name(), "prompt": t.prompt(), "reference": t.reference(), "answer": ans,
                   "grade": grade(t, ans).score})
        })
        .collect();
    write_jsonl(&run.dir.test_answers(), &rows)?;
    let family_scores = after
        .family
        .iter()
        .map(|(f, s)| (f.clone(), BeforeAfter { before: before.family.get(f).copied().unwrap_or(0.0), after: *s }))
        .collect();
    let figures = Figures {
        val_loss: out.val_loss,
        json_adherence: after.json_adherence,
        json_adherence_before: before.json_adherence,
        family_scores,
        test_tasks: after.n,
        pools: suite.pool_sizes().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        pool_overlaps: suite.pool_overlaps(),
        steps: out.steps,
        tokens: out.tokens,
        train_tokens_per_s: out.train_tokens_per_s,
        wall_s: out.wall_s,
        lora: out.lora.clone(),
        trainable_params: out.trainable_params,
        total_params: out.total_params,
        skipped_lines,
    };
    run.record(Key::Stage("sft"), &figures)?;
    Ok(figures)
}

/// `plots/sft_evals.svg`: the figures of `eval_every` against the step.
fn plot_eval_curves(run: &Run) -> Result<()> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for l in &read_metrics(&run.dir, "sft") {
        let (Some(step), Some(evals)) = (l["step"].as_f64(), l["evals"].as_object()) else { continue };
        for (k, v) in evals {
            if let Some(x) = v.as_f64() {
                series.entry(k.clone()).or_default().push((step, x));
            }
        }
    }
    let s: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    line_plot(&run.dir.plot("sft_evals.svg"), "Evals during SFT", "step", "share", &s).map_err(Error::from)
}

impl Figures {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (path, n) in &self.skipped_lines {
            s += &format!("{}: skipped {n} malformed lines\n", path.display());
        }
        s += &format!(
            "sft: val loss {:.4}; JSON adherence {:.1}% (base few-shot {:.1}%)\n  {:<12} {:>8} {:>8}",
            self.val_loss,
            100.0 * self.json_adherence,
            100.0 * self.json_adherence_before,
            "family",
            "before",
            "after"
        );
        for (f, b) in &self.family_scores {
            s += &format!("\n  {:<12} {:>7.1}% {:>7.1}%", f, 100.0 * b.before, 100.0 * b.after);
        }
        s
    }
}
