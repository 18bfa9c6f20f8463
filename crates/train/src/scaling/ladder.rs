//! The ladder: rungs (a depth and a token budget) and how they are parsed, the shared settings
//! of every run, the run folders, training a rung (or reusing a finished one) and the point it
//! measured, and the check that the target is bigger than every rung.

use chatforge_rundir::layout::STATE;
use chatforge_rundir::RunDir;

use chatforge_data::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::ckpt;
use crate::pretrain::{lr_for_depth, pretrain, Budget, PretrainConfig, PretrainOptions, PretrainOutcome, TokenShards, BASE_LR};
use crate::{Error, Result};

/// One run of the ladder (or the target): a depth and a token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub depth: usize,
    pub tokens: usize,
}

/// Parses `"1:50000,1:100000,2:50000"` (depth:tokens pairs).
pub fn parse_ladder(s: &str) -> Result<Vec<Rung>> {
    let bad =
        |part: &str, why: &str| Error::Input(format!("--ladder {part:?}: {why}; expected depth:tokens pairs such as \"1:50000,2:100000\""));
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (d, t) = part.split_once(':').ok_or_else(|| bad(part, "no ':'"))?;
        let depth: usize = d.trim().parse().map_err(|_| bad(part, "the depth is not a whole number"))?;
        let tokens: usize = t.trim().replace('_', "").parse().map_err(|_| bad(part, "the token count is not a whole number"))?;
        if depth == 0 || tokens == 0 {
            return Err(bad(part, "depth and tokens must be at least 1"));
        }
        out.push(Rung { depth, tokens });
    }
    dedup_rungs(out)
}

/// Every (depth, tokens) pair of the two lists.
pub fn grid(depths: &[usize], tokens: &[usize]) -> Result<Vec<Rung>> {
    if depths.contains(&0) || tokens.contains(&0) {
        return Err(Error::Input("ladder depths and token budgets must be at least 1".into()));
    }
    dedup_rungs(depths.iter().flat_map(|&depth| tokens.iter().map(move |&tokens| Rung { depth, tokens })).collect())
}

fn dedup_rungs(mut v: Vec<Rung>) -> Result<Vec<Rung>> {
    v.sort_by_key(|r| (r.depth, r.tokens));
    v.dedup();
    if v.is_empty() {
        return Err(Error::Input("the ladder is empty".into()));
    }
    Ok(v)
}

/// What one finished ladder run (or the target) measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LadderPoint {
    pub depth: usize,
    /// `num_params()`: every parameter, embedding included.
    pub params: usize,
    /// N of the laws: training FLOPs per token / 6.
    pub compute_params: f64,
    /// Tokens trained (whole steps).
    pub tokens: u64,
    /// C = FLOPs per token × tokens.
    pub compute: f64,
    pub val_loss: f64,
    /// Next-token accuracy on the same val tokens (`pretrain::next_token_accuracy`; NaN for a
    /// point written before it was measured, and for the target until it trains).
    #[serde(default = "nan")]
    pub val_accuracy: f64,
    /// The val loss of the train split's unigram distribution (the same nats per token a model
    /// that ignores context reaches).
    pub unigram_loss: f64,
    /// Whether the laws were fitted to this point: a run whose loss has not come below the
    /// unigram loss has not started to use context yet (the plateau every run starts on), and the
    /// laws describe what comes after.
    pub fitted: bool,
    pub wall_s: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// The ladder's shared settings: context, batch, optimiser, seed and the val tokens scored.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub base: PretrainConfig,
    pub ladder: Vec<Rung>,
    pub target: Rung,
    pub bootstrap: usize,
    /// Base learning rates to sweep at the cheapest rung before the ladder (`sweep.rs`); empty:
    /// train with `base.optim.lr` as it is.
    pub lr_sweep: Vec<f32>,
}

impl ScaleConfig {
    /// The pretraining config of a rung: the base one at this depth, its learning rate scaled
    /// from `base.optim.lr` by `lr_for_depth` (one recipe for every size), with a single eval
    /// (at the end, on the same `eval_tokens` val tokens for every run) and a single checkpoint.
    pub fn run_config(&self, depth: usize) -> PretrainConfig {
        let mut c =
            PretrainConfig { depth, eval_every: usize::MAX / 2, checkpoint_every: usize::MAX / 2, sample_tokens: 0, ..self.base.clone() };
        c.optim.lr = lr_for_depth(self.base.optim.lr, depth);
        c
    }

