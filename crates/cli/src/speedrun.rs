//! `chatforge speedrun`: every stage in order on the bundled corpus, timed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chatforge_data::tokenizer::Tokenizer;
use chatforge_train::pretrain::{prepare_corpus, pretrain, Budget, Corpus, PretrainConfig, RunOptions, TokenizerSpec, BASE_LR};
use chatforge_train::report;
use chatforge_train::scaling::{self, Rung, ScaleConfig, ScalingReport};
use clap::Args;
use serde_json::json;

use crate::pretrain_cmd::{bundled_clean_corpus, print_outcome};

#[derive(Args)]
pub struct SpeedrunArgs {
    /// Run folder (default runs/speedrun, or runs/speedrun-quick with --quick). An interrupted
    /// speedrun resumes; delete the folder to start over.
    #[arg(long)]
    run: Option<PathBuf>,
    /// The 2-minute version (for tests and a first look).
    #[arg(long)]
    quick: bool,
}

pub fn run(a: SpeedrunArgs) -> anyhow::Result<()> {
    let run = a.run.unwrap_or_else(|| PathBuf::from(if a.quick { "runs/speedrun-quick" } else { "runs/speedrun" }));
    std::fs::create_dir_all(&run)?;
    let started = Instant::now();
    let mut times = serde_json::Map::new();
    let mut stage = |name: &str, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("== stage {name}: {s:.1}s");
        times.insert(name.to_string(), json!(s));
    };
    println!("chatforge speedrun{} -> {}", if a.quick { " (quick)" } else { "" }, run.display());

    // 1. Data: clean, dedup and filter the bundled corpus.
    let t = Instant::now();
    let data = bundled_clean_corpus(&run, false)?;
    if let Ok(text) = std::fs::read_to_string(data.join("data_report.json")) {
        let r: serde_json::Value = serde_json::from_str(&text)?;
        let removed: serde_json::Map<String, serde_json::Value> =
            r["removed"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v["docs"].clone())).collect()).unwrap_or_default();
        report::update_report(
            &run,
            "data",
            json!({"docs_in": r["docs_in"], "bytes_in": r["bytes_in"], "docs_out": r["docs_out"], "bytes_out": r["bytes_out"],
                   "removed_docs_by_reason": removed, "near_duplicate_pairs": r["near_duplicates"].as_array().map_or(0, |v| v.len())}),
        )?;
    }
    stage("data", t);

    // 2. Tokenizer and shards.
    let t = Instant::now();
    let (tok, corpus) = prepare_corpus(&run, &data, &TokenizerSpec::Bpe { vocab_size: 4096 }, true)?;
    stage("tokenizer", t);

    // 3. Predictable scaling: a ladder of small runs, one recipe for every size, fits the laws
    // and predicts the base run's final val loss before it trains.
    let t = Instant::now();
    let cfg = PretrainConfig {
        depth: 4,
        eval_every: if a.quick { 50 } else { 100 },
        eval_tokens: if a.quick { 8192 } else { 32768 },
        checkpoint_every: if a.quick { 50 } else { 100 },
        ..Default::default()
    };
    // Step budgets, not time budgets: the speedrun gives the same model on every machine
    // (about 9 minutes of pretraining and 3 of SFT on 2 idle cores).
    let cap = (if a.quick { 200 } else { 2200 }) * cfg.tokens_per_step();
    let plan = plan_pretraining(&run, &cfg, cap, a.quick, &tok, &corpus);
    stage("scaling", t);

    // 4. Pretraining.
    let t = Instant::now();
    let tokens = plan.as_ref().map_or(cap, |(_, s)| s.target.tokens as usize);
    let (depth, context) = (cfg.depth, cfg.context);
    let out = pretrain(&run, cfg, Budget::Tokens(tokens), &tok, &corpus, &RunOptions::default())?;
    print_outcome(&run, &out);
    if let Some((scfg, mut s)) = plan {
        s.set_actual(&scaling::point_of(&scfg, scfg.target, tok.vocab_size(), &out));
        scaling::write(&run, &s)?;
        println!(
            "scaling: predicted {:.4} [{:.4}, {:.4}] before training, actual {:.4}: relative error {:+.2}% ({} the interval)",
            s.predicted_loss,
            s.prediction_interval[0],
            s.prediction_interval[1],
            out.val_loss,
            100.0 * s.relative_error.unwrap_or(f64::NAN),
            if s.within_interval == Some(true) { "inside" } else { "outside" }
        );
    }
    stage("pretrain", t);

    // 4. SFT: the chat format, the task suite, scores before and after.
    let t = Instant::now();
    let sft_args = crate::sft_cmd::SftArgs {
        run: run.clone(),
        data: vec![],
        skip_bad: false,
        steps: Some(if a.quick { 150 } else { 1000 }),
        time_budget: None,
        lr: 3e-3,
        batch: 8,
        seed: 1,
        small_suite: a.quick,
        eval_every: None,
        evals: vec![],
        eval_limit: 40,
        checkpoint_every: None,
    };
    let sft_figures = crate::sft_cmd::run_sft(&sft_args, false)?;
    stage("sft", t);

    // 5. Human feedback, simulated: judges compare sampled answers into R/feedback.sqlite.
    let t = Instant::now();
    let label = crate::label_cmd::LabelArgs {
        run: run.clone(),
        stage: "sft".into(),
        simulated: true,
        noise: 0.2,
        pairs: if a.quick { 200 } else { 12000 },
        samples_per_prompt: 4,
        judges: 8,
        seed: 11,
        // The rater page's settings (unused by the simulated labelers).
        prompts: None,
        host: "127.0.0.1".into(),
        port: 0,
        temperature: 1.0,
        top_p: 0.95,
        max_tokens: 128,
        ahead: 2,
    };
    crate::label_cmd::run_simulated(&label, false)?;
    stage("labels", t);

    // 6. The reward model.
    let t = Instant::now();
    let rm = crate::rm_cmd::RmArgs {
        run: run.clone(),
        epochs: 1.0,
        lr: 3e-4,
        batch_prompts: 8,
        ties: true,
        pairs: None,
        only: None,
        checkpoint_every: None,
    };
    crate::rm_cmd::run_rm(&rm, false)?;
    stage("rm", t);

    // 7. RLHF: PPO against the reward model with a KL penalty to SFT; DPO from the same pairs.
    let t = Instant::now();
    let ppo = crate::rl_cmd::PpoArgs {
        run: run.clone(),
        iterations: if a.quick { 2 } else { 20 },
        rollouts: if a.quick { 8 } else { 32 },
        group: 4,
        kl_coef: 0.02,
        kl_target: 3.0,
        lr: 5e-5,
        ptx_coef: 0.5,
        checkpoint_every: None,
    };
    crate::rl_cmd::run_ppo(&ppo, false)?;
    stage("ppo", t);
    let t = Instant::now();
    let dpo = crate::rl_cmd::DpoArgs {
        run: run.clone(),
        beta: 0.1,
        epochs: if a.quick { 0.2 } else { 0.15 },
        lr: 1e-4,
        pairs: None,
        ptx_coef: 1.0,
        checkpoint_every: None,
    };
    crate::rl_cmd::run_dpo(&dpo, false)?;
    stage("dpo", t);
    // What RLHF could reach: best-of-k of SFT's answers by the reward model, the gold judge, and a
    // judge blind to the held-out facts.
    let t = Instant::now();
    let headroom = crate::headroom_cmd::HeadroomArgs {
        run: run.clone(),
        stage: "sft".into(),
        n: if a.quick { 2 } else { 4 },
        temperature: 1.0,
        seed: 0,
    };
    crate::headroom_cmd::run_headroom(&headroom, false)?;
    stage("headroom", t);

    // 8. Moderation for serving: the classifier of user inputs and outputs, measured.
    let t = Instant::now();
    let (_, m) = chatforge_serve::train_moderation(&run)?;
    println!("moderation: {}", serde_json::to_string(&m)?);
    stage("moderation", t);

    // 9. Evals: the registry on every model (the base one few-shot, in plain text), with the
    // reward model for reward gaps and distributions; the figures land in report.json and the
    // report card.
    let t = Instant::now();
    for stage in ["base", "sft", "ppo", "dpo"] {
        println!("== evals of the {stage} model");
        let args = crate::eval_cmd::EvalArgs {
            run: Some(run.clone()),
            stage: stage.into(),
            evals: vec![],
            registry: None,
            samples: Some(if a.quick { 20 } else { 200 }),
            limit: a.quick.then_some(40),
            list: false,
            write_builtin: None,
        };
        crate::eval_cmd::run_evals(&args, false)?;
    }
    stage("eval", t);

    let total = started.elapsed().as_secs_f64();
    times.insert("total".into(), json!(total));
    let tokens_seen = out.tokens + sft_figures["tokens"].as_u64().unwrap_or(0);
    let config = json!({"depth": depth, "params": out.params, "vocab_size": tok.vocab_size(), "context": context,
                        "pretrain_steps": out.steps, "sft_steps": sft_figures["steps"], "sft_lr": 3e-3,
                        "ppo_iterations": if a.quick { 2 } else { 20 }, "ppo_kl_coef": 0.02, "dpo_beta": 0.1});
    report::update_report(
        &run,
        "run",
        json!({"quick": a.quick, "stage_seconds": times, "wall_s": total, "tokens_seen_pretrain_sft": tokens_seen,
               "threads": rayon::current_num_threads(), "hardware": report::hardware(), "config": config}),
    )?;
    println!("speedrun finished in {total:.1}s; report: {}", run.join("report.html").display());
    Ok(())
}

