//! Data efficiency: for each preference-pair count N, a reward model and PPO trained from N
//! pairs, and DPO from the same N, each judged against SFT on held-out prompts. Every count is a
//! sub-run `R/pairs/n<N>/` that links R's tokenizer, task suite, SFT model and store and holds
//! its own reward model, PPO and DPO. Smaller subsets get proportionally more epochs (capped at
//! 10×) so that every point trains for about the same number of steps.

use chatforge_feedback::PairFilter;
use chatforge_rundir::plot::line_plot;
use chatforge_rundir::Key;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Pair counts (the oldest pairs first; capped at what the store holds).
    pub pairs: Vec<usize>,
    /// PPO at every point (as the speedrun's).
    pub ppo: crate::ppo::Config,
    /// Reward-model epochs over the full store (the speedrun's 1), scaled up for subsets.
    pub rm_epochs: f64,
    /// DPO epochs over the full store (the speedrun's 0.15), scaled up for subsets.
    pub dpo_epochs: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { pairs: vec![100, 300, 1000, 3000], ppo: crate::ppo::Config::default(), rm_epochs: 1.0, dpo_epochs: 0.15 }
    }
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub pairs: usize,
    pub win_rate: f64,
    pub ci95: (f64, f64),
    /// PPO's points only: its reward model's held-out accuracy and its final KL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rm_heldout_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curve {
    pub win_rate_by_pairs: Vec<Point>,
}

/// `stages.ppo.win_rate_by_pairs` and `stages.dpo.win_rate_by_pairs`.
#[derive(Debug, Clone)]
pub struct Figures {
    pub store_pairs: usize,
    pub ppo: Vec<Point>,
    pub dpo: Vec<Point>,
}

/// The sub-run of `n` pairs, its shared inputs linked from `run`.
fn sub_run(run: &Run, n: usize) -> Result<Run> {
    let sub = run.dir.pairs(n);
    std::fs::create_dir_all(sub.root()).map_err(|e| Error::io(sub.root(), e))?;
    let targets = sub.shared_with_subruns();
    for (from, to) in run.dir.shared_with_subruns().iter().zip(&targets) {
        let from =
            std::fs::canonicalize(from).map_err(|e| Error::Input(format!("{} needs {}: {e}", run.dir.root().display(), from.display())))?;
        if std::fs::symlink_metadata(to).is_err() {
            std::os::unix::fs::symlink(&from, to).map_err(|e| Error::io(to, e))?;
        }
    }
    Ok(Run::open(sub.root()).quiet(true))
}

/// Trains every point (printing a line each unless quiet) and records the curves and
/// `plots/win_rate_by_pairs.svg`.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    // Checked before the store is opened, which would create an empty one.
    if !run.dir.has_model("sft") {
        return Err(
            run.missing("SFT model (sft/model.safetensors)", format!("run `chatforge sft --run {}` first", run.dir.root().display()))
        );
    }
    let total = if run.dir.feedback().exists() { run.store()?.pairs(&PairFilter::default())?.len() } else { 0 };
    if total == 0 {
        return Err(Error::Missing { what: format!("{} holds no preference pairs", run.dir.root().display()), hint: run.label_hint() });
    }
    let mut counts: Vec<usize> = cfg.pairs.iter().map(|&n| n.min(total)).filter(|&n| n > 0).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() {
        return Err(Error::Input("--pairs needs at least one count above 0".into()));
    }
    if !run.quiet {
        let list = counts.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        println!("data efficiency: {list} of the store's {total} pairs, each through RM + PPO and through DPO");
    }
    let (mut ppo_rows, mut dpo_rows) = (vec![], vec![]);
    for &n in &counts {
        let sub = sub_run(run, n)?;
        let scale = (total as f64 / n as f64).min(10.0);
        // Strict pairs only, so that N counts the same pairs for the reward model and for DPO.
        let mut rm = crate::rm::Config { ties: false, pairs: Some(n), ..Default::default() };
        rm.train.epochs = cfg.rm_epochs * scale;
        let rm_out = crate::rm::run(&sub, &rm)?;
        let p = crate::ppo::run(&sub, &cfg.ppo)?;
        let mut dpo = crate::dpo::Config { pairs: Some(n), ..Default::default() };
        dpo.train.epochs = cfg.dpo_epochs * scale;
        let d = crate::dpo::run(&sub, &dpo)?;
        if !run.quiet {
            println!(
                "  {n:>5} pairs: RM {:.1}% vs the gold judge; win rate vs SFT: PPO {:.1}%, DPO {:.1}%",
                100.0 * rm_out.heldout_accuracy,
                100.0 * p.win_rate_vs_sft,
                100.0 * d.win_rate_vs_sft
            );
        }
        ppo_rows.push(Point {
            pairs: n,
            win_rate: p.win_rate_vs_sft,
            ci95: p.win_rate_vs_sft_detail.ci95,
            rm_heldout_accuracy: Some(rm_out.heldout_accuracy),
            kl: Some(p.kl),
        });
        dpo_rows.push(Point {
            pairs: n,
            win_rate: d.win_rate_vs_sft,
            ci95: d.win_rate_vs_sft_detail.ci95,
            rm_heldout_accuracy: None,
            kl: None,
        });
    }
    run.record(Key::Stage("ppo"), &Curve { win_rate_by_pairs: ppo_rows.clone() })?;
    run.record(Key::Stage("dpo"), &Curve { win_rate_by_pairs: dpo_rows.clone() })?;
    let series = |rows: &[Point]| -> Vec<(f64, f64)> { rows.iter().map(|r| (r.pairs as f64, 100.0 * r.win_rate)).collect() };
    line_plot(
        &run.dir.plot("win_rate_by_pairs.svg"),
        "win rate vs SFT by preference pairs (noise-free judge)",
        "preference pairs",
        "win rate vs SFT (%)",
        &[("RM + PPO", series(&ppo_rows)), ("DPO", series(&dpo_rows)), ("even", counts.iter().map(|&n| (n as f64, 50.0)).collect())],
    )?;
    Ok(Figures { store_pairs: total, ppo: ppo_rows, dpo: dpo_rows })
}
