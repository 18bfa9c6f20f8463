//! chatforge-stages: every stage of building a ChatGPT as one library function over a [`Run`].
//!
//! A stage is `stages::<x>::run(&Run, &Config) -> Result<Figures>`: it reads what earlier stages
//! left in the run folder, does its work (through the training, eval and serving crates), and
//! records its own figures in `report.json`, before/after comparisons and warnings included.
//! `Config::default()` is the stage's recipe, the one the README documents; the CLI and the
//! speedrun only override fields of it. The stages, in the order a run goes through them:
//!
//! | module | what it does | reads | writes |
//! |---|---|---|---|
//! | [`data`] | clean, dedup and filter the corpus | the bundled corpus or a folder | `R/data/` |
//! | [`tokenizer`] | byte-level BPE and the token shards | `R/data/` | `R/tokenizer.json`, `R/tokens/` |
//! | [`scale`] | a ladder of small runs, fitted laws, a predicted loss | the shards | `R/scale/`, `R/scaling.json` |
//! | [`pretrain`] | the base model | the shards | `R/base/` |
//! | [`sft`] | the chat model on the task suite, scored before and after | `R/base/` | `R/sft/`, `R/sft_data/` |
//! | [`label`] | simulated preference labels | `R/sft/` | `R/feedback.sqlite` |
//! | [`rm`] | the reward model | the store | `R/rm/` |
//! | [`ppo`], [`dpo`] | RLHF against the reward model; direct preference optimization | `R/sft/`, `R/rm/`, the store | `R/ppo/`, `R/dpo/` |
//! | [`compare`] | win rates on held-out prompts by the noise-free judge | two stages | `compare.*` |
//! | [`headroom`] | best-of-k: what RLHF could reach with this reward model | `R/sft/`, `R/rm/` | `stages.headroom` |
//! | [`pairs_curve`] | win rate by number of preference pairs | the store | `R/pairs/` |
//! | [`sample`] | "ask it N times": one prompt, N answers, their reward distribution | a chat stage, `R/rm/` | `stages.<stage>.sample` |
//! | [`moderation`] | the moderation classifier for serving | the task suite | `R/moderation.json` |
//! | [`eval`] | the evals registry on a stage | a checkpoint | `R/evals/<stage>/` |
//! | [`import`] | an HF model folder (or cached model id) as a stage, with its tokenizer and chat template | the folder | `R/<stage>/`, `R/tokenizer.json`, `R/tokenizer_config.json` |
//! | [`export`] | a stage as GGUF (llama.cpp, Ollama) or an HF folder (`transformers`) | a checkpoint, `R/tokenizer.json` | `R/export/` or `--out` |
//!
//! [`speedrun`] runs them all in order with the speedrun's recipes.

pub mod compare;
pub mod data;
pub mod dpo;
mod error;
pub mod eval;
pub mod export;
pub mod headroom;
pub mod import;
pub mod label;
pub mod moderation;
pub mod pace;
pub mod pairs_curve;
pub mod ppo;
pub mod pretrain;
pub mod rm;
mod run;
pub mod sample;
pub mod scale;
pub mod sft;
pub mod speedrun;
pub mod tokenizer;

pub use error::{Error, Result};
pub use run::{Run, SUITE_SEED};
