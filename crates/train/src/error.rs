use std::path::{Path, PathBuf};

/// Errors of the training crate: every training loop, checkpoints, the scaling fits.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] chatforge_core::Error),
    #[error(transparent)]
    Data(#[from] chatforge_data::Error),
    #[error(transparent)]
    Feedback(#[from] chatforge_feedback::Error),
    #[error(transparent)]
    File(#[from] chatforge_rundir::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Input(String),
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("training diverged: {0}")]
    Diverged(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
