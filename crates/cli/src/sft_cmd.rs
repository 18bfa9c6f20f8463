//! `chatforge sft`: fine-tune the base model to chat on the task suite (and the user's JSONL),
//! then score every family on the held-out test split before (base, few-shot) and after.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::chat::{load_jsonl, write_jsonl, Conversation};
use chatforge_data::tasks::{generate_suite, load_suite, write_suite, Corpus, Suite, SuiteConfig};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_train::pretrain::Budget;
use chatforge_train::report;
use chatforge_train::sft::{score_tasks, sft, SftConfig, SftData};
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
    let budget = match (&a.steps, &a.time_budget) {
        (Some(s), _) => Budget::Steps(*s),
        (_, Some(d)) => Budget::Seconds(parse_duration(d)?),
        _ => Budget::Steps(cfg.steps),
    };
    let out = sft(&a.run, cfg, budget, &tok, &data, quiet)?;

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

pub fn run(a: SftArgs) -> anyhow::Result<()> {
    run_sft(&a, false).map(|_| ())
}
