use std::path::{Path, PathBuf};

/// Errors of run-folder I/O: a file that cannot be read or written, a corrupt one, a plot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: checksum mismatch (expected sha256 {expected}, found {found}); the file is corrupt")]
    Checksum { path: PathBuf, expected: String, found: String },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("plot {path}: {msg}")]
    Plot { path: PathBuf, msg: String },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
