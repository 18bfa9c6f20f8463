//! chatforge-core: the Llama-architecture model, its compute engine, sampling and checkpoint I/O.

pub mod alloc;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod cpu;
mod error;
pub mod model;
pub mod pool;
pub mod sample;

pub use config::LlamaConfig;
pub use error::{Error, Result};
