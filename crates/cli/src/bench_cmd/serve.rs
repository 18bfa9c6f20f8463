//! `chatforge bench serve`: a loopback load test of `chatforge serve` (or any OpenAI-compatible
//! server with `--url`): concurrent streaming clients, some hanging up mid-stream; aggregate tokens/s.

use std::path::PathBuf;

use chatforge_serve::ServeConfig;
use clap::Args;

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
    /// Every answer exactly --max-tokens long (`ignore_eos`, which llama-server also takes).
    #[arg(long)]
    ignore_eos: bool,
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
        ignore_eos: a.ignore_eos,
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
