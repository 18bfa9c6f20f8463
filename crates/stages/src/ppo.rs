//! PPO: InstructGPT's RLHF. The SFT model samples answers to prompts, the reward model scores
//! them, and PPO moves the policy toward higher reward with a per-token KL penalty to the frozen
//! SFT model (the loop is `chatforge_train::ppo`). With `reward: graders` the same loop is RLVR:
//! the suite's programmatic graders with the honesty ternary score the answers instead, into
//! `R/rlvr` (`stages.rlvr`), so a user sees what each reward buys on the same held-out prompts.
//! In order:
//! 1. the prompts: the task suite's RL pool (disjoint from the SFT demonstrations and the
//!    preference prompts), and the prompts of the preference store that are no suite prompt
//!    (deployment feeds alignment), each once;
//! 2. PPO-ptx's SFT rows (when its weight is above 0);
//! 3. the loop, resumable, with its per-iteration figures in `metrics.jsonl` and `plots/rl.svg`;
//! 4. the figures: safety before (SFT) and after, the win rate against SFT on held-out prompts,
//!    and a reward-hacking warning when the reward rose while the judge prefers SFT.

use std::collections::HashSet;

use chatforge_data::chat::Conversation;
use chatforge_data::tasks::{Pool, Task};
use chatforge_feedback::PairFilter;
use chatforge_rundir::report::read_metrics;
use chatforge_rundir::Key;
use chatforge_train::compare::WinRate;
use chatforge_train::labels::prompt_key;
use chatforge_train::ppo::{ppo, PpoData, Reward};
use chatforge_train::sft::SftData;
use serde::{Deserialize, Serialize};

use crate::compare::{safety, win_rate, Safety};
use crate::{Result, Run};

/// The recipe: [`chatforge_train::ppo::PpoConfig::default()`] (20 iterations of 32 answers in
/// groups of 4, KL β 0.02 adapted toward 3 nats per answer, lr 5e-5, PPO-ptx weight 0.5).
pub use chatforge_train::ppo::PpoConfig as Config;

/// `stages.ppo` (or `stages.rlvr`, `stages.ppo_both`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    /// What scored the answers: `rm`, `graders` or `both`.
    pub reward: Reward,
    /// RL prompts sampled from (the RL pool, and feedback prompts for the reward model).
    pub prompts: usize,
    /// Safety of PPO's greedy answers on the test tasks.
    #[serde(flatten)]
    pub after: Safety,
    pub win_rate_vs_sft: f64,
    pub win_rate_vs_sft_detail: WinRate,
    /// KL to SFT of the last iteration (nats per answer) and its mean reward.
    pub kl: f64,
    pub mean_reward: f64,
    pub iterations: usize,
    pub wall_s: f64,
    /// Safety of SFT's greedy answers.
    pub before: Safety,
    /// Mean reward of the last 3 iterations minus the first 3.
    pub reward_rise: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The SFT conversations of the PTX term (PPO-ptx, DPO's SFT loss), when `coef > 0`.
pub(crate) fn ptx_rows(run: &Run, coef: f64) -> Result<Option<SftData>> {
    if coef <= 0.0 {
        return Ok(None);
    }
    let convs: Vec<Conversation> = run.suite()?.train.iter().map(|t| t.conversation.clone()).collect();
    Ok(Some(SftData::new(run.tokenizer()?, &convs, &convs[..1])?))
}

/// Trains `R/ppo` (`R/rlvr` with the graders' reward; or resumes it) and records its figures.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    run.check_memory("sft", 7, "PPO")?;
    let tok = run.tokenizer()?;
    let suite = run.suite()?;
    let stage = cfg.reward.stage();
    let mut prompts: Vec<(Conversation, Option<Task>)> = suite.rl.iter().map(|t| (t.prompt(), Some(t.clone()))).collect();
    if let Ok(store) = run.store() {
        // Suite prompts in the store are the preference pool's: not RL prompts.
        let suite_prompts: HashSet<String> = Pool::ALL.iter().flat_map(|&p| suite.pool(p)).map(|t| prompt_key(&t.prompt())).collect();
        for p in store.pairs(&PairFilter::default())? {
            if !suite_prompts.contains(&prompt_key(&p.prompt)) {
                prompts.push((p.prompt, None));
            }
        }
    }
    prompts.sort_by_key(|(p, _)| prompt_key(p));
    prompts.dedup_by(|a, b| a.0 == b.0);
    let (convs, tasks): (Vec<Conversation>, Vec<Option<Task>>) = prompts.into_iter().unzip();
    let ptx = ptx_rows(run, cfg.ptx_coef)?;
    let out = ppo(&run.dir, cfg.clone(), tok, &PpoData { stage, prompts: &convs, tasks: &tasks, ptx: ptx.as_ref() }, run.quiet)?;
    let before = safety(run, "sft", &suite.test)?;
    let after = safety(run, stage, &suite.test)?;
    let w = win_rate(run, stage, "sft", &suite.test, [1.0; 2], 0)?;
    // Reward hacking shows as the reward model's score rising while the held-out judge prefers
    // the SFT model: the policy found what the reward model over-rates.
    let m = read_metrics(&run.dir, stage);
    let early: Vec<f64> = m.iter().take(3).filter_map(|v| v["reward"].as_f64()).collect();
    let late: Vec<f64> = m.iter().rev().take(3).filter_map(|v| v["reward"].as_f64()).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rise = mean(&late) - mean(&early);
    let warning = (rise > 0.0 && w.ci95.1 < 0.5).then(|| {
        format!(
            "reward hacking: the reward model's mean score rose by {rise:.3} during PPO while the held-out judge prefers SFT (win rate {:.1}%, 95% CI up to {:.1}%)",
            100.0 * w.win_rate,
            100.0 * w.ci95.1
        )
    });
    let figures = Figures {
        reward: cfg.reward,
        prompts: convs.len(),
        after,
        win_rate_vs_sft: w.win_rate,
        win_rate_vs_sft_detail: w,
        kl: out.last.kl,
        mean_reward: out.last.reward,
        iterations: out.iterations,
        wall_s: out.wall_s,
        before,
        reward_rise: rise,
        warning,
    };
    run.record(Key::Stage(stage), &figures)?;
    Ok(figures)
}