    /// Tokens a rung will train: its budget rounded up to whole steps (what `pretrain` does).
    pub fn trained_tokens(&self, r: Rung) -> u64 {
        (r.tokens.div_ceil(self.base.tokens_per_step()) * self.base.tokens_per_step()) as u64
    }

    /// (params, compute params, tokens, compute) of a rung, from the model's shape.
    pub fn size_of(&self, r: Rung, vocab: usize) -> (usize, f64, u64, f64) {
        let mc = self.run_config(r.depth).model_config(vocab);
        let per_token = mc.train_flops_per_token(self.base.context);
        let tokens = self.trained_tokens(r);
        (mc.num_params(), per_token / 6.0, tokens, per_token * tokens as f64)
    }
}

/// `R/scale/d{depth}-t{tokens}` at the base learning rate [`BASE_LR`], with `-lr{lr}` at another.
pub fn rung_dir(run: &RunDir, r: Rung, lr: f32) -> RunDir {
    if lr == BASE_LR {
        run.scale_run(&format!("d{}-t{}", r.depth, r.tokens))
    } else {
        run.scale_run(&format!("d{}-t{}-lr{lr}", r.depth, r.tokens))
    }
}

/// `R/scale/target`.
pub fn target_dir(run: &RunDir) -> RunDir {
    run.scale_run("target")
}

/// Refuses to reuse a run folder trained with other settings (it would be resumed as it is).
fn check_reusable(dir: &RunDir, wanted: &PretrainConfig, budget_tokens: usize) -> Result<()> {
    let state = dir.stage("base");
    if !state.join(STATE).exists() {
        return Ok(());
    }
    let saved: PretrainConfig = ckpt::read_state(&state)?.config_as()?;
    let mut want = wanted.clone();
    want.steps = budget_tokens.div_ceil(want.tokens_per_step()).max(1);
    want.optim.warmup_steps = want.optim.warmup_steps.min(want.steps / 5);
    if serde_json::to_value(&saved).ok() != serde_json::to_value(&want).ok() {
        return Err(Error::Input(format!(
            "{} holds a run with other settings (depth, context, batch, lr, seed or eval tokens differ); delete it to retrain",
            dir.root().display()
        )));
    }
    Ok(())
}

pub(super) fn train_rung(
    run_dir: &RunDir,
    cfg: PretrainConfig,
    tokens: usize,
    tok: &Tokenizer,
    corpus: &TokenShards,
    quiet: bool,
) -> Result<PretrainOutcome> {
    check_reusable(run_dir, &cfg, tokens)?;
    std::fs::create_dir_all(run_dir.root()).map_err(|e| Error::io(run_dir.root(), e))?;
    pretrain(run_dir, cfg, Budget::Tokens(tokens), tok, corpus, &PretrainOptions { resume_from: None, quiet })
}

/// A finished run as a ladder point (also the target's actual point once it trained).
pub fn point_of(cfg: &ScaleConfig, r: Rung, vocab: usize, o: &PretrainOutcome) -> LadderPoint {
    let (params, compute_params, _, _) = cfg.size_of(r, vocab);
    let unigram_loss = if o.val_bpb > 0.0 { o.unigram_val_bpb * o.val_loss / o.val_bpb } else { f64::NAN };
    LadderPoint {
        depth: r.depth,
        params,
        compute_params,
        tokens: o.tokens,
        compute: 6.0 * compute_params * o.tokens as f64,
        val_loss: o.val_loss,
        val_accuracy: o.val_accuracy,
        unigram_loss,
        fitted: o.val_loss < unigram_loss || unigram_loss.is_nan(),
        wall_s: o.wall_s,
    }
}

/// The most compute one ladder run may spend, as a share of the target's: every prediction
/// extrapolates at least 10×, and no run near the target's size informs it.
pub const MAX_RUNG_FRACTION: f64 = 0.1;

