use std::path::{Path, PathBuf};

/// Errors of the core crate: the model, its checkpoints and the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad format: {0}")]
    Format(String),
    #[error("bad config: {0}")]
    Config(String),
    #[error("tensor {name}: {msg}")]
    Tensor { name: String, msg: String },
    #[error(transparent)]
    File(#[from] chatforge_rundir::Error),
    #[error("{0}")]
    Input(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
