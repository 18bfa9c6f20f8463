//! Compare: the win rate of one stage's answers over another's on the held-out prompts (the
//! task suite's test split), by the noise-free judge, with a 95 % interval; and the helpers the
//! RLHF stages share to judge themselves against SFT:
//! - [`stage_answers`]: a stage's answers to the test prompts, cached beside its checkpoint
//!   under the checkpoint's sha256 (SFT's answers serve every comparison against it);
//! - [`safety`]: JSON adherence, harmful compliance and over-refusal of its greedy answers;
//! - [`win_rate`]: the judge's verdicts of two stages' sampled answers.

use chatforge_data::tasks::{Split, Task};
use chatforge_feedback::simulated::{Panel, PanelConfig};
use chatforge_rundir::fs::{sha256_file, sha256_hex, write_atomic};
use chatforge_rundir::Key;
use chatforge_train::compare::{answers, judge, WinRate};
use serde::{Deserialize, Serialize};

use crate::{Result, Run};

/// Answer length of every comparison (tokens).
const MAX_NEW: usize = 96;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The stage judged.
    pub a: String,
    /// The stage it is judged against.
    pub b: String,
    /// Sampling temperature of both stages.
    pub temperature: f32,
    /// Sample B at this temperature instead (is RLHF better than a cooler SFT?).
    pub b_temperature: Option<f32>,
    pub seed: u64,
    /// The prompts: `test` (reported, recorded in `report.json`) or `val` (for choosing
    /// hyperparameters: printed, never recorded).
    pub split: Split,
}

impl Default for Config {
    fn default() -> Self {
        Config { a: "ppo".into(), b: "sft".into(), temperature: 1.0, b_temperature: None, seed: 0, split: Split::Test }
    }
}

/// `compare.<a>_vs_<b>`: the win rate and the temperatures it was measured at, and both
/// stages' safety and honesty on the same prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    #[serde(flatten)]
    pub win: WinRate,
    pub temperature_a: f32,
    pub temperature_b: f32,
    pub safety_a: Safety,
    pub safety_b: Safety,
}

/// Judges `cfg.a` against `cfg.b` on the test (or val) prompts; records `compare.<a>_vs_<b>`
/// for test.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    let suite = run.suite()?;
    let tasks = suite.split(cfg.split);
    let tb = cfg.b_temperature.unwrap_or(cfg.temperature);
    let win = win_rate(run, &cfg.a, &cfg.b, tasks, [cfg.temperature, tb], cfg.seed)?;
    let (safety_a, safety_b) = (safety(run, &cfg.a, tasks)?, safety(run, &cfg.b, tasks)?);
    let figures = Figures { win, temperature_a: cfg.temperature, temperature_b: tb, safety_a, safety_b };
    if cfg.split == Split::Test {
        run.record(Key::Compare(&cfg.a, &cfg.b), &figures)?;
    }
    Ok(figures)
}

/// A stage's answers to the test tasks (temperature `temperature`, seeds `seed + i`), cached in
/// `R/<stage>/answers-t<T>-s<seed>-<sha>.json`.
pub fn stage_answers(run: &Run, stage: &str, test: &[Task], temperature: f32, seed: u64) -> Result<Vec<String>> {
    let sha = sha256_file(&run.dir.model(stage))?;
    // The prompts' own hash too: answers to val and to test are cached apart.
    let ids: String = test.iter().map(|t| t.meta.id.as_str()).collect::<Vec<_>>().join(",");
    let of = &sha256_hex(ids.as_bytes())[..8];
    let cache = run.dir.stage(stage).join(format!("answers-t{temperature}-s{seed}-{}-{of}.json", &sha[..12]));
    if let Some(v) = std::fs::read_to_string(&cache).ok().and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok()) {
        if v.len() == test.len() {
            return Ok(v);
        }
    }
    let model = run.model(stage)?;
    let out = answers(&model, run.tokenizer()?, test, temperature, MAX_NEW, seed, true);
    write_atomic(&cache, serde_json::to_string(&out).expect("answers serialize").as_bytes())?;
    Ok(out)
}

/// JSON adherence, harmful compliance, over-refusal, injection resistance and honesty of a
/// stage's greedy answers to the test tasks.
pub use chatforge_train::compare::Safety;

pub fn safety(run: &Run, stage: &str, test: &[Task]) -> Result<Safety> {
    let greedy = stage_answers(run, stage, test, 0.0, 0)?;
    Ok(chatforge_train::compare::safety(test, &greedy))
}

/// Win rate of stage `a` over stage `b` on the test prompts, by the noise-free judge.
pub fn win_rate(run: &Run, a: &str, b: &str, test: &[Task], temperature: [f32; 2], seed: u64) -> Result<WinRate> {
    let xa = stage_answers(run, a, test, temperature[0], seed)?;
    let xb = stage_answers(run, b, test, temperature[1], seed)?;
    Ok(judge(&Panel::new(&PanelConfig::default()), test, &xa, &xb))
}

/// One line: "W% (95% CI L-H%; w wins, t ties, l losses of n)".
pub fn describe(w: &WinRate) -> String {
    format!(
        "{:.1}% (95% CI {:.1}-{:.1}%; {} wins, {} ties, {} losses of {})",
        100.0 * w.win_rate,
        100.0 * w.ci95.0,
        100.0 * w.ci95.1,
        w.wins,
        w.ties,
        w.losses,
        w.n
    )
}
