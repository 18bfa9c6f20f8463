//! chatforge-eval: the evals registry (OpenAI Evals format), its graders, the built-in evals and
//! the runner that writes per-sample results and the stage's figures into the report card.

pub mod builtin;
pub mod graders;
pub mod policy;
pub mod registry;
pub mod runner;

use std::path::{Path, PathBuf};

/// Errors of the eval crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] chatforge_core::Error),
    #[error(transparent)]
    Data(#[from] chatforge_data::Error),
    #[error(transparent)]
    Train(#[from] chatforge_train::Error),
    #[error(transparent)]
    File(#[from] chatforge_rundir::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A registry file that cannot be used.
    #[error("{path}: {msg}")]
    Registry { path: PathBuf, msg: String },
    /// A bad line of a samples file (1-based).
    #[error("{path}:{line}: {msg}")]
    BadSample { path: PathBuf, line: usize, msg: String },
    #[error("{0}")]
    Input(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub use policy::{Borrowed, CheckpointReward, ModelPolicy, Policy, Prompt, Reply, Rewarder};
pub use registry::{Class, EvalSpec, Registry, Sample};
pub use runner::{headline, record, run_eval, EvalOptions, EvalOutcome, Helpers};
