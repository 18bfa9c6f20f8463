//! `chatforge label`: a local web page where people compare two sampled answers (or rank several),
//! or (`--simulated`) a panel of simulated judges; the votes go to `R/feedback.sqlite` for the
//! reward model. And `chatforge prefs export|import`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chatforge_core::checkpoint::load_model;
use chatforge_core::cpu::Cpu;
use chatforge_data::chat::{Conversation, Message};
use chatforge_data::tokenizer::Tokenizer;
use chatforge_feedback::prefs;
use chatforge_serve::label::{routes, Labeler, ModelSampler, RaterConfig};
use chatforge_serve::web::open_store;
use chatforge_train::labels::{simulate, LabelConfig as SimConfig, LabelOutcome};
use chatforge_train::report;
use clap::{Args, Subcommand};

use crate::chat_cmd::load;

#[derive(Args, Clone)]
pub struct LabelArgs {
    /// The run folder (tokenizer.json, the checkpoint, feedback.sqlite).
    #[arg(long)]
    pub run: PathBuf,
    /// The checkpoint the answers are sampled from.
    #[arg(long, default_value = "sft")]
    pub stage: String,
    /// Prompts as JSONL, `{"messages": [...]}` per line (a trailing assistant message is dropped);
    /// default: the task suite's train split.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (the address is printed).
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// Sampling temperature of the answers (1.0: the model's own distribution, so answers differ).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Items kept ready for each number of answers.
    #[arg(long, default_value_t = 2)]
    pub ahead: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Simulated labelers (a panel of judges built on the task suite's graders) instead of humans.
    #[arg(long)]
    pub simulated: bool,
    /// Simulated: share of verdicts each judge flips at random.
    #[arg(long, default_value_t = 0.2)]
    pub noise: f64,
    /// Simulated: how many comparisons to aim for (prompts = pairs / (K·(K−1)/2)).
    #[arg(long, default_value_t = 3000)]
    pub pairs: usize,
    /// Simulated: answers sampled per prompt (K).
    #[arg(long, default_value_t = 4)]
    pub samples_per_prompt: usize,
    /// Simulated: judges in the pool.
    #[arg(long, default_value_t = 8)]
    pub judges: usize,
}

/// The prompts of a JSONL file: each line's messages, without a trailing assistant message.
pub fn load_prompts(path: &Path) -> anyhow::Result<Vec<Conversation>> {
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(alias = "prompt")]
        messages: Vec<Message>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let l: Line = serde_json::from_str(line).with_context(at)?;
        let conv = Conversation::new(l.messages).prompt();
        if let Err(e) = conv.validate_for_prompt() {
            bail!("{}: {e}", at());
        }
        prompts.push(conv);
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

/// The interactive rater page, or the simulated labelers with `--simulated`.
pub fn run(a: LabelArgs) -> anyhow::Result<()> {
    if a.simulated {
        return run_simulated(&a, false).map(|_| ());
    }
    let (tok, model) = load(&a.run, &a.stage)?;
    let (prompts, source) = match &a.prompts {
        Some(p) => (load_prompts(p)?, format!("file:{}", p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())),
        None => {
            let suite = crate::sft_cmd::suite(&a.run, false, a.seed)?;
            (suite.train.iter().map(|t| t.prompt()).collect(), "suite:train".to_string())
        }
    };
    let run_name = a.run.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let name = format!("{run_name}/{}", a.stage);
    let db = a.run.join("feedback.sqlite");
    let store = open_store(&db).with_context(|| format!("opening {}", db.display()))?;
    let sampler = Arc::new(ModelSampler::new(name.clone(), model, tok, a.temperature, a.top_p, a.max_tokens));
    let cfg = RaterConfig { ahead: a.ahead.max(1), seed: a.seed, source, wait: Duration::from_secs(300) };
    let n = prompts.len();
    let labeler = Labeler::start(store, sampler, prompts, cfg)?;
    let app = routes(labeler.clone());
    let stopper = labeler.clone();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let stop = shutdown()?;
        let listener =
            tokio::net::TcpListener::bind((a.host.as_str(), a.port)).await.with_context(|| format!("binding {}:{}", a.host, a.port))?;
        let addr: SocketAddr = listener.local_addr()?;
        println!("rater page: http://{addr}/label  ({name}, {n} prompts, votes into {})", db.display());
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop.await;
                stopper.stop();
            })
            .await?;
        anyhow::Ok(())
    })?;
    labeler.stop();
    Ok(())
}

pub fn run_simulated(a: &LabelArgs, quiet: bool) -> anyhow::Result<LabelOutcome> {
    if !(0.0..=0.5).contains(&a.noise) {
        anyhow::bail!("--noise is the share of verdicts a judge flips: between 0 and 0.5, not {}", a.noise);
    }
    let tok = Tokenizer::load(&a.run.join("tokenizer.json")).context("labeling needs a trained run")?;
    let dir = a.run.join(&a.stage);
    let model = load_model(Cpu, &dir).with_context(|| format!("loading the {} model from {}", a.stage, dir.display()))?;
    let suite = crate::sft_cmd::suite(&a.run, false, 7)?;
    let k = a.samples_per_prompt.max(2);
    let per_prompt = k * (k - 1) / 2;
    let mut cfg = SimConfig { prompts: a.pairs.div_ceil(per_prompt), samples_per_prompt: k, seed: a.seed, ..Default::default() };
    cfg.panel.noise = a.noise;
    cfg.panel.judges = a.judges.max(1);
    let mut store = chatforge_train::labels::open_store(&a.run)?;
    let name = format!("{}/{}", a.run.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), a.stage);
    let out = simulate(&model, &name, &tok, &suite.train, &cfg, &mut store, quiet)?;
    let counts = store.counts()?;
    report::update_report(
        &a.run,
        "stages.labels",
        serde_json::json!({
            "simulated_agreement": out.simulated_agreement,
            "strict_agreement": out.strict_agreement,
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
        println!(
            "  on the reward model's terms, one judge's verdict predicts another's strict verdict {:.1}% of the time (a tie counts ½)",
            100.0 * out.strict_agreement
        );
        println!("  store {}: {} comparisons in all", store.path().display(), counts.comparisons);
    }
    Ok(out)
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
            let store = chatforge_train::labels::open_store(&run)?;
            let n = prefs::export(&store, &out, filter)?;
            println!("wrote {n} pairs to {}", out.display());
        }
        PrefsCmd::Import { run, input, rater, simulated } => {
            let mut store = chatforge_train::labels::open_store(&run)?;
            let n = prefs::import(&mut store, &input, &rater, simulated)?;
            println!("imported {n} pairs from {} into {}", input.display(), store.path().display());
        }
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, not when the future is
/// first polled, so a signal that comes right after the address is printed is not missed.
#[cfg(unix)]
fn shutdown() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        println!("shutting down");
    })
}

#[cfg(not(unix))]
fn shutdown() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    })
}
