//! `chatforge ppo | dpo | compare`: RLHF from the run's preferences, and win rates.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::chat::Conversation;
use chatforge_data::tasks::Task;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::simulated::{Panel, PanelConfig};
use chatforge_feedback::PairFilter;
use chatforge_train::compare::{answers, judge, safety, WinRate};
use chatforge_train::dpo::{dpo, DpoConfig, DpoData};
use chatforge_train::labels::open_store;
use chatforge_train::ppo::{plot_rl, ppo, PpoConfig, PpoData};
use chatforge_train::report;
use chatforge_train::sft::SftData;
use clap::Args;
use serde_json::json;

#[derive(Args, Clone)]
pub struct PpoArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub iterations: usize,
    /// Answers sampled per iteration.
    #[arg(long, default_value_t = 32)]
    pub rollouts: usize,
    /// Answers per prompt; each scored relative to its siblings (1: InstructGPT's one answer per prompt).
    #[arg(long, default_value_t = 4)]
    pub group: usize,
    /// Initial KL coefficient β.
    #[arg(long, default_value_t = 0.02)]
    pub kl_coef: f64,
    /// Target KL per answer (nats) for the adaptive controller; 0 keeps β fixed.
    #[arg(long, default_value_t = 3.0)]
    pub kl_target: f64,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f32,
    /// PPO-ptx: weight of the SFT next-token loss mixed into every update (0: off). InstructGPT's
    /// remedy for regressions; here it keeps JSON-only adherence at SFT's level.
    #[arg(long, default_value_t = 0.5)]
    pub ptx_coef: f64,
    /// Save a checkpoint every N iterations (and at the end); default: the stage's own cadence.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

#[derive(Args, Clone)]
pub struct DpoArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f32,
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f32,
    /// Use at most this many preference pairs (the oldest first).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Weight of the SFT next-token loss mixed into every step, as PPO-ptx (0: off); 1.0 keeps
    /// JSON-only adherence at SFT's level in the speedrun (0.5 did not).
    #[arg(long, default_value_t = 1.0)]
    pub ptx_coef: f64,
    /// Save a checkpoint every N steps (and at the end); default: the stage's own cadence.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

#[derive(Args, Clone)]
pub struct CompareArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value = "ppo")]
    pub a: String,
    #[arg(long, default_value = "sft")]
    pub b: String,
    /// Sampling temperature of both stages.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample B at this temperature instead (e.g. is RLHF better than a cooler SFT?).
    #[arg(long)]
    pub b_temperature: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub(crate) fn tok(run: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::load(&run.join("tokenizer.json")).context("RLHF needs a trained run")
}

/// A stage's answers to the held-out tasks, cached in `R/<stage>/answers-*.json` under the
/// checkpoint's sha256 (SFT's answers serve every comparison against it).
pub(crate) fn stage_answers(
    run: &Path,
    stage: &str,
    tok: &Tokenizer,
    test: &[Task],
    temperature: f32,
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let dir = run.join(stage);
    let sha = chatforge_core::checkpoint::sha256_file(&dir.join("model.safetensors"))?;
    let cache = dir.join(format!("answers-t{temperature}-s{seed}-{}.json", &sha[..12]));
    if let Some(v) = std::fs::read_to_string(&cache).ok().and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok()) {
        if v.len() == test.len() {
            return Ok(v);
        }
    }
    let model = load_model(Cpu, &dir).with_context(|| format!("loading {stage}"))?;
    let out = answers(&model, tok, test, temperature, 64, seed, true);
    chatforge_core::checkpoint::write_atomic(&cache, serde_json::to_string(&out)?.as_bytes())?;
    Ok(out)
}

/// The stage's figures on the held-out tasks: safety and JSON adherence (greedy answers).
pub fn stage_figures(run: &Path, stage: &str, tok: &Tokenizer, test: &[Task]) -> anyhow::Result<serde_json::Value> {
    let greedy = stage_answers(run, stage, tok, test, 0.0, 0)?;
    let s = safety(test, &greedy);
    Ok(json!({"json_adherence": s.json_adherence, "harmful_compliance": s.harmful_compliance, "over_refusal": s.over_refusal}))
}

/// Win rate of stage `a` over stage `b` on the test prompts, by the noise-free judge.
pub fn win_rate(run: &Path, a: &str, b: &str, tok: &Tokenizer, test: &[Task], temperature: [f32; 2], seed: u64) -> anyhow::Result<WinRate> {
    let xa = stage_answers(run, a, tok, test, temperature[0], seed)?;
    let xb = stage_answers(run, b, tok, test, temperature[1], seed)?;
    Ok(judge(&Panel::new(&PanelConfig::default()), test, &xa, &xb))
}

