//! The speedrun: every stage in order on the bundled corpus, each with its recipe, timed, into
//! one run folder: data, tokenizer, scaling (the base run's loss predicted before it trains),
//! pretraining, SFT, simulated labels, the reward model, PPO (RLHF), RLVR, DPO, headroom, moderation, and the
//! evals of every model; then the run's configuration, hardware and stage times in the report.
//! Step budgets, not time budgets, at the machine's pace (`pace.rs`): on a machine as fast as the
//! one the recipe was sized on, or faster, it gives the same models everywhere (about 18 minutes
//! on 2 idle cores); on a slower one every training budget shrinks by the same factor, so it
//! still ends within 20 minutes (`quick` is the ~2-minute version for tests). Every stage
//! resumes, so an interrupted speedrun picks up where it stopped (and keeps its pace).

use std::time::Instant;

use chatforge_core::backend::Precision;
use chatforge_rundir::report::hardware;
use chatforge_rundir::Key;
use chatforge_train::labels::LabelConfig;
use chatforge_train::pretrain::{Budget, PretrainConfig};
use chatforge_train::scaling::{self, Rung, ScaleConfig, MAX_RUNG_FRACTION};
use chatforge_train::sft::SftConfig;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::pace::Pace;
use crate::{data, dpo, eval, headroom, label, moderation, ppo, pretrain, rm, scale, sft, tokenizer, Result, Run};

/// The scaling ladder for a base run of `cap` tokens: the full recipe's rungs (`scale`'s
/// default ladder), each cut only as far as needed to keep it at most `MAX_RUNG_FRACTION` of
/// the base run's compute (rungs that fit keep their tokens; a rung cut to the size of another
/// is halved instead, so the ladder keeps its six points: with five, the Chinchilla law's five
/// parameters pass through all of them and its bootstrap interval has no width).
/// They are not paced: paced rungs sit nearer the unigram plateau, where the laws extrapolate
/// badly (pace 0.64, seed 1337: the paced ladder predicted −7.7 %, outside its interval; the full
/// one +1.5 % for the same base run). Nor are they shrunk alike: at pace 0.56 (a base run of
/// 1.93M tokens) every rung shrunk by 0.69 predicted −7.9 %, outside its interval; this ladder
/// (only the two too large rungs cut) predicted −2.1 % for the same base run, inside, and a whole
/// speedrun at pace 0.51 (1.64M tokens) −4.1 %, inside. At pace 0.45 (1.14M tokens) both d2
/// rungs were cut to one size: five points, the Chinchilla law through all five, a zero-width
/// interval and −13.1 %; with the second halved, six points, −6.9 % outside [4.79, 5.39]. The
/// smaller the base run, the larger the error: the recipe's own 4.5M-token target lands within
/// +1.6 to +2.6 % (3 seeds).
/// The quick ladder takes seconds and its rungs barely leave the unigram plateau: its prediction
/// is a smoke test.
fn ladder(quick: bool, base: &PretrainConfig, cap: usize, vocab: usize) -> Vec<Rung> {
    if quick {
        let r = |depth, tokens| Rung { depth, tokens };
        return vec![r(1, 60_000), r(1, 100_000), r(1, 160_000), r(2, 60_000), r(2, 100_000), r(3, 40_000)];
    }
    let full = scale::Config::default().ladder;
    let cfg = ScaleConfig {
        base: base.clone(),
        ladder: full.clone(),
        target: Rung { depth: base.depth, tokens: cap },
        bootstrap: 0,
        lr_sweep: vec![],
    };
    let target_c = cfg.size_of(cfg.target, vocab).3;
    // 0.97: room for the rounding of rungs to whole steps.
    let most = 0.97 * MAX_RUNG_FRACTION * target_c;
    let step = base.tokens_per_step();
    let mut rungs: Vec<Rung> = Vec::new();
    for r in full {
        let per_token = cfg.size_of(r, vocab).3 / cfg.trained_tokens(r) as f64;
        let fits = ((most / per_token) as usize / step * step).max(step);
        let mut cut = Rung { tokens: r.tokens.min(fits), ..r };
        // A rung cut to the size of another is halved until it is a point of its own.
        while rungs.contains(&cut) && cut.tokens >= 2 * step {
            cut.tokens = cut.tokens / 2 / step * step;
        }
        if !rungs.contains(&cut) {
            rungs.push(cut);
        }
    }
    rungs
}

/// SFT's steps, whatever the pace (`Pace::pretrain_steps`: pretraining pays for them).
const SFT_STEPS: usize = 1000;

/// An f32 setting as the decimal it was written as (3e-3, not 0.0030000000260770321).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().expect("a float prints as a float")
}

/// `run` in report.json.
#[derive(Serialize)]
struct RunFigures {
    quick: bool,
    stage_seconds: Map<String, Value>,
    wall_s: f64,
    tokens_seen_pretrain_sft: u64,
    threads: usize,
    hardware: Value,
    config: Value,
}

