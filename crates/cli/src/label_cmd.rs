//! `chatforge label`: a local web page where people compare two sampled answers (or rank several);
//! the votes go to `R/feedback.sqlite` for the reward model.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chatforge_data::chat::{Conversation, Message};
use chatforge_serve::label::{routes, LabelConfig, Labeler, ModelSampler};
use chatforge_serve::web::open_store;
use clap::Args;

use crate::chat_cmd::load;

#[derive(Args)]
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

/// The interactive rater page. (`--simulated`, the simulated labelers of chatforge-feedback, is
/// a separate mode: it adds its flags to [`LabelArgs`] and branches here before the server starts.)
pub fn run(a: LabelArgs) -> anyhow::Result<()> {
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
    let cfg = LabelConfig { ahead: a.ahead.max(1), seed: a.seed, source, wait: Duration::from_secs(300) };
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
