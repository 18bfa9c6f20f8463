//! `chatforge prefs export|import`: the store's preference pairs as TRL's conversational JSONL
//! (prompt, chosen, rejected; rankings expand to K·(K−1)/2 pairs), and back.

use std::path::PathBuf;

use chatforge_feedback::prefs;
use chatforge_stages::rm::Raters;
use chatforge_stages::Run;
use clap::Subcommand;

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
        only: Option<Raters>,
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

pub fn run(c: PrefsCmd) -> anyhow::Result<()> {
    match c {
        PrefsCmd::Export { run, out, only } => {
            let store = Run::open(&run).store()?;
            let n = prefs::export(&store, &out, only.unwrap_or_default().simulated())?;
            println!("wrote {n} pairs to {}", out.display());
        }
        PrefsCmd::Import { run, input, rater, simulated } => {
            let mut store = Run::open(&run).store()?;
            let n = prefs::import(&mut store, &input, &rater, simulated)?;
            println!("imported {n} pairs from {} into {}", input.display(), store.path().display());
        }
    }
    Ok(())
}