fn wr_json(w: &WinRate) -> serde_json::Value {
    json!({"win_rate": w.win_rate, "ci95": [w.ci95.0, w.ci95.1], "wins": w.wins, "ties": w.ties, "losses": w.losses, "n": w.n})
}

/// The SFT conversations of the PTX term (PPO-ptx, DPO + SFT loss), when `coef > 0`.
fn ptx_rows(tok: &Tokenizer, train: &[Task], coef: f64) -> anyhow::Result<Option<SftData>> {
    if coef <= 0.0 {
        return Ok(None);
    }
    let convs: Vec<Conversation> = train.iter().map(|t| t.conversation.clone()).collect();
    Ok(Some(SftData::new(tok, &convs, &convs[..1])?))
}

pub fn run_ppo(a: &PpoArgs, quiet: bool) -> anyhow::Result<serde_json::Value> {
    let tok = tok(&a.run)?;
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    // Prompts: the suite's training split and the store's prompts (deployment feeds alignment).
    let mut prompts: Vec<Conversation> = suite.train.iter().map(|t| t.prompt()).collect();
    if let Ok(store) = open_store(&a.run) {
        for p in store.pairs(&PairFilter::default())? {
            prompts.push(p.prompt);
        }
    }
    prompts.sort_by_key(chatforge_train::labels::prompt_key);
    prompts.dedup();
    let sft_data = ptx_rows(&tok, &suite.train, a.ptx_coef)?;
    let mut cfg = PpoConfig {
        iterations: a.iterations,
        rollouts: a.rollouts,
        group: a.group,
        kl_coef: a.kl_coef,
        ptx_coef: a.ptx_coef,
        ..Default::default()
    };
    cfg.kl_target = (a.kl_target > 0.0).then_some(a.kl_target);
    cfg.optim.lr = a.lr;
    cfg.checkpoint_every = a.checkpoint_every.unwrap_or(cfg.checkpoint_every);
    let out = ppo(&a.run, cfg, &tok, &PpoData { prompts: &prompts, ptx: sft_data.as_ref() }, quiet)?;
    let before = stage_figures(&a.run, "sft", &tok, &suite.test)?;
    let mut figures = stage_figures(&a.run, "ppo", &tok, &suite.test)?;
    let w = win_rate(&a.run, "ppo", "sft", &tok, &suite.test, [1.0; 2], 0)?;
    figures["win_rate_vs_sft"] = json!(w.win_rate);
    figures["win_rate_vs_sft_detail"] = wr_json(&w);
    figures["kl"] = json!(out.last.kl);
    figures["reward"] = json!(out.last.reward);
    figures["iterations"] = json!(out.iterations);
    figures["wall_s"] = json!(out.wall_s);
    figures["before"] = before.clone();
    // Reward hacking shows as the reward model's score rising while the held-out judge prefers
    // the SFT model: the policy found what the reward model over-rates.
    let m = report::read_metrics(&a.run, "ppo");
    let early: Vec<f64> = m.iter().take(3).filter_map(|v| v["reward"].as_f64()).collect();
    let late: Vec<f64> = m.iter().rev().take(3).filter_map(|v| v["reward"].as_f64()).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rise = mean(&late) - mean(&early);
    figures["reward_rise"] = json!(rise);
    if rise > 0.0 && w.ci95.1 < 0.5 {
        let warning = format!(
            "reward hacking: the reward model's mean score rose by {rise:.3} during PPO while the held-out judge prefers SFT (win rate {:.1}%, 95% CI up to {:.1}%)",
            100.0 * w.win_rate,
            100.0 * w.ci95.1
        );
        figures["warning"] = json!(warning);
        eprintln!("WARNING: {warning}");
    }
    report::update_report(&a.run, "stages.ppo", figures.clone())?;
    if !quiet {
        print_rl("ppo", &w, &before, &figures);
        println!("  final KL to SFT {:.2} nats/answer, mean RM reward {:.3} (rise {rise:+.3})", out.last.kl, out.last.reward);
    }
    Ok(figures)
}

fn print_rl(stage: &str, w: &WinRate, before: &serde_json::Value, after: &serde_json::Value) {
    println!(
        "{stage}: win rate vs SFT {:.1}% (95% CI {:.1}-{:.1}%; {} wins, {} ties, {} losses of {})",
        100.0 * w.win_rate,
        100.0 * w.ci95.0,
        100.0 * w.ci95.1,
        w.wins,
        w.ties,
        w.losses,
        w.n
    );
    for k in ["json_adherence", "harmful_compliance", "over_refusal"] {
        println!(
            "  {k:<20} SFT {:>6.1}%  {stage} {:>6.1}%",
            100.0 * before[k].as_f64().unwrap_or(f64::NAN),
            100.0 * after[k].as_f64().unwrap_or(f64::NAN)
        );
    }
}

