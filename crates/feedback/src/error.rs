use std::path::{Path, PathBuf};

/// Errors of the feedback crate: the preference store and preference files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Sql { path: PathBuf, source: rusqlite::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    BadLine { path: PathBuf, line: usize, msg: String },
    #[error("{0}")]
    Input(String),
    #[error("{path}: database schema version {found} is newer than this chatforge knows ({known})")]
    Schema { path: PathBuf, found: i64, known: i64 },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
