//! chatforge-train: the optimiser, the training loops of every stage (pretraining, SFT, reward
//! model, PPO, DPO), checkpoints and exact resume, the scaling fits, simulated labeling and the
//! win-rate judge. The stages that put them together over a run folder are `chatforge-stages`.

pub mod answer;
pub mod bench;
pub mod ckpt;
pub mod compare;
pub mod dpo;
mod error;
pub mod labels;
pub mod optim;
pub mod ppo;
pub mod pretrain;
pub mod rm;
pub mod scaling;
pub mod sft;
pub mod trainer;

pub use error::{Error, Result};
