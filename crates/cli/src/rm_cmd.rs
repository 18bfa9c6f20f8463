//! `chatforge rm`: train the reward model on the run's preference store.

use std::path::PathBuf;

use anyhow::Context;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::simulated::{features, Panel, PanelConfig};
use chatforge_feedback::{Choice, PairFilter};
use chatforge_train::labels::{open_store, prompt_key, task_index};
use chatforge_train::report;
use chatforge_train::rm::{train_rm, RmConfig, RmData, RmOutcome};
use clap::Args;

#[derive(Args, Clone)]
pub struct RmArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f32,
    /// Prompts per step (all their answers in one forward pass).
    #[arg(long, default_value_t = 8)]
    pub batch_prompts: usize,
    /// Train on ties too (label ½: the two rewards are pulled together, which teaches the model
    /// what does not matter); `--ties false` trains on strict pairs only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ties: bool,
    /// Use at most this many pairs (the oldest first).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Only human (`human`) or only simulated (`simulated`) labels.
    #[arg(long)]
    pub only: Option<String>,
    /// Save a checkpoint every N steps (and at the end); default: the stage's own cadence.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

pub fn run_rm(a: &RmArgs, quiet: bool) -> anyhow::Result<RmOutcome> {
    let tok = Tokenizer::load(&a.run.join("tokenizer.json")).context("the reward model needs a trained run")?;
    let store = open_store(&a.run)?;
    let simulated = match a.only.as_deref() {
        None => None,
        Some("human") => Some(false),
        Some("simulated") => Some(true),
        Some(o) => anyhow::bail!("--only takes human or simulated, not {o:?}"),
    };
    let mut pairs = store.pairs(&PairFilter { ties: a.ties, simulated })?;
    if let Some(n) = a.pairs {
        pairs.truncate(n);
    }
    if pairs.is_empty() {
        anyhow::bail!(
            "{} holds no preference pairs: run `chatforge label --run {} --simulated` or vote on the rater page",
            store.path().display(),
            a.run.display()
        );
    }
    // The gold judge knows the task of every suite prompt; other prompts have no gold verdict.
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    let index = task_index(&suite.train);
    let panel = Panel::new(&PanelConfig::default());
    let gold = |p: &chatforge_feedback::Pair| {
        let task = index.get(&prompt_key(&p.prompt))?;
        Some(match panel.gold_verdict(&features(task, &p.chosen), &features(task, &p.rejected)) {
            Choice::A => 1.0,
            Choice::B => 0.0,
            Choice::Tie | Choice::BothBad => 0.5,
        })
    };
    let mut cfg = RmConfig { epochs: a.epochs, batch_prompts: a.batch_prompts, ..Default::default() };
    cfg.optim.lr = a.lr;
    cfg.checkpoint_every = a.checkpoint_every.unwrap_or(cfg.checkpoint_every);
    let ctx = chatforge_core::config::LlamaConfig::from_json_file(&a.run.join("sft/config.json"))?.max_position_embeddings;
    let data = RmData::new(&tok, &pairs, ctx, &cfg, gold)?;
    let out = train_rm(&a.run, cfg, &data, quiet)?;
    let e = &out.eval;
    report::update_report(
        &a.run,
        "stages.rm",
        serde_json::json!({
            "heldout_accuracy": e.heldout_accuracy,
            "heldout_accuracy_noisy": e.heldout_accuracy_noisy,
            "gold_accuracy_noisy": e.gold_accuracy_noisy,
            "ece": e.ece,
            "heldout_loss": e.mean_loss,
            "reliability": e.reliability,
            "pairs": pairs.len(),
            "tie_pairs": pairs.iter().filter(|p| p.label == 0.5).count(),
            "train_pairs": out.train_pairs,
            "heldout_pairs": e.heldout_pairs,
            "gold_pairs": e.gold_pairs,
            "steps": out.steps,
            "wall_s": out.wall_s,
        }),
    )?;
    if !quiet {
        println!(
            "rm: held-out accuracy {:.1}% vs the noise-free judges ({} pairs), {:.1}% vs the noisy labels ({} pairs; the noise-free judge itself scores {:.1}% against them); ECE {:.3}",
            100.0 * e.heldout_accuracy,
            e.gold_pairs,
            100.0 * e.heldout_accuracy_noisy,
            e.heldout_pairs,
            100.0 * e.gold_accuracy_noisy,
            e.ece
        );
        if let Some(s) = report::read_report(&a.run)["stages"]["labels"]["strict_agreement"].as_f64() {
            println!("  the simulated labelers predict each other's strict labels {:.1}% of the time", 100.0 * s);
        }
    }
    Ok(out)
}

pub fn run(a: RmArgs) -> anyhow::Result<()> {
    run_rm(&a, false).map(|_| ())
}
