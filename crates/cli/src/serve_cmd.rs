//! `chatforge serve`: the OpenAI-compatible API (and web pages) over a run's models;
//! `chatforge moderation train`: the moderation classifier and its figures.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use chatforge_serve::engine::EngineConfig;
use chatforge_serve::web;
use chatforge_serve::{Limits, ServeConfig};
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
        run: a.run,
        stage: a.stage,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        policy: a.policy,
        limits: Limits { max_body_bytes: a.max_body, max_n: a.max_n.max(1), max_tokens: a.max_tokens.max(1) },
        engine: EngineConfig { max_batch: a.max_batch.max(1), queue: a.queue.max(1) },
    };
    let db = cfg.run.join("feedback.sqlite");
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
            std::fs::create_dir_all(&run)?;
            let (_, m) = chatforge_serve::train_moderation(&run)?;
            println!(
                "moderation (test split): precision {:.3}  recall {:.3}  F1 {:.3}  ({} disallowed requests, {} benign look-alikes)",
                m.precision, m.recall, m.f1, m.harmful, m.lookalikes
            );
            println!(
                "over-refusal: {:.1}% of benign look-alikes flagged, {:.1}% of {} other texts flagged",
                100.0 * m.lookalike_false_positive_rate,
                100.0 * m.other_false_positive_rate,
                m.other
            );
            println!("saved {}", run.join("moderation.json").display());
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct BenchServeArgs {
    /// Serve this run in-process on a free loopback port (default stage sft).
    #[arg(long, required_unless_present = "url")]
    run: Option<PathBuf>,
    #[arg(long, default_value = "sft")]
    stage: String,
    /// Or load an already running OpenAI-compatible server at HOST:PORT (llama.cpp's
    /// llama-server as the peer, say).
    #[arg(long)]
    url: Option<String>,
    /// The model id to ask for (default: the server's default).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, env = "CHATFORGE_API_KEY")]
    api_key: Option<String>,
    /// Concurrent streams of each run.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    streams: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Every k-th client hangs up after its third chunk (0: none).
    #[arg(long, default_value_t = 3)]
    disconnect_every: usize,
}

pub fn bench(a: BenchServeArgs) -> anyhow::Result<()> {
    use chatforge_serve::loadtest::{bench, LoadConfig};
    let serve = a.run.as_ref().map(|r| ServeConfig { stage: a.stage.clone(), api_key: a.api_key.clone(), ..ServeConfig::new(r) });
    let base = LoadConfig {
        addr: String::new(),
        api_key: a.api_key.clone(),
        model: a.model.clone(),
        streams: 0,
        max_tokens: a.max_tokens,
        disconnect_every: a.disconnect_every,
    };
    println!(
        "{:>7} {:>9} {:>9} {:>6} {:>7} {:>8} {:>9} {:>9} {:>8}",
        "streams", "completed", "hung up", "errors", "tokens", "seconds", "tokens/s", "ttft p50", "healthy"
    );
    let mut failed = false;
    bench(serve.as_ref(), a.url.clone(), &a.streams, &base, |r| {
        let l = &r.report;
        println!(
            "{:>7} {:>9} {:>9} {:>6} {:>7} {:>8.2} {:>9.1} {:>8.3}s {:>8}",
            l.streams,
            l.completed,
            l.disconnected,
            l.errors.len(),
            l.tokens,
            l.seconds,
            l.tokens_per_second(),
            l.ttft_median,
            if r.healthy_after { "yes" } else { "NO" }
        );
        for e in l.errors.iter().take(5) {
            println!("        error: {e}");
        }
        if let Some(c) = r.cancelled {
            if l.disconnected > 0 {
                println!("        the server dropped {c} sequences of clients that hung up");
            }
        }
        failed |= !l.errors.is_empty() || !r.healthy_after;
    })?;
    anyhow::ensure!(!failed, "the load test had errors");
    Ok(())
}
