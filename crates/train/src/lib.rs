//! chatforge-train: the optimiser, the training loops of every stage, checkpoints and resume,
//! and the run's report.

pub mod bench;
pub mod card;
pub mod ckpt;
mod error;
pub mod optim;
pub mod pretrain;
pub mod report;
pub mod scaling;
pub mod sft;
pub mod trainer;

pub use error::{Error, Result};
