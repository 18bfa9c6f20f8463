//! chatforge-data: corpora, the tokenizer, chat templates and token shards.

pub mod chat;
pub mod clean;
mod error;
pub mod minhash;
pub mod shards;
pub mod tasks;
pub mod template;
pub mod tokenizer;
pub mod tools;

pub use error::{Error, Result};