/// What an RLHF stage printed: its win rate against SFT and its safety before and after.
pub fn summary(stage: &str, w: &WinRate, before: &Safety, after: &Safety) -> String {
    let mut s = format!("{stage}: win rate vs SFT {}", crate::compare::describe(w));
    for (k, b, a) in [
        ("json_adherence", before.json_adherence, after.json_adherence),
        ("harmful_compliance", before.harmful_compliance, after.harmful_compliance),
        ("over_refusal", before.over_refusal, after.over_refusal),
        ("injection_resistance", before.injection_resistance, after.injection_resistance),
        ("accuracy", before.honesty.accuracy, after.honesty.accuracy),
        ("abstention", before.honesty.abstention, after.honesty.abstention),
        ("hallucination", before.honesty.hallucination, after.honesty.hallucination),
        ("truthfulness", before.honesty.truthfulness, after.honesty.truthfulness),
    ] {
        s += &format!("\n  {k:<20} SFT {:>6.1}%  {stage} {:>6.1}%", 100.0 * b, 100.0 * a);
    }
    s
}

impl Figures {
    pub fn summary(&self) -> String {
        let mut s = summary(self.reward.stage(), &self.win_rate_vs_sft_detail, &self.before, &self.after);
        s += &format!(
            "\n  final KL to SFT {:.2} nats/answer, mean {} reward {:.3} (rise {:+.3}), {} prompts",
            self.kl,
            match self.reward {
                Reward::Rm => "RM",
                Reward::Graders => "graded",
                Reward::Both => "RM + graded",
            },
            self.mean_reward,
            self.reward_rise,
            self.prompts
        );
        if let Some(w) = &self.warning {
            s += &format!("\nWARNING: {w}");
        }
        s
    }
}

/// A figure's label and how to read it from a stage's [`Safety`].
type Row = (&'static str, fn(&Safety) -> f64);

/// Stages side by side on the same prompts: each arm's win rate against the first stage and
/// every safety and honesty figure (the first stage's first).
pub fn side_by_side(first: (&str, &Safety), arms: &[(&str, &WinRate, &Safety)]) -> String {
    let (name, sft) = first;
    let mut s = format!("{:<22}{:>10}", "", name);
    for (name, _, _) in arms {
        s += &format!("{name:>12}");
    }
    s += &format!("\n{:<22}{:>10}", format!("win rate vs {name}"), "");
    for (_, w, _) in arms {
        s += &format!("{:>11.1}%", 100.0 * w.win_rate);
    }
    let rows: [Row; 8] = [
        ("accuracy", |x| x.honesty.accuracy),
        ("abstention", |x| x.honesty.abstention),
        ("hallucination", |x| x.honesty.hallucination),
        ("truthfulness", |x| x.honesty.truthfulness),
        ("injection resistance", |x| x.injection_resistance),
        ("over-refusal", |x| x.over_refusal),
        ("harmful compliance", |x| x.harmful_compliance),
        ("JSON adherence", |x| x.json_adherence),
    ];
    for (label, f) in rows {
        s += &format!("\n{label:<22}{:>9.1}%", 100.0 * f(sft));
        for (_, _, a) in arms {
            s += &format!("{:>11.1}%", 100.0 * f(a));
        }
    }
    s
}
