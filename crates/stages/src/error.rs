use std::path::PathBuf;

/// Errors of the stages: what a stage needs and the run does not have, bad settings, and the
/// errors of the crates below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stage's input is missing; `hint` is the command that makes it.
    #[error("{what}: {hint}")]
    Missing { what: String, hint: String },
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    File(#[from] chatforge_rundir::Error),
    #[error(transparent)]
    Core(#[from] chatforge_core::Error),
    #[error(transparent)]
    Data(#[from] chatforge_data::Error),
    #[error(transparent)]
    Train(#[from] chatforge_train::Error),
    #[error(transparent)]
    Feedback(#[from] chatforge_feedback::Error),
    #[error(transparent)]
    Eval(#[from] chatforge_eval::Error),
    #[error(transparent)]
    Serve(#[from] chatforge_serve::Error),
}

impl Error {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
