//! `chatforge label`: preference labels for a run — simulated judges (`--simulated`) or humans
//! on the rater page — into `R/feedback.sqlite`; and `chatforge prefs export|import`.

use std::path::PathBuf;

use anyhow::Context;
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::prefs;
use chatforge_train::labels::{open_store, simulate, LabelConfig, LabelOutcome};
use chatforge_train::report;
use clap::{Args, Subcommand};

#[derive(Args, Clone)]
pub struct LabelArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// The checkpoint whose answers are compared.
    #[arg(long, default_value = "sft")]
    pub stage: String,
    /// Simulated labelers (a panel of judges built on the task suite's graders) instead of humans.
    #[arg(long)]
    pub simulated: bool,
    /// Share of verdicts each simulated judge flips at random.
    #[arg(long, default_value_t = 0.2)]
    pub noise: f64,
    /// How many comparisons to aim for (prompts = pairs / (K·(K−1)/2)).
    #[arg(long, default_value_t = 3000)]
    pub pairs: usize,
    /// Answers sampled per prompt (K).
    #[arg(long, default_value_t = 5)]
    pub samples_per_prompt: usize,
    /// Simulated judges in the pool.
    #[arg(long, default_value_t = 8)]
    pub judges: usize,
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
}

pub fn run_label(a: &LabelArgs, quiet: bool) -> anyhow::Result<LabelOutcome> {
    if !a.simulated {
        anyhow::bail!("the rater page for human labels is `chatforge label --run R` once the serve crate is built in; use --simulated for simulated labelers");
    }
    if !(0.0..=0.5).contains(&a.noise) {
        anyhow::bail!("--noise is the share of verdicts a judge flips: between 0 and 0.5, not {}", a.noise);
    }
    let tok = Tokenizer::load(&a.run.join("tokenizer.json")).context("labeling needs a trained run")?;
    let dir = a.run.join(&a.stage);
    let model = load_model(Cpu, &dir).with_context(|| format!("loading the {} model from {}", a.stage, dir.display()))?;
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    let k = a.samples_per_prompt.max(2);
    let per_prompt = k * (k - 1) / 2;
    let mut cfg = LabelConfig { prompts: a.pairs.div_ceil(per_prompt), samples_per_prompt: k, seed: a.seed, ..Default::default() };
    cfg.panel.noise = a.noise;
    cfg.panel.judges = a.judges.max(1);
    let mut store = open_store(&a.run)?;
    let name = format!("{}/{}", a.run.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), a.stage);
    let out = simulate(&model, &name, &tok, &suite.train, &cfg, &mut store, quiet)?;
    let counts = store.counts()?;
    report::update_report(
        &a.run,
        "stages.labels",
        serde_json::json!({
            "simulated_agreement": out.simulated_agreement,
            "agreement_pairs": out.agreement_pairs,
            "agreement_with_gold": out.agreement_with_gold,
            "noise": a.noise,
            "prompts": out.prompts,
            "samples": out.samples,
            "comparisons": out.comparisons,
            "pairs": out.pairs,
            "ties": out.ties,
            "both_bad": out.both_bad,
            "store_comparisons": counts.comparisons,
            "wall_s": out.wall_s,
        }),
    )?;
    if !quiet {
        println!(
            "labels: {} prompts x {} answers -> {} comparisons ({} strict pairs, {} ties, {} both bad) in {:.1} s",
            out.prompts, k, out.comparisons, out.pairs, out.ties, out.both_bad, out.wall_s
        );
        println!(
            "  judges agree on {:.1}% of {} doubly-labeled pairs (InstructGPT's humans: ~73%); {:.1}% of verdicts match the noise-free judge",
            100.0 * out.simulated_agreement,
            out.agreement_pairs,
            100.0 * out.agreement_with_gold
        );
        println!("  store {}: {} comparisons in all", store.path().display(), counts.comparisons);
    }
    Ok(out)
}

pub fn run(a: LabelArgs) -> anyhow::Result<()> {
    run_label(&a, false).map(|_| ())
}

#[derive(Subcommand)]
pub enum PrefsCmd {
    /// Write the store's preference pairs as TRL conversational JSONL (prompt, chosen, rejected).
    Export {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Only human (`human`) or only simulated (`simulated`) raters.
        #[arg(long)]
        only: Option<String>,
    },
    /// Read TRL conversational preference JSONL into the store.
    Import {
        #[arg(long)]
        run: PathBuf,
        #[arg(long = "in")]
        input: PathBuf,
        /// The rater to record the imported verdicts under.
        #[arg(long, default_value = "import")]
        rater: String,
        /// Mark the imported verdicts as simulated.
        #[arg(long)]
        simulated: bool,
    },
}

pub fn prefs_run(c: PrefsCmd) -> anyhow::Result<()> {
    match c {
        PrefsCmd::Export { run, out, only } => {
            let filter = match only.as_deref() {
                None => None,
                Some("human") => Some(false),
                Some("simulated") => Some(true),
                Some(o) => anyhow::bail!("--only takes human or simulated, not {o:?}"),
            };
            let store = open_store(&run)?;
            let n = prefs::export(&store, &out, filter)?;
            println!("wrote {n} pairs to {}", out.display());
        }
        PrefsCmd::Import { run, input, rater, simulated } => {
            let mut store = open_store(&run)?;
            let n = prefs::import(&mut store, &input, &rater, simulated)?;
            println!("imported {n} pairs from {} into {}", input.display(), store.path().display());
        }
    }
    Ok(())
}
