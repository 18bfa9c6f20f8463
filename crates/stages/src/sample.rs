//! Sample: "ask it 10,000 times". A chat stage answers one prompt N times (batched); with a
//! reward model every answer is scored, and the stage records the reward distribution (mean,
//! spread, percentiles, `plots/rewards_<stage>.svg`) and how often the worst answer came up,
//! under `stages.<stage>.sample`. Best-of-N is the top answer of such a batch.

use std::collections::HashSet;
use std::time::Instant;

use chatforge_core::sample::SamplingParams;
use chatforge_data::chat::{Conversation, Message};
use chatforge_rundir::plot::histogram_plot;
use chatforge_rundir::Key;
use chatforge_train::labels::sample_answers;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub stage: String,
    /// The user's message, and an optional system message.
    pub prompt: String,
    pub system: Option<String>,
    pub n: usize,
    pub max_tokens: usize,
    pub params: SamplingParams,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stage: "sft".into(),
            prompt: String::new(),
            system: None,
            n: 1,
            max_tokens: 64,
            params: SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
            seed: 0,
        }
    }
}

/// The distribution of rewards, when the run has a reward model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rewards {
    pub prompt: Conversation,
    pub n: usize,
    pub distinct: usize,
    pub mean: f64,
    pub std: f64,
    /// (quantile, reward) at 0, 1, 10, 25, 50, 75, 90, 99, 100 %.
    pub percentiles: Vec<(f64, f64)>,
    /// Share of the samples that are the worst-rewarded answer.
    pub worst_share: f64,
    pub sample_s: f64,
    pub score_s: f64,
}

pub struct Figures {
    pub answers: Vec<String>,
    /// Each answer's reward (empty without a reward model) and the answers best first.
    pub rewards: Vec<f64>,
    pub order: Vec<usize>,
    pub distribution: Option<Rewards>,
    pub sample_s: f64,
}

const QUANTILES: [f64; 9] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Samples and (with a reward model) scores; records the distribution when `record` is set
/// (best-of-N does not).
pub fn run(run: &Run, cfg: &Config, record: bool) -> Result<Figures> {
    if cfg.prompt.trim().is_empty() {
        return Err(Error::Input("--prompt is the user's message and must not be empty".into()));
    }
    let tok = run.tokenizer()?;
    let model = run.model(&cfg.stage)?;
    let mut msgs: Vec<Message> = cfg.system.iter().map(Message::system).collect();
    msgs.push(Message::user(&cfg.prompt));
    let conv = Conversation::new(msgs);
    let n = cfg.n.max(1);
    let t0 = Instant::now();
    let answers = sample_answers(&model, tok, std::slice::from_ref(&conv), n, cfg.params, cfg.max_tokens, cfg.seed, run.quiet).remove(0);
    let sample_s = t0.elapsed().as_secs_f64();
    let Some(mut rm) = run.reward_model_if_any()? else {
        return Ok(Figures { answers, rewards: vec![], order: (0..n).collect(), distribution: None, sample_s });
    };
    let t1 = Instant::now();
    let items: Vec<(&Conversation, &str)> = answers.iter().map(|s| (&conv, s.as_str())).collect();
    let rewards: Vec<f64> = rm.score(tok, &items).into_iter().map(f64::from).collect();
    let score_s = t1.elapsed().as_secs_f64();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| rewards[y].total_cmp(&rewards[x]));
    let mut sorted = rewards.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let std = (sorted.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let worst = &answers[order[n - 1]];
    let distribution = Rewards {
        prompt: conv.clone(),
        n,
        distinct: answers.iter().collect::<HashSet<_>>().len(),
        mean,
        std,
        percentiles: QUANTILES.iter().map(|&q| (q, percentile(&sorted, q))).collect(),
        worst_share: answers.iter().filter(|s| *s == worst).count() as f64 / n as f64,
        sample_s,
        score_s,
    };
    if record {
        let title = format!("Rewards of {n} answers ({})", cfg.stage);
        histogram_plot(&run.dir.plot(&format!("rewards_{}.svg", cfg.stage)), &title, "reward", &rewards, 40)?;
        run.record(Key::Sample(&cfg.stage), &distribution)?;
    }
    Ok(Figures { answers, rewards, order, distribution: Some(distribution), sample_s })
}
