//! `chatforge speedrun`: every stage in order on the bundled corpus, timed (`chatforge_stages::speedrun`).

use std::path::PathBuf;

use chatforge_stages::{speedrun, Run};
use clap::Args;

use crate::args::PrecisionArg;

#[derive(Args)]
pub struct SpeedrunArgs {
    /// Run folder (default runs/speedrun, or runs/speedrun-quick with --quick). An interrupted
    /// speedrun resumes; delete the folder to start over.
    #[arg(long)]
    run: Option<PathBuf>,
    /// The 2-minute version (for tests and a first look).
    #[arg(long)]
    quick: bool,
    /// Of every training stage.
    #[command(flatten)]
    precision: PrecisionArg,
    /// The share of the recipe to run, in (0, 1] (default: measured, the share that ends within
    /// 1,100 s at this machine's training speed, with the unpaced stages paid in full, at most 1;
    /// 1 gives the same models on every machine).
    /// A resumed speedrun keeps the pace it started with.
    #[arg(long)]
    pace: Option<f64>,
}

pub fn run(a: SpeedrunArgs) -> anyhow::Result<()> {
    let dir = a.run.unwrap_or_else(|| PathBuf::from(if a.quick { "runs/speedrun-quick" } else { "runs/speedrun" }));
    Ok(speedrun::run(&Run::open(dir), a.quick, a.precision.value, a.pace)?)
}
