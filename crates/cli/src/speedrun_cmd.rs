//! `chatforge speedrun`: every stage in order on the bundled corpus, timed (`chatforge_stages::speedrun`).

use std::path::PathBuf;

use chatforge_core::backend::Precision;
use chatforge_core::cpu::auto_precision;
use chatforge_stages::{speedrun, Run};
use clap::Args;

use crate::args::parse_precision;

#[derive(Args)]
pub struct SpeedrunArgs {
    /// Run folder (default runs/speedrun, or runs/speedrun-quick with --quick). An interrupted
    /// speedrun resumes; delete the folder to start over.
    #[arg(long)]
    run: Option<PathBuf>,
    /// The 2-minute version (for tests and a first look).
    #[arg(long)]
    quick: bool,
    /// Matmul arithmetic of every training stage: bf16 (bf16 operands, fp32 accumulation) or
    /// fp32. Default: bf16 where this CPU has AVX512-BF16, else fp32.
    #[arg(long, default_value_t = auto_precision(), value_parser = parse_precision)]
    precision: Precision,
}

pub fn run(a: SpeedrunArgs) -> anyhow::Result<()> {
    let dir = a.run.unwrap_or_else(|| PathBuf::from(if a.quick { "runs/speedrun-quick" } else { "runs/speedrun" }));
    Ok(speedrun::run(&Run::open(dir), a.quick, a.precision)?)
}