pub fn run_dpo(a: &DpoArgs, quiet: bool) -> anyhow::Result<serde_json::Value> {
    let tok = tok(&a.run)?;
    let store = open_store(&a.run)?;
    let mut pairs = store.pairs(&PairFilter::default())?;
    if let Some(n) = a.pairs {
        pairs.truncate(n);
    }
    let mut reference = load_model(Cpu, &a.run.join("sft")).context("DPO's reference is the SFT model")?;
    let data = DpoData::new(&tok, &pairs, &mut reference)?;
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    let sft_data = ptx_rows(&tok, &suite.train, a.ptx_coef)?;
    let mut cfg = DpoConfig { beta: a.beta, epochs: a.epochs, ptx_coef: a.ptx_coef, ..Default::default() };
    cfg.optim.lr = a.lr;
    cfg.checkpoint_every = a.checkpoint_every.unwrap_or(cfg.checkpoint_every);
    let out = dpo(&a.run, cfg, &data, sft_data.as_ref().map(|d| (d, tok.eot_id())), quiet)?;
    plot_rl(&a.run)?;
    let before = stage_figures(&a.run, "sft", &tok, &suite.test)?;
    let mut figures = stage_figures(&a.run, "dpo", &tok, &suite.test)?;
    let w = win_rate(&a.run, "dpo", "sft", &tok, &suite.test, [1.0; 2], 0)?;
    figures["win_rate_vs_sft"] = json!(w.win_rate);
    figures["win_rate_vs_sft_detail"] = wr_json(&w);
    figures["pairs"] = json!(out.pairs);
    figures["steps"] = json!(out.steps);
    figures["reward_accuracy"] = json!(out.reward_accuracy);
    figures["wall_s"] = json!(out.wall_s);
    figures["before"] = before.clone();
    report::update_report(&a.run, "stages.dpo", figures.clone())?;
    if !quiet {
        print_rl("dpo", &w, &before, &figures);
    }
    Ok(figures)
}

pub fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let tok = tok(&a.run)?;
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    let tb = a.b_temperature.unwrap_or(a.temperature);
    let w = win_rate(&a.run, &a.a, &a.b, &tok, &suite.test, [a.temperature, tb], a.seed)?;
    println!(
        "{} (T={}) vs {} (T={tb}): win rate {:.1}% (95% CI {:.1}-{:.1}%): {} wins, {} ties, {} losses on {} held-out prompts (noise-free judge)",
        a.a,
        a.temperature,
        a.b,
        100.0 * w.win_rate,
        100.0 * w.ci95.0,
        100.0 * w.ci95.1,
        w.wins,
        w.ties,
        w.losses,
        w.n
    );
    let mut figures = wr_json(&w);
    figures["temperature_a"] = json!(a.temperature);
    figures["temperature_b"] = json!(tb);
    report::update_report(&a.run, &format!("compare.{}_vs_{}", a.a, a.b), figures)?;
    Ok(())
}

#[derive(Args, Clone)]
pub struct CurveArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Preference-pair counts to train from (the oldest first; capped at what the store holds).
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000,3000")]
    pub pairs: Vec<usize>,
    /// PPO iterations at every point (as the speedrun's PPO).
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    #[arg(long, default_value_t = 32)]
    pub rollouts: usize,
    /// Reward-model epochs over the full store (the speedrun's 1); smaller subsets get
    /// proportionally more (capped at 10), so every point trains for about the same number of steps.
    #[arg(long, default_value_t = 1.0)]
    pub rm_epochs: f64,
    /// DPO epochs over the full store (the speedrun's 0.15), scaled the same way.
    #[arg(long, default_value_t = 0.15)]
    pub dpo_epochs: f64,
}

/// `R/pairs/n{N}`: a run folder that shares R's tokenizer, task suite, SFT model and store
/// (symbolic links) and holds its own reward model, PPO and DPO checkpoints.
fn pairs_run(run: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let sub = run.join("pairs").join(format!("n{n}"));
    std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    for name in ["tokenizer.json", "sft", "sft_data", "feedback.sqlite"] {
        let (from, to) =
            (std::fs::canonicalize(run.join(name)).with_context(|| format!("{} needs {name}", run.display()))?, sub.join(name));
        if std::fs::symlink_metadata(&to).is_err() {
            std::os::unix::fs::symlink(&from, &to).with_context(|| format!("linking {}", to.display()))?;
        }
    }
    Ok(sub)
}

