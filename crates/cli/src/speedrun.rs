//! `chatforge speedrun`: every stage in order on the bundled corpus, timed.

use std::path::PathBuf;
use std::time::Instant;

use chatforge_train::pretrain::{prepare_corpus, pretrain, Budget, PretrainConfig, RunOptions, TokenizerSpec};
use chatforge_train::report;
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

    // 3. Pretraining.
    let t = Instant::now();
    let cfg = PretrainConfig {
        depth: 4,
        eval_every: if a.quick { 50 } else { 100 },
        eval_tokens: if a.quick { 8192 } else { 32768 },
        checkpoint_every: if a.quick { 50 } else { 100 },
        ..Default::default()
    };
    // Step budgets, not time budgets: the speedrun gives the same model on every machine
    // (about 7 minutes of pretraining and 3.5 of SFT on 2 idle cores).
    let budget = Budget::Steps(if a.quick { 200 } else { 2200 });
    let (depth, context) = (cfg.depth, cfg.context);
    let out = pretrain(&run, cfg, budget, &tok, &corpus, &RunOptions::default())?;
    print_outcome(&run, &out);
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
        pairs: if a.quick { 200 } else { 3000 },
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
        epochs: if a.quick { 1.0 } else { 2.0 },
        lr: 3e-4,
        batch_prompts: 8,
        ties: false,
        pairs: None,
        only: None,
    };
    crate::rm_cmd::run_rm(&rm, false)?;
    stage("rm", t);

    // 7. RLHF: PPO against the reward model with a KL penalty to SFT; DPO from the same pairs.
    let t = Instant::now();
    let ppo = crate::rl_cmd::PpoArgs {
        run: run.clone(),
        iterations: if a.quick { 2 } else { 20 },
        rollouts: if a.quick { 8 } else { 32 },
        kl_coef: 0.02,
        kl_target: 3.0,
        lr: 5e-5,
        ptx_coef: 0.0,
    };
    crate::rl_cmd::run_ppo(&ppo, false)?;
    stage("ppo", t);
    let t = Instant::now();
    let dpo = crate::rl_cmd::DpoArgs { run: run.clone(), beta: 0.1, epochs: if a.quick { 0.2 } else { 0.5 }, lr: 1e-4, pairs: None };
    crate::rl_cmd::run_dpo(&dpo, false)?;
    stage("dpo", t);

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