/// The ladder the speedrun predicts its base run from: `scale`'s default (depths 1–3 at 3–8 % of
/// the base run's compute, about 100 s on 2 cores; depth 1 at 2.4M tokens sees some text twice,
/// as the base run does). The quick ladder takes seconds and its rungs barely leave the unigram
/// plateau: its prediction is a smoke test.
fn speedrun_ladder(quick: bool) -> Vec<Rung> {
    if quick {
        let r = |depth, tokens| Rung { depth, tokens };
        vec![r(1, 60_000), r(1, 100_000), r(1, 160_000), r(2, 60_000), r(2, 100_000), r(3, 40_000)]
    } else {
        scaling::parse_ladder(crate::scale_cmd::DEFAULT_LADDER).expect("the default ladder parses")
    }
}

/// Runs the ladder and fits the laws; the base run's token budget is `cap` unless the
/// Chinchilla law says depth 4 is compute-optimal at fewer tokens (beyond them a bigger model
/// would spend the compute better). Prints the prediction. A ladder that cannot be fitted
/// (the quick one may not be) costs the prediction, not the speedrun.
fn plan_pretraining(
    run: &Path,
    cfg: &PretrainConfig,
    cap: usize,
    quick: bool,
    tok: &Tokenizer,
    corpus: &Corpus,
) -> Option<(ScaleConfig, ScalingReport)> {
    // The ladder trains with the base recipe; its learning rate scales down from BASE_LR with width.
    let mut base = cfg.clone();
    base.optim.lr = BASE_LR;
    let mut scfg = ScaleConfig { base, ladder: speedrun_ladder(quick), target: Rung { depth: cfg.depth, tokens: cap }, bootstrap: 200 };
    let result = scaling::ladder_and_predict(run, &scfg, tok, corpus, false).and_then(|s| {
        let optimal = s.fit.chinchilla.as_ref().map(|c| c.law().optimal_tokens(s.target.compute_params));
        match (&s.fit.chinchilla, optimal) {
            (Some(c), Some(d)) => {
                let [lo, hi] = c.tokens_per_param.interval;
                println!(
                    "scaling: the fitted law makes depth {} compute-optimal at {d:.3e} tokens ({:.3e} per parameter at this compute, 90% interval {lo:.2e} to {hi:.2e}{}); this machine's cap is {cap} tokens",
                    cfg.depth,
                    c.tokens_per_param.value,
                    if hi > 10.0 * lo { ": the ladder does not pin the optimum down" } else { "" }
                );
            }
            _ => println!("scaling: no Chinchilla fit, so no compute-optimal budget; this machine's cap is {cap} tokens"),
        }
        match optimal {
            Some(d) if d.is_finite() && d < cap as f64 => {
                scfg.target.tokens = (d as usize).max(cfg.tokens_per_step());
                println!("  training {} tokens: past them a bigger model would use the compute better", scfg.target.tokens);
                scaling::ladder_and_predict(run, &scfg, tok, corpus, true)
            }
            _ => Ok(s),
        }
    });
    match result {
        Ok(s) => {
            crate::scale_cmd::print_prediction(&s);
            Some((scfg, s))
        }
        Err(e) => {
            println!("scaling: no prediction for the base run: {e}");
            None
        }
    }
}