/// Refuses a target that is not at least 1/[`MAX_RUNG_FRACTION`] times the ladder's largest
/// run; returns the extrapolation factor.
pub fn check_target(cfg: &ScaleConfig, vocab: usize) -> Result<f64> {
    let (_, _, _, target_c) = cfg.size_of(cfg.target, vocab);
    let (big, big_c) = cfg
        .ladder
        .iter()
        .map(|&r| (r, cfg.size_of(r, vocab).3))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or_else(|| Error::Input("the ladder is empty".into()))?;
    if big_c > MAX_RUNG_FRACTION * target_c {
        return Err(Error::Input(format!(
            "the target (depth {}, {} tokens: {target_c:.3e} FLOPs) is only {:.1}x the ladder's largest run (depth {}, {} tokens: {big_c:.3e} FLOPs); a scaling law predicts a run at least {:.0}x bigger than every rung, so that no run near the target's size informs it: raise --target-depth / --target-tokens or shrink the ladder",
            cfg.target.depth, cfg.target.tokens, target_c / big_c, big.depth, big.tokens, 1.0 / MAX_RUNG_FRACTION
        )));
    }
    Ok(target_c / big_c)
}

/// Trains every rung (a fresh `pretrain` in `R/scale/d{depth}-t{tokens}`; finished rungs are
/// read back), with one progress bar over the ladder weighted by compute.
pub fn run_ladder(run: &RunDir, cfg: &ScaleConfig, tok: &Tokenizer, corpus: &TokenShards, quiet: bool) -> Result<Vec<LadderPoint>> {
    let vocab = tok.vocab_size();
    let sizes: Vec<f64> = cfg.ladder.iter().map(|&r| cfg.size_of(r, vocab).3).collect();
    let unit = 1e9; // the bar counts GFLOP
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new((sizes.iter().sum::<f64>() / unit).ceil() as u64) };
    bar.set_style(
        ProgressStyle::with_template("ladder {bar:28.cyan/blue} {percent:>3}% of compute [{elapsed_precise}<{eta_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut points = Vec::with_capacity(cfg.ladder.len());
    for (i, (&r, &c)) in cfg.ladder.iter().zip(&sizes).enumerate() {
        bar.set_message(format!("run {}/{}: depth {}, {} tokens", i + 1, cfg.ladder.len(), r.depth, r.tokens));
        let o = train_rung(&rung_dir(run, r, cfg.base.optim.lr), cfg.run_config(r.depth), r.tokens, tok, corpus, true)?;
        let p = point_of(cfg, r, vocab, &o);
        if !p.val_loss.is_finite() {
            bar.abandon();
            return Err(Error::Input(format!(
                "ladder run {}: the final val loss is {} (the run diverged); lower --lr or drop the rung",
                rung_dir(run, r, cfg.base.optim.lr).root().display(),
                p.val_loss
            )));
        }
        bar.inc((c / unit).round() as u64);
        points.push(p);
    }
    bar.finish_and_clear();
    Ok(points)
}

/// Refuses to train the target before its prediction is written: `R/scaling.json` must hold a
/// prediction for this target (its depth and trained tokens). Whoever trains the target (here,
/// or the speedrun's pretraining) calls it first.
pub fn check_predicted(run: &RunDir, cfg: &ScaleConfig, vocab: usize) -> Result<()> {
    let path = run.scaling_json();
    let (_, _, tokens, _) = cfg.size_of(cfg.target, vocab);
    // Read as plain JSON: the unknown figures of the target (its loss) are written as null.
    let saved = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let target = saved.as_ref().map(|s| (&s["target"]["depth"], &s["target"]["tokens"], &s["predicted_loss"]));
    match target {
        Some((d, t, p))
            if d.as_u64() == Some(cfg.target.depth as u64) && t.as_u64() == Some(tokens) && p.as_f64().is_some_and(f64::is_finite) =>
        {
            Ok(())
        }
        _ => Err(Error::Input(format!(
            "{} holds no prediction for the target (depth {}, {tokens} tokens): the target trains only after its prediction is written",
            path.display(),
            cfg.target.depth
        ))),
    }
}

/// Trains the target in `R/scale/target` (progress shown unless `quiet`), once its prediction is
/// written ([`check_predicted`]).
pub fn run_target(run: &RunDir, cfg: &ScaleConfig, tok: &Tokenizer, corpus: &TokenShards, quiet: bool) -> Result<LadderPoint> {
    check_predicted(run, cfg, tok.vocab_size())?;
    let o = train_rung(&target_dir(run), cfg.run_config(cfg.target.depth), cfg.target.tokens, tok, corpus, quiet)?;
    Ok(point_of(cfg, cfg.target, tok.vocab_size(), &o))
}
