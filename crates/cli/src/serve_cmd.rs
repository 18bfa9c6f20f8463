//! `chatforge serve`: the OpenAI-compatible API (and web pages) over a run's models
//! (`chatforge_serve`); `chatforge moderation train`: the moderation classifier and its figures
//! (`chatforge_stages::moderation`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use chatforge_serve::engine::EngineConfig;
use chatforge_serve::web;
use chatforge_serve::{Limits, ServeConfig};
use chatforge_stages::{moderation, Run};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long)]
    run: PathBuf,
    /// The default model (stage) for requests that name none; every generative stage of the run
    /// (sft, ppo, dpo, base) is served.
    #[arg(long, default_value = "sft")]
    stage: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Require `Authorization: Bearer KEY` on every route but /health and static assets.
    #[arg(long, env = "CHATFORGE_API_KEY")]
    api_key: Option<String>,
    /// Operator moderation policy (TOML: categories -> allow / refuse / flag).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Sequences decoded together at most (continuous batching).
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Sequences waiting at most; more get 429.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Largest `n` of a request.
    #[arg(long, default_value_t = 8)]
    max_n: usize,
    /// Largest `max_tokens` of a request.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = ServeConfig {
        run: chatforge_rundir::RunDir::new(a.run),
        stage: a.stage,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        policy: a.policy,
        limits: Limits { max_body_bytes: a.max_body, max_n: a.max_n.max(1), max_tokens: a.max_tokens.max(1) },
        engine: EngineConfig { max_batch: a.max_batch.max(1), queue: a.queue.max(1) },
    };
    let db = cfg.run.feedback();
    let store = web::open_store(&db).with_context(|| format!("opening {}", db.display()))?;
    chatforge_serve::run(&cfg, SocketAddr::new(a.host, a.port), |router, state| router.merge(web::routes(state, store)))?;
    Ok(())
}

#[derive(Subcommand)]
pub enum ModerationCmd {
    /// Train the classifier on the task suite's refusal family, measure it on the test split,
    /// save R/moderation.json and write the figures to R/report.json (stages.moderation).
    Train {
        #[arg(long)]
        run: PathBuf,
    },
}

pub fn moderation(c: ModerationCmd) -> anyhow::Result<()> {
    match c {
        ModerationCmd::Train { run } => {
            let run = Run::open(run);
            let m = moderation::run(&run, &moderation::Config::default())?;
            println!("{}", moderation::summary(&m));
            println!("saved {}", run.dir.moderation().display());
            Ok(())
        }
    }
}
