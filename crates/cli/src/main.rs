//! `chatforge`: build your own ChatGPT, stage by stage. Each subcommand parses its flags into
//! overrides of its stage's `Config::default()` (the recipe), calls the stage's library
//! function (`chatforge_stages`) and prints what it returns; nothing else.

use clap::{Parser, Subcommand};

/// Large blocks on 64-byte lines, so the kernels' AVX-512 loads do not straddle two (see
/// `chatforge_core::alloc`).
#[global_allocator]
static ALLOC: chatforge_core::alloc::LineAligned = chatforge_core::alloc::LineAligned;

mod args;
mod bench_cmd;
mod chat_cmd;
mod compare_cmd;
mod data_cmd;
mod eval_cmd;
mod export_cmd;
mod import_cmd;
mod label_cmd;
mod prefs_cmd;
mod pretrain_cmd;
mod rl_cmd;
mod rm_cmd;
mod sample_cmd;
mod scale_cmd;
mod serve_cmd;
mod sft_cmd;
mod speedrun_cmd;
#[cfg(test)]
mod tests;
mod tokenizer_cmd;

#[derive(Parser)]
#[command(
    name = "chatforge",
    version,
    about = "Build your own ChatGPT end to end: data, tokenizer, pretraining, SFT, preference labels, a reward model, RLHF (PPO, DPO), evals and a server."
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every stage on the bundled corpus, timed, with a report card: data, tokenizer, scaling, pretraining, SFT, labels, reward model, PPO, DPO, headroom, moderation, evals.
    Speedrun(speedrun_cmd::SpeedrunArgs),
    /// Train (or resume) a base model from scratch.
    Pretrain(pretrain_cmd::PretrainArgs),
    /// Predict a bigger run's final loss from a ladder of small runs (scaling laws), before training it.
    Scale(scale_cmd::ScaleArgs),
    /// Fine-tune the base model to chat (system/user/assistant) on the task suite.
    Sft(sft_cmd::SftArgs),
    /// Run the evals registry on a stage's checkpoint; per-sample results and the report card.
    Eval(eval_cmd::EvalArgs),
    /// Preference labels into R/feedback.sqlite: humans on a local rater page (compare two, rank several), or --simulated judges.
    Label(label_cmd::LabelArgs),
    /// Export or import preference pairs (TRL's conversational JSONL).
    #[command(subcommand)]
    Prefs(prefs_cmd::PrefsCmd),
    /// Train the reward model (Bradley–Terry) on the run's preference pairs.
    Rm(rm_cmd::RmArgs),
    /// RLHF: PPO with a KL penalty to the SFT model, against the reward model.
    Ppo(rl_cmd::PpoArgs),
    /// Direct preference optimization from the run's preference pairs.
    Dpo(rl_cmd::DpoArgs),
    /// Win rate of one stage over another on held-out prompts (noise-free judge).
    Compare(compare_cmd::CompareArgs),
    /// Best-of-k of a stage's own answers, picked by the reward model, the gold judge and a judge blind to facts, vs SFT.
    Headroom(compare_cmd::HeadroomArgs),
    /// Data efficiency: RM + PPO and DPO from 100, 300, 1k, 3k preference pairs, each judged against SFT.
    PairsCurve(compare_cmd::CurveArgs),
    /// Talk to a run's chat model in the terminal (/system, /reset, /temperature, /quit).
    Chat(chat_cmd::ChatArgs),
    /// Continue a text with a base model.
    Complete(chat_cmd::CompleteArgs),
    /// Sample text from a checkpoint.
    Sample(sample_cmd::SampleArgs),
    /// Serve a run's models: OpenAI-compatible API (and web chat), moderation, metrics.
    Serve(serve_cmd::ServeArgs),
    /// The moderation classifier: train and measure it.
    #[command(subcommand)]
    Moderation(serve_cmd::ModerationCmd),
    /// Benchmarks of the hot paths, with ratios against their peers.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCmd),
    /// Import an HF model (Llama, SmolLM2, Qwen2/3, Mistral) as a stage, with its own tokenizer and chat template.
    Import(import_cmd::ImportArgs),
    /// Export a stage as GGUF (llama.cpp, Ollama) or as an HF folder (transformers), with its tokenizer and chat template.
    Export(export_cmd::ExportArgs),
    /// Clean, deduplicate and filter a corpus; report what was removed and why.
    Data(data_cmd::DataArgs),
    /// Byte-level BPE tokenizer: train, encode, decode, show.
    #[command(subcommand)]
    Tokenizer(tokenizer_cmd::TokenizerCmd),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    // `bench decode` gives both engines its --bench-threads unless --threads is given.
    let threads = cli.threads.or(match &cli.cmd {
        Cmd::Bench(bench_cmd::BenchCmd::Decode(a)) => Some(a.bench_threads),
        _ => None,
    });
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    // The work runs on a pool worker (`chatforge_core::pool`), except where a server's runtime
    // would hold that worker for its lifetime: the servers' engine threads go to the pool for
    // each step instead.
    let serves = matches!(&cli.cmd, Cmd::Serve(_) | Cmd::Bench(bench_cmd::BenchCmd::Serve(_) | bench_cmd::BenchCmd::Decode(_)))
        || matches!(&cli.cmd, Cmd::Label(a) if !a.simulated);
    if serves {
        dispatch(cli.cmd)
    } else {
        chatforge_core::pool::on_pool(move || dispatch(cli.cmd))
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Speedrun(a) => speedrun_cmd::run(a),
        Cmd::Pretrain(a) => pretrain_cmd::run(a),
        Cmd::Sample(a) => sample_cmd::run(a),
        Cmd::Scale(a) => scale_cmd::run(a),
        Cmd::Sft(a) => sft_cmd::run(a),
        Cmd::Eval(a) => eval_cmd::run(a),
        Cmd::Label(a) => label_cmd::run(a),
        Cmd::Prefs(c) => prefs_cmd::run(c),
        Cmd::Rm(a) => rm_cmd::run(a),
        Cmd::Ppo(a) => rl_cmd::run_ppo(a),
        Cmd::Dpo(a) => rl_cmd::run_dpo(a),
        Cmd::Compare(a) => compare_cmd::run_compare(a),
        Cmd::PairsCurve(a) => compare_cmd::run_curve(a),
        Cmd::Headroom(a) => compare_cmd::run_headroom(a),
        Cmd::Chat(a) => chat_cmd::chat(a),
        Cmd::Complete(a) => chat_cmd::complete(a),
        Cmd::Serve(a) => serve_cmd::serve(a),
        Cmd::Moderation(c) => serve_cmd::moderation(c),
        Cmd::Bench(c) => bench_cmd::run(c),
        Cmd::Import(a) => import_cmd::run(a),
        Cmd::Export(a) => export_cmd::run(a),
        Cmd::Data(a) => data_cmd::run(a),
        Cmd::Tokenizer(c) => tokenizer_cmd::run(c),
    }
}
