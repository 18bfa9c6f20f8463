//! `chatforge compare | headroom | pairs-curve`: how the aligned models compare with SFT on
//! held-out prompts (`chatforge_stages::{compare, headroom, pairs_curve}`).

use std::path::PathBuf;

use chatforge_data::tasks::Split;
use chatforge_stages::{compare, headroom, pairs_curve, Run};
use clap::Args;

use crate::args::PpoFlags;

fn c() -> compare::Config {
    compare::Config::default()
}

fn h() -> headroom::Config {
    headroom::Config::default()
}

fn p() -> pairs_curve::Config {
    pairs_curve::Config::default()
}

#[derive(Args, Clone)]
pub struct CompareArgs {
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = c().a)]
    pub a: String,
    #[arg(long, default_value_t = c().b)]
    pub b: String,
    /// Sampling temperature of both stages.
    #[arg(long, default_value_t = c().temperature)]
    pub temperature: f32,
    /// Sample B at this temperature instead (e.g. is RLHF better than a cooler SFT?).
    #[arg(long)]
    pub b_temperature: Option<f32>,
    #[arg(long, default_value_t = c().seed)]
    pub seed: u64,
    /// The prompts: test (reported and recorded) or val (for choosing settings; only printed).
    #[arg(long, default_value = "test", value_parser = ["test", "val"])]
    pub split: String,
}

impl CompareArgs {
    pub fn config(&self) -> compare::Config {
        compare::Config {
            a: self.a.clone(),
            b: self.b.clone(),
            temperature: self.temperature,
            b_temperature: self.b_temperature,
            seed: self.seed,
            split: if self.split == "val" { Split::Val } else { Split::Test },
        }
    }
}

pub fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let cfg = a.config();
    let f = compare::run(&Run::open(&a.run), &cfg)?;
    println!(
        "{} (T={}) vs {} (T={}): win rate {} on the held-out {} prompts (noise-free judge)",
        cfg.a,
        f.temperature_a,
        cfg.b,
        f.temperature_b,
        compare::describe(&f.win),
        a.split
    );
    let families: Vec<String> = f.win.by_family.iter().map(|(k, [w, t, l])| format!("{k} {w}/{t}/{l}")).collect();
    println!("wins/ties/losses by family: {}", families.join(", "));
    println!("{}", chatforge_stages::ppo::side_by_side((&cfg.b, &f.safety_b), &[(&cfg.a, &f.win, &f.safety_a)]));
    Ok(())
}

#[derive(Args, Clone)]
pub struct HeadroomArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// The stage whose answers are sampled and picked from.
    #[arg(long, default_value_t = h().stage)]
    pub stage: String,
    /// Answers per prompt; best-of-k is reported for k = 1, 2, 4, ... up to N.
    #[arg(long, default_value_t = h().n)]
    pub n: usize,
    #[arg(long, default_value_t = h().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = h().seed)]
    pub seed: u64,
}

impl HeadroomArgs {
    pub fn config(&self) -> headroom::Config {
        headroom::Config { stage: self.stage.clone(), n: self.n, temperature: self.temperature, seed: self.seed }
    }
}

pub fn run_headroom(a: HeadroomArgs) -> anyhow::Result<()> {
    println!("{}", headroom::run(&Run::open(&a.run), &a.config())?.summary());
    Ok(())
}

#[derive(Args, Clone)]
pub struct CurveArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Preference-pair counts to train from (the oldest first; capped at what the store holds).
    #[arg(long, value_delimiter = ',', default_values_t = p().pairs)]
    pub pairs: Vec<usize>,
    /// PPO at every point (the speedrun's by default).
    #[command(flatten)]
    pub ppo: PpoFlags,
    /// Reward-model epochs over the full store (the speedrun's 1); smaller subsets get
    /// proportionally more (capped at 10), so every point trains for about the same number of steps.
    #[arg(long, default_value_t = p().rm_epochs)]
    pub rm_epochs: f64,
    /// DPO epochs over the full store (the speedrun's 0.15), scaled the same way.
    #[arg(long, default_value_t = p().dpo_epochs)]
    pub dpo_epochs: f64,
}

impl CurveArgs {
    pub fn config(&self) -> pairs_curve::Config {
        pairs_curve::Config { pairs: self.pairs.clone(), ppo: self.ppo.config(), rm_epochs: self.rm_epochs, dpo_epochs: self.dpo_epochs }
    }
}

pub fn run_curve(a: CurveArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    pairs_curve::run(&run, &a.config())?;
    println!("data efficiency: {} and report.json stages.ppo/dpo.win_rate_by_pairs", run.dir.plot("win_rate_by_pairs.svg").display());
    Ok(())
}
