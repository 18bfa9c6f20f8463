//! Tokenizer: a byte-level BPE trained on the cleaned corpus's train split (HF `tokenizers`,
//! with the chat format's special tokens), or raw bytes, or a given tokenizer.json; then both
//! splits encoded into token shards (documents joined by `<|endoftext|>`). Made once: a resumed
//! run reads the very same tokens, and pretraining checks their sha256.

use std::path::PathBuf;

use chatforge_data::tokenizer::Tokenizer;
use chatforge_train::pretrain::{prepare_corpus, TokenShards, TokenizerSpec};
use serde::{Deserialize, Serialize};

use crate::{Result, Run};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The documents: a cleaned corpus folder (`chatforge data`) or a text file; None: the run's
    /// own `R/data/`, cleaned from the bundled corpus if it is not there yet.
    pub data: Option<PathBuf>,
    /// BPE with 4,096 tokens by default.
    pub spec: TokenizerSpec,
}

impl Default for Config {
    fn default() -> Self {
        Config { data: None, spec: TokenizerSpec::Bpe { vocab_size: 4096 } }
    }
}

/// The run's tokenizer and token shards (made now, or read back).
pub fn run(run: &Run, cfg: &Config) -> Result<(Tokenizer, TokenShards)> {
    let data = match &cfg.data {
        Some(d) => d.clone(),
        None => {
            crate::data::run(run, &crate::data::Config::default())?;
            run.dir.data()
        }
    };
    run.create()?;
    Ok(prepare_corpus(&run.dir, &data, &cfg.spec, !run.quiet)?)
}
