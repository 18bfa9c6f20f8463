//! Data: the run's corpus cleaned, deduplicated and filtered into `R/data/` (train/val split by
//! document, `data_report.md` saying what was removed and why; see `chatforge_data::clean`),
//! once. `chatforge data --out DIR` runs the same cleaning on any folder outside a run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chatforge_data::clean::{self, CleanConfig};
use chatforge_rundir::Key;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// The documents; None: the bundled corpus (`data/corpus`).
    pub input: Option<PathBuf>,
    pub clean: CleanConfig,
}

/// `data` in report.json: what went in, what came out, what was removed and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub docs_in: u64,
    pub bytes_in: u64,
    pub docs_out: u64,
    pub bytes_out: u64,
    pub removed_docs_by_reason: BTreeMap<String, u64>,
    pub near_duplicate_pairs: usize,
}

/// The parts of `data_report.json` the figures come from.
#[derive(Deserialize)]
struct CleanedReport {
    docs_in: u64,
    bytes_in: u64,
    docs_out: u64,
    bytes_out: u64,
    removed: BTreeMap<String, Removed>,
    near_duplicates: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Removed {
    docs: u64,
}

/// Cleans into `R/data/` unless it is there already; records and returns the figures.
pub fn run(run: &Run, cfg: &Config) -> Result<Figures> {
    let out = run.dir.data();
    if !run.dir.train_docs().exists() {
        let input = match &cfg.input {
            Some(p) => p.clone(),
            None => clean::bundled_corpus_dir()
                .ok_or_else(|| Error::Input("the bundled corpus (data/corpus) was not found; pass --data FILE|DIR".into()))?,
        };
        let r = clean::run(&input, &out, &cfg.clean)?;
        if !run.quiet {
            println!(
                "data: {} docs in, {} out ({} near-duplicate pairs found); report in {}",
                r.docs_in,
                r.docs_out,
                r.near_duplicates.len(),
                run.dir.data_report_md().display()
            );
        }
    }
    let path = run.dir.data_report();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let r: CleanedReport = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let figures = Figures {
        docs_in: r.docs_in,
        bytes_in: r.bytes_in,
        docs_out: r.docs_out,
        bytes_out: r.bytes_out,
        removed_docs_by_reason: r.removed.into_iter().map(|(k, v)| (k, v.docs)).collect(),
        near_duplicate_pairs: r.near_duplicates.len(),
    };
    run.record(Key::Data, &figures)?;
    Ok(figures)
}
