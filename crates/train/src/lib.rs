//! chatforge-train: the optimiser, the training loops of every stage, checkpoints and resume,
//! and the run's report.

pub mod bench;
pub mod card;
pub mod ckpt;
pub mod compare;
pub mod dpo;
mod error;
pub mod labels;
pub mod optim;
pub mod ppo;
pub mod pretrain;
pub mod report;
pub mod rm;
pub mod scaling;
pub mod sft;
pub mod trainer;

pub use error::{Error, Result};
