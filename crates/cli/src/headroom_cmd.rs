//! Headroom: how much better the assistant's answers could be if it chose among its own samples,
//! and how much of that the reward model can see.
//!
//! For each held-out prompt the stage answers N times. Best-of-k answers (k = 1, 2, 4, ... N) are
//! picked three ways and judged against SFT's single samples (the B side of `compare`):
//! - by the **reward model**: what RLHF against it can reach at best-of-k's KL (≤ ln k nats);
//! - by the **gold judge**: the ceiling if the reward model were perfect;
//! - by the gold judge **blind** to correctness and the reference answer: a judge that does not
//!   know the held-out facts and can only reward form, obedience and style.
//!
//! It also reports how often the reward model orders two of these answers as the gold judge does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::sample::SamplingParams;
use chatforge_data::chat::Conversation;
use chatforge_feedback::simulated::{features, Features, Panel, PanelConfig, Weights};
use chatforge_train::compare::{best_of, judge, ranking_accuracy, WinRate};
use chatforge_train::labels::sample_answers;
use chatforge_train::report;
use chatforge_train::rm::RewardModel;
use clap::Args;
use serde_json::json;

#[derive(Args, Clone)]
pub struct HeadroomArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// The stage whose answers are sampled and picked from.
    #[arg(long, default_value = "sft")]
    pub stage: String,
    /// Answers per prompt; best-of-k is reported for k = 1, 2, 4, ... up to N.
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Seeds of the candidate answers start here, away from `compare`'s seeds.
const SEED_BASE: u64 = 1 << 32;

pub fn run_headroom(a: &HeadroomArgs, quiet: bool) -> anyhow::Result<serde_json::Value> {
    if a.n < 1 {
        anyhow::bail!("--n needs at least one answer per prompt");
    }
    if !a.run.join("rm/model.safetensors").exists() {
        anyhow::bail!("{} has no reward model (rm/model.safetensors): run `chatforge rm --run {}` first", a.run.display(), a.run.display());
    }
    let tok = crate::rl_cmd::tok(&a.run)?;
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    let test = &suite.test;
    let model = load_model(Cpu, &a.run.join(&a.stage)).with_context(|| format!("loading {}", a.stage))?;
    let base = crate::rl_cmd::stage_answers(&a.run, "sft", &tok, test, 1.0, 0)?;
    let prompts: Vec<Conversation> = test.iter().map(|t| t.prompt()).collect();
    let params = SamplingParams { temperature: a.temperature, top_k: 0, top_p: 1.0 };
    let samples = sample_answers(&model, &tok, &prompts, a.n, params, 64, SEED_BASE + a.seed, quiet);
    drop(model);

    let mut rm = RewardModel::load(&a.run.join("rm"))?;
    let panel = Panel::new(&PanelConfig::default());
    let blind_weights = Weights { correct: 0.0, similar: 0.0, ..Weights::GOLD };
    let (mut by_rm, mut by_gold, mut by_blind) = (vec![], vec![], vec![]);
    let mut ranking: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for ((task, prompt), answers) in test.iter().zip(&prompts).zip(&samples) {
        let items: Vec<(&Conversation, &str)> = answers.iter().map(|x| (prompt, x.as_str())).collect();
        let r = rm.score(&tok, &items);
        let feats: Vec<Features> = answers.iter().map(|x| features(task, x)).collect();
        let g: Vec<f32> = feats.iter().map(|f| panel.gold_score(f)).collect();
        by_blind.push(feats.iter().map(|f| blind_weights.score(f)).collect::<Vec<f32>>());
        let (right, n) = ranking_accuracy(&r, &g, panel.tie_margin);
        let e = ranking.entry(task.meta.family.name().to_string()).or_default();
        e.0 += right;
        e.1 += n;
        by_rm.push(r);
        by_gold.push(g);
    }
    let (right, pairs) = ranking.values().fold((0.0, 0), |(r, n), v| (r + v.0, n + v.1));
    let accuracy = right / pairs.max(1) as f64;

    let wr =
        |w: &WinRate| json!({"win_rate": w.win_rate, "ci95": [w.ci95.0, w.ci95.1], "wins": w.wins, "ties": w.ties, "losses": w.losses});
    let mut rows = vec![];
    let mut series: [(&str, Vec<(f64, f64)>); 3] =
        [("picked by the reward model", vec![]), ("by the gold judge", vec![]), ("by the gold judge, blind to facts", vec![])];
    if !quiet {
        println!(
            "headroom: best-of-k of {} answers ({} at T={}) vs SFT's single samples on {} held-out prompts (noise-free judge)",
            a.n,
            a.stage,
            a.temperature,
            test.len()
        );
        println!("  {:>3}  {:>14} {:>14} {:>14}", "k", "reward model", "gold judge", "blind judge");
    }
    let mut k = 1;
    while k <= a.n {
        let pick =
            |scores: &[Vec<f32>]| -> Vec<String> { best_of(scores, k).into_iter().zip(&samples).map(|(j, s)| s[j].clone()).collect() };
        let w: Vec<WinRate> = [&by_rm, &by_gold, &by_blind].iter().map(|s| judge(&panel, test, &pick(s), &base)).collect();
        if !quiet {
            println!("  {k:>3}  {:>13.1}% {:>13.1}% {:>13.1}%", 100.0 * w[0].win_rate, 100.0 * w[1].win_rate, 100.0 * w[2].win_rate);
        }
        for (s, w) in series.iter_mut().zip(&w) {
            s.1.push((k as f64, 100.0 * w.win_rate));
        }
        rows.push(json!({"k": k, "reward_model": wr(&w[0]), "gold": wr(&w[1]), "blind": wr(&w[2])}));
        k *= 2;
    }
    let by_family: serde_json::Map<String, serde_json::Value> =
        ranking.iter().map(|(f, (r, n))| (f.clone(), json!({"accuracy": r / (*n).max(1) as f64, "pairs": n}))).collect();
    if !quiet {
        println!("  the reward model orders {:.1}% of {pairs} pairs of these answers as the gold judge does", 100.0 * accuracy);
    }
    let figures = json!({
        "stage": a.stage, "n": a.n, "temperature": a.temperature, "prompts": test.len(),
        "best_of": rows,
        "rm_ranking_accuracy": accuracy, "rm_ranking_pairs": pairs, "rm_ranking_by_family": by_family,
    });
    report::update_report(&a.run, "stages.headroom", figures.clone())?;
    let even: Vec<(f64, f64)> = series[0].1.iter().map(|&(k, _)| (k, 50.0)).collect();
    let [s0, s1, s2] = series;
    report::line_plot(
        &a.run.join("plots/headroom.svg"),
        "best-of-k vs SFT: what picking among its own answers is worth",
        "k (answers to choose from)",
        "win rate vs SFT (%)",
        &[s0, s1, s2, ("even", even)],
    )?;
    Ok(figures)
}

pub fn run(a: HeadroomArgs) -> anyhow::Result<()> {
    run_headroom(&a, false).map(|_| ())
}