/// Runs every stage into `run` and records the run's figures; prints each stage's time. `pace`:
/// the share of the recipe to run (`None`: measured, see `pace.rs`; the quick version is fixed).
pub fn run(run: &Run, quick: bool, precision: Precision, pace: Option<f64>) -> Result<()> {
    run.create()?;
    let started = Instant::now();
    let mut times = Map::new();
    let mut lap = |name: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("== stage {name}: {s:.1}s");
        times.insert(name.to_string(), json!(s));
    };
    let pick = |q, full| if quick { q } else { full };
    println!("chatforge speedrun{} -> {}", if quick { " (quick)" } else { "" }, run.dir.root().display());
    println!("{}", chatforge_train::trainer::precision_line("training stages", precision));
    let pace = if quick { Pace::full() } else { Pace::load_or_measure(run, pace, precision)? };
    println!("{}", pace.line());

    let t = Instant::now();
    data::run(run, &data::Config::default())?;
    lap("data", t);

    let t = Instant::now();
    let (tok, _) = tokenizer::run(run, &tokenizer::Config::default())?;
    lap("tokenizer", t);

    // The base run's recipe; its token budget is this machine's cap unless the ladder's law
    // says depth 4 is compute-optimal at fewer tokens. The cap is 2,200 steps in fp32 and 2,500
    // in bf16, whose faster steps buy the extra tokens within the 20 minutes (2,800 took the
    // whole speedrun to 1,210 s on the 2-core EPYC).
    let t = Instant::now();
    let base = PretrainConfig {
        depth: 4,
        eval_every: pick(50, 100),
        eval_tokens: pick(8192, 32768),
        checkpoint_every: pick(50, 100),
        precision,
        ..Default::default()
    };
    let full_steps = if precision == Precision::Bf16 { 2500 } else { 2200 };
    let cap = pick(200, pace.pretrain_steps(full_steps, SFT_STEPS)) * base.tokens_per_step();
    let plan = match scale::plan(run, &base, ladder(quick, &base, cap, tok.vocab_size()), cap) {
        Ok((scfg, s)) => {
            println!("{}", scale::summary(&s));
            Some((scfg, s))
        }
        Err(e) => {
            println!("scaling: no prediction for the base run: {e}");
            None
        }
    };
    lap("scaling", t);

    let t = Instant::now();
    let tokens = plan.as_ref().map_or(cap, |(_, s)| s.target.tokens as usize);
    // The base run's peak learning rate is the sweep's base rate at its depth.
    let base = match &plan {
        Some((scfg, _)) => PretrainConfig { optim: scfg.run_config(base.depth).optim, ..base },
        None => base,
    };
    if let Some((scfg, _)) = &plan {
        scaling::check_predicted(&run.dir, scfg, tok.vocab_size())?;
    }
    let out = pretrain::run(run, &pretrain::Config { train: base.clone(), budget: Some(Budget::Tokens(tokens)), ..Default::default() })?;
    println!("{}", pretrain::summary(run, &out));
    if let Some((scfg, mut s)) = plan {
        s.set_actual(&scaling::point_of(&scfg, scfg.target, tok.vocab_size(), &out));
        scaling::write(&run.dir, &s)?;
        println!(
            "scaling: predicted {:.4} [{:.4}, {:.4}] before training, actual {:.4}: relative error {:+.2}% ({} the interval)",
            s.predicted_loss,
            s.prediction_interval[0],
            s.prediction_interval[1],
            out.val_loss,
            100.0 * s.relative_error.unwrap_or(f64::NAN),
            if s.within_interval == Some(true) { "inside" } else { "outside" }
        );
        if let Some(c) = scale::capability_summary(&s) {
            println!("{c}");
        }
    }
    lap("pretrain", t);

    let t = Instant::now();
    let sft_cfg = sft::Config {
        train: SftConfig { steps: pick(150, SFT_STEPS), precision, ..Default::default() },
        small_suite: quick,
        ..Default::default()
    };
    let sft_out = sft::run(run, &sft_cfg)?;
    println!("{}", sft_out.summary());
    lap("sft", t);

    // Human feedback, simulated: 2,000 prompts x 4 answers (12,000 comparisons), at the pace;
    // the reward model and DPO train on what it labels.
    let t = Instant::now();
    let labels = LabelConfig { prompts: pick(34, pace.of(2000)), ..Default::default() };
    let l = label::run(run, &label::Config { labels, ..Default::default() })?;
    println!("{}", l.summary(4));
    lap("labels", t);

    let t = Instant::now();
    let mut rm_cfg = rm::Config::default();
    rm_cfg.train.precision = precision;
    let r = rm::run(run, &rm_cfg)?;
    println!("{}", r.summary(Some(l.round.strict_agreement)));
    lap("rm", t);

    let t = Instant::now();
    let p = ppo::run(run, &ppo::Config { iterations: pick(2, pace.of(20)), rollouts: pick(8, 32), precision, ..Default::default() })?;
    println!("{}", p.summary());
    lap("ppo", t);

    // RLVR: the same loop with the graders' reward, beside RLHF on the same held-out prompts.
    let t = Instant::now();
    let v = ppo::run(run, &ppo::Config { iterations: pick(2, pace.of(20)), rollouts: pick(8, 128), precision, ..ppo::Config::rlvr() })?;
    println!("{}", v.summary());
    lap("rlvr", t);

    let t = Instant::now();
    let mut dpo_cfg = dpo::Config::default();
    dpo_cfg.train.epochs = if quick { 0.2 } else { 0.15 };
    dpo_cfg.train.precision = precision;
    let d = dpo::run(run, &dpo_cfg)?;
    println!("{}", d.summary());
    lap("dpo", t);
    println!(
        "{}",
        ppo::side_by_side(
            ("SFT", &p.before),
            &[
                ("PPO (RM)", &p.win_rate_vs_sft_detail, &p.after),
                ("RLVR", &v.win_rate_vs_sft_detail, &v.after),
                ("DPO", &d.win_rate_vs_sft_detail, &d.after)
            ]
        )
    );

    // What RLHF could reach: best-of-2 of SFT's answers by the reward model, the gold judge, and
    // a judge blind to the held-out facts.
    let t = Instant::now();
    let h = headroom::run(run, &headroom::Config { n: 2, ..Default::default() })?;
    println!("{}", h.summary());
    lap("headroom", t);

    let t = Instant::now();
    let m = moderation::run(run, &moderation::Config::default())?;
    println!("{}", moderation::summary(&m));
    lap("moderation", t);

    // The registry on every model (the base one few-shot, in plain text), with the reward model
    // for reward gaps and distributions.
    let t = Instant::now();
    let mut summaries = Vec::new();
    for stage in ["base", "sft", "ppo", "dpo"] {
        println!("== evals of the {stage} model");
        let cfg = eval::Config { stage: stage.into(), samples: Some(pick(20, 150)), limit: quick.then_some(40), ..Default::default() };
        summaries.push((stage, eval::run(run, &cfg)?.summary["figures"].clone()));
    }
    println!("{}", eval::tools_table(&summaries.iter().map(|(s, f)| (*s, f)).collect::<Vec<_>>()));
    lap("eval", t);

    let total = started.elapsed().as_secs_f64();
    times.insert("total".into(), json!(total));
    let config = json!({"precision": precision, "depth": base.depth, "params": out.params, "vocab_size": tok.vocab_size(), "context": base.context,
                        "pretrain_steps": out.steps, "sft_steps": sft_out.steps, "sft_lr": decimal(sft_cfg.train.optim.lr),
                        "ppo_iterations": pick(2, pace.of(20)), "pace": pace, "ppo_kl_coef": ppo::Config::default().kl_coef, "dpo_beta": decimal(dpo_cfg.train.beta)});
    let figures = RunFigures {
        quick,
        stage_seconds: times,
        wall_s: total,
        tokens_seen_pretrain_sft: out.tokens + sft_out.tokens,
        threads: rayon::current_num_threads(),
        hardware: hardware(),
        config,
    };
    run.record(Key::Run, &figures)?;
    println!("speedrun finished in {total:.1}s; report: {}", run.dir.report_html().display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatforge_train::scaling::check_target;

    /// The speedrun's ladder, quick and at every pace, spends at most MAX_RUNG_FRACTION of the
    /// base run's compute per rung (the target the plan predicts before pretraining), and keeps
    /// the full rungs while it can.
    #[test]
    fn every_ladder_run_is_at_most_a_tenth_of_the_base_runs_compute() {
        let base = PretrainConfig { depth: 4, ..Default::default() };
        for (quick, factor, steps) in
            [(true, 1.0, 200), (false, 1.0, 2500), (false, 0.58, 2500), (false, 0.45, 2500), (false, 0.3, 2200), (false, 0.05, 2500)]
        {
            let pace = Pace::given(factor).unwrap();
            let steps = if quick { steps } else { pace.pretrain_steps(steps, SFT_STEPS) };
            let target = Rung { depth: 4, tokens: steps * base.tokens_per_step() };
            let cfg = ScaleConfig {
                base: base.clone(),
                ladder: ladder(quick, &base, target.tokens, 4096),
                target,
                bootstrap: 1,
                lr_sweep: vec![],
            };
            let x = check_target(&cfg, 4096).unwrap_or_else(|e| panic!("quick {quick}, pace {factor}: {e}"));
            assert!(x >= 1.0 / MAX_RUNG_FRACTION);
            if !quick && factor == 1.0 {
                assert_eq!(cfg.ladder, scale::Config::default().ladder, "pace {factor}: the full rungs");
            }
            // A full rung that fits the fraction is kept whole, whatever the others need; the
            // ladder keeps the recipe's number of distinct rungs.
            if !quick {
                let full = scale::Config::default().ladder;
                assert_eq!(cfg.ladder.len(), full.len(), "pace {factor}: {:?}", cfg.ladder);
                let most = MAX_RUNG_FRACTION * cfg.size_of(target, 4096).3;
                for r in scale::Config::default().ladder {
                    if cfg.size_of(r, 4096).3 <= 0.97 * most {
                        assert!(cfg.ladder.contains(&r), "pace {factor}: {r:?} fits and is kept");
                    }
                }
            }
        }
    }
}
