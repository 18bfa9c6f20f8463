//! `chatforge sft`: fine-tune the base model to chat on the task suite (and the user's JSONL),
//! then score every family on the held-out test split before (base, few-shot) and after.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::chat::{load_jsonl, write_jsonl, Conversation};
use chatforge_data::tasks::{generate_suite, load_suite, write_suite, Corpus, Suite, SuiteConfig};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_eval::runner::training_keys;
use chatforge_eval::{headline, run_eval, Borrowed, Helpers, Registry, RunOptions};
use chatforge_train::pretrain::Budget;
use chatforge_train::report;
use chatforge_train::sft::{score_tasks, sft, sft_with_hook, SftConfig, SftData};
use clap::Args;
use serde_json::json;

use crate::pretrain_cmd::parse_duration;

#[derive(Args)]
pub struct SftArgs {
    /// The run folder holding base/ and tokenizer.json.
    #[arg(long)]
    pub run: PathBuf,
    /// Extra conversations (JSONL `{"messages": [...]}`) to train on besides the task suite.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Count and skip malformed lines of --data instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, conflicts_with = "time_budget")]
    pub steps: Option<usize>,
    /// Wall-clock budget (`120`, `2m`).
    #[arg(long)]
    pub time_budget: Option<String>,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A smaller suite (tests, --quick speedruns).
    #[arg(long)]
    pub small_suite: bool,
    /// Every N steps (and at the end), also run evals of the registry on the model being trained
    /// (and the val loss); figures go to metrics.jsonl and plots/sft_evals.svg.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// The evals run with --eval-every (repeatable).
    #[arg(long = "eval", default_values_t = ["system".to_string(), "injection".to_string(), "refusal".to_string(), "arithmetic".to_string()])]
    pub evals: Vec<String>,
    /// Samples per eval with --eval-every.
    #[arg(long, default_value_t = 40)]
    pub eval_limit: usize,
    /// Save a checkpoint every N steps (and at the end); default: the stage's own cadence.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

/// The task suite of `run` (generated from the bundled corpus once, then read back).
pub fn suite(run: &Path, small: bool, seed: u64) -> anyhow::Result<Suite> {
    let dir = run.join("sft_data");
    if dir.join("test.jsonl").exists() {
        return Ok(load_suite(&dir)?);
    }
    let corpus = Corpus::bundled().context("the task suite is generated from the bundled corpus")?;
    let cfg = if small { SuiteConfig::small(seed, 150) } else { SuiteConfig { seed, ..SuiteConfig::default() } };
    let s = generate_suite(&cfg, &corpus);
    write_suite(&s, &dir)?;
    println!("task suite: {} train / {} val / {} test conversations in {}", s.train.len(), s.val.len(), s.test.len(), dir.display());
    Ok(s)
}

pub fn run_sft(a: &SftArgs, quiet: bool) -> anyhow::Result<serde_json::Value> {
    let tok = Tokenizer::load(&a.run.join("tokenizer.json")).context("SFT needs a pretrained run (chatforge pretrain)")?;
    let suite = suite(&a.run, a.small_suite, a.seed)?;
    let mut train: Vec<Conversation> = suite.train.iter().map(|t| t.conversation.clone()).collect();
    for path in &a.data {
        let (convs, skipped) = load_jsonl(path, a.skip_bad)?;
        if skipped > 0 {
            println!("{}: skipped {skipped} malformed lines", path.display());
        }
        train.extend(convs);
    }
    let val: Vec<Conversation> = suite.val.iter().map(|t| t.conversation.clone()).collect();
    let data = SftData::new(&tok, &train, &val)?;

    // Before: the base model, few-shot in plain text (it never saw the chat format).
    let before_path = a.run.join("sft_data/scores_base.json");
    let before = match std::fs::read_to_string(&before_path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        Some(s) => s,
        None => {
            let base = load_model(Cpu, &a.run.join("base"))?;
            let (s, _) = score_tasks(&base, &tok, &suite.test, Some(&suite.train));
            chatforge_core::checkpoint::write_atomic(&before_path, serde_json::to_string_pretty(&s)?.as_bytes())?;
            s
        }
    };
    let cfg = SftConfig { batch: a.batch, seed: a.seed, ..Default::default() };
    let mut cfg = cfg;
    cfg.optim.lr = a.lr;
    cfg.checkpoint_every = a.checkpoint_every.unwrap_or(cfg.checkpoint_every);
    let budget = match (&a.steps, &a.time_budget) {
        (Some(s), _) => Budget::Steps(*s),
        (_, Some(d)) => Budget::Seconds(parse_duration(d)?),
        _ => Budget::Steps(cfg.steps),
    };
    let out = match a.eval_every {
        None => sft(&a.run, cfg, budget, &tok, &data, quiet)?,
        Some(every) => {
            cfg.eval_every = every.max(1);
            let registry = Registry::load(&crate::eval_cmd::registry_dir(None)?)?;
            let specs = registry.select(&a.evals)?;
            let keys = training_keys(&a.run);
            let opts = RunOptions { limit: Some(a.eval_limit), many_samples: Some(10), ..RunOptions::new(&a.run, "sft") };
            let mut hook =
                |model: &mut chatforge_core::model::Llama<Cpu>, _step: usize| -> chatforge_train::Result<(serde_json::Value, String)> {
                    let mut policy = Borrowed { model, tok: &tok, batch: 32 };
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
            let out = sft_with_hook(&a.run, cfg, budget, &tok, &data, quiet, Some(&mut hook))?;
            plot_eval_curves(&a.run)?;
            out
        }
    };

    // After: the SFT model in ChatML on the same held-out tasks.
    let model = load_model(Cpu, &a.run.join("sft"))?;
    let (after, answers) = score_tasks(&model, &tok, &suite.test, None);
    let rows: Vec<serde_json::Value> = suite
        .test
        .iter()
        .zip(&answers)
        .map(|(t, ans)| {
            json!({"id": t.meta.id, "family": t.meta.family.name(), "prompt": t.prompt(), "reference": t.reference(), "answer": ans,
                   "grade": chatforge_data::tasks::grade(t, ans).score})
        })
        .collect();
    write_jsonl(&a.run.join("sft/test_answers.jsonl"), &rows)?;
    let family_scores: serde_json::Map<String, serde_json::Value> = after
        .family
        .iter()
        .map(|(f, s)| (f.clone(), json!({"before": before.family.get(f).copied().unwrap_or(0.0), "after": s})))
        .collect();
    let figures = json!({
        "val_loss": out.val_loss,
        "json_adherence": after.json_adherence,
        "json_adherence_before": before.json_adherence,
        "family_scores": family_scores,
        "test_tasks": after.n,
        "steps": out.steps,
        "tokens": out.tokens,
        "train_tokens_per_s": out.train_tokens_per_s,
        "wall_s": out.wall_s,
    });
    report::update_report(&a.run, "stages.sft", figures.clone())?;
    if !quiet {
        println!(
            "sft: val loss {:.4}; JSON adherence {:.1}% (base few-shot {:.1}%)",
            out.val_loss,
            100.0 * after.json_adherence,
            100.0 * before.json_adherence
        );
        println!("  {:<12} {:>8} {:>8}", "family", "before", "after");
        for (f, s) in &after.family {
            println!("  {:<12} {:>7.1}% {:>7.1}%", f, 100.0 * before.family.get(f).copied().unwrap_or(0.0), 100.0 * s);
        }
        println!("answers: {}", a.run.join("sft/test_answers.jsonl").display());
    }
    Ok(figures)
}

/// `plots/sft_evals.svg`: the figures of `--eval-every` against the step.
fn plot_eval_curves(run: &Path) -> anyhow::Result<()> {
    let lines = report::read_metrics(run, "sft");
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for l in &lines {
        let (Some(step), Some(evals)) = (l["step"].as_f64(), l["evals"].as_object()) else { continue };
        for (k, v) in evals {
            if let Some(x) = v.as_f64() {
                series.entry(k.clone()).or_default().push((step, x));
            }
        }
    }
    let s: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    report::line_plot(&run.join("plots/sft_evals.svg"), "Evals during SFT", "step", "share", &s)?;
    Ok(())
}

pub fn run(a: SftArgs) -> anyhow::Result<()> {
    run_sft(&a, false).map(|_| ())
}