/// Data efficiency: for each pair count N, a reward model and PPO from N pairs and DPO from the
/// same N, each judged against SFT. Writes `stages.ppo.win_rate_by_pairs`,
/// `stages.dpo.win_rate_by_pairs` and `R/plots/win_rate_by_pairs.svg`.
pub fn run_curve(a: CurveArgs) -> anyhow::Result<()> {
    // Checked before the store is opened, which would create an empty one.
    if !a.run.join("sft/model.safetensors").exists() {
        anyhow::bail!("{} has no SFT model (sft/model.safetensors): run `chatforge sft --run {}` first", a.run.display(), a.run.display());
    }
    let total = if a.run.join("feedback.sqlite").exists() { open_store(&a.run)?.pairs(&PairFilter::default())?.len() } else { 0 };
    if total == 0 {
        anyhow::bail!("{} holds no preference pairs: run `chatforge label --run {} --simulated` first", a.run.display(), a.run.display());
    }
    let mut counts: Vec<usize> = a.pairs.iter().map(|&n| n.min(total)).filter(|&n| n > 0).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() {
        anyhow::bail!("--pairs needs at least one count above 0");
    }
    println!("data efficiency: {} of the store's {total} pairs, each through RM + PPO and through DPO", fmt_counts(&counts));
    let (mut ppo_rows, mut dpo_rows) = (vec![], vec![]);
    for &n in &counts {
        let sub = pairs_run(&a.run, n)?;
        let scale = (total as f64 / n as f64).min(10.0);
        // Strict pairs only, so that N counts the same pairs for the reward model and for DPO.
        let rm = crate::rm_cmd::RmArgs {
            run: sub.clone(),
            epochs: a.rm_epochs * scale,
            lr: 3e-4,
            batch_prompts: 8,
            ties: false,
            pairs: Some(n),
            only: None,
            checkpoint_every: None,
        };
        let rm_out = crate::rm_cmd::run_rm(&rm, true)?;
        let ppo = PpoArgs {
            run: sub.clone(),
            iterations: a.iterations,
            rollouts: a.rollouts,
            group: 4,
            kl_coef: 0.02,
            kl_target: 3.0,
            lr: 5e-5,
            ptx_coef: 0.5,
            checkpoint_every: None,
        };
        let p = run_ppo(&ppo, true)?;
        let dpo = DpoArgs {
            run: sub.clone(),
            beta: 0.1,
            epochs: a.dpo_epochs * scale,
            lr: 1e-4,
            pairs: Some(n),
            ptx_coef: 1.0,
            checkpoint_every: None,
        };
        let d = run_dpo(&dpo, true)?;
        let row =
            |f: &serde_json::Value| json!({"pairs": n, "win_rate": f["win_rate_vs_sft"], "ci95": f["win_rate_vs_sft_detail"]["ci95"]});
        let mut pr = row(&p);
        pr["rm_heldout_accuracy"] = json!(rm_out.eval.heldout_accuracy);
        pr["kl"] = p["kl"].clone();
        let dr = row(&d);
        println!(
            "  {n:>5} pairs: RM {:.1}% vs the gold judge; win rate vs SFT: PPO {:.1}%, DPO {:.1}%",
            100.0 * rm_out.eval.heldout_accuracy,
            100.0 * p["win_rate_vs_sft"].as_f64().unwrap_or(f64::NAN),
            100.0 * d["win_rate_vs_sft"].as_f64().unwrap_or(f64::NAN)
        );
        ppo_rows.push(pr);
        dpo_rows.push(dr);
    }
    report::update_report(&a.run, "stages.ppo", json!({"win_rate_by_pairs": ppo_rows}))?;
    report::update_report(&a.run, "stages.dpo", json!({"win_rate_by_pairs": dpo_rows}))?;
    let series = |rows: &[serde_json::Value]| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r["pairs"].as_f64().unwrap_or(f64::NAN), 100.0 * r["win_rate"].as_f64().unwrap_or(f64::NAN))).collect()
    };
    let plot = a.run.join("plots/win_rate_by_pairs.svg");
    report::line_plot(
        &plot,
        "win rate vs SFT by preference pairs (noise-free judge)",
        "preference pairs",
        "win rate vs SFT (%)",
        &[("RM + PPO", series(&ppo_rows)), ("DPO", series(&dpo_rows)), ("even", counts.iter().map(|&n| (n as f64, 50.0)).collect())],
    )?;
    println!("data efficiency: {} and report.json stages.ppo/dpo.win_rate_by_pairs", plot.display());
    Ok(())
}

fn fmt_counts(c: &[usize]) -> String {
    c.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}
