use std::path::{Path, PathBuf};

/// Errors of the data crate: corpora, the tokenizer, chat templates and token shards.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("bad format: {0}")]
    Format(String),
    #[error("bad config: {0}")]
    Config(String),
    #[error("{path}: unreadable: {msg}")]
    Unreadable { path: PathBuf, msg: String },
    /// A bad line of a JSONL file (1-based line number).
    #[error("{path}:{line}: {msg}")]
    BadLine { path: PathBuf, line: usize, msg: String },
    #[error(transparent)]
    File(#[from] chatforge_rundir::Error),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
