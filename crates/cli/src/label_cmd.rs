//! `chatforge label`: a local web page where people compare two sampled answers (or rank
//! several), or (`--simulated`) a panel of simulated judges (`chatforge_stages::label`); the
//! votes go to `R/feedback.sqlite` for the reward model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatforge_data::chat::{load_prompts, Conversation};
use chatforge_serve::label::{routes, Labeler, ModelSampler, RaterConfig};
use chatforge_serve::web::open_store;
use chatforge_stages::label::{self, pairs_per_prompt};
use chatforge_stages::Run;
use clap::Args;

fn d() -> label::Config {
    label::Config::default()
}

#[derive(Args, Clone)]
pub struct LabelArgs {
    /// The run folder (tokenizer.json, the checkpoint, feedback.sqlite).
    #[arg(long)]
    pub run: PathBuf,
    /// The checkpoint the answers are sampled from.
    #[arg(long, default_value_t = d().stage)]
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
    #[arg(long, default_value_t = d().labels.seed)]
    pub seed: u64,
    /// Simulated labelers (a panel of judges built on the task suite's graders) instead of humans.
    #[arg(long)]
    pub simulated: bool,
    /// Simulated: share of verdicts each judge flips at random.
    #[arg(long, default_value_t = d().labels.panel.noise)]
    pub noise: f64,
    /// Simulated: how many comparisons to aim for (prompts = pairs / (K·(K−1)/2)).
    #[arg(long, default_value_t = d().labels.prompts * pairs_per_prompt(d().labels.samples_per_prompt))]
    pub pairs: usize,
    /// Simulated: answers sampled per prompt (K).
    #[arg(long, default_value_t = d().labels.samples_per_prompt)]
    pub samples_per_prompt: usize,
    /// Simulated: judges in the pool.
    #[arg(long, default_value_t = d().labels.panel.judges)]
    pub judges: usize,
}

impl LabelArgs {
    /// The simulated labelers' round.
    pub fn config(&self) -> label::Config {
        let mut c = label::Config { stage: self.stage.clone(), ..Default::default() };
        let k = self.samples_per_prompt.max(2);
        c.labels.prompts = self.pairs.div_ceil(pairs_per_prompt(k));
        c.labels.samples_per_prompt = k;
        c.labels.seed = self.seed;
        c.labels.panel.noise = self.noise;
        c.labels.panel.judges = self.judges.max(1);
        c
    }
}

/// The interactive rater page, or the simulated labelers with `--simulated`.
pub fn run(a: LabelArgs) -> anyhow::Result<()> {
    let run = Run::open(&a.run);
    if a.simulated {
        let cfg = a.config();
        println!("{}", label::run(&run, &cfg)?.summary(cfg.labels.samples_per_prompt));
        return Ok(());
    }
    let (tok, model) = (run.tokenizer()?.clone(), run.model(&a.stage)?);
    let (prompts, source): (Vec<Conversation>, String) = match &a.prompts {
        Some(p) => (load_prompts(p)?, format!("file:{}", p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())),
        None => (run.suite()?.train.iter().map(|t| t.prompt()).collect(), "suite:train".to_string()),
    };
    let name = run.model_name(&a.stage);
    let db = run.dir.feedback();
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, not when the future is
/// first polled, so a signal that comes right after the address is printed is not missed.
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
