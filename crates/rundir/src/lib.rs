//! chatforge-rundir: run-folder I/O, the leaf every other crate may use.
//!
//! - [`layout`]: the names of a run folder's files ([`RunDir`]); nothing else spells them.
//! - [`fs`]: atomic writes with fsync and sha256 checksums.
//! - [`report`]: `report.json` under typed keys, `metrics.jsonl`, and the machine's description.
//! - [`card`]: `report.json` rendered as the report card (`report.md`, `report.html`).
//! - [`plot`]: SVG charts.
//!
//! It depends on no other chatforge crate, so the model, data, training, eval and serving
//! crates share one implementation of each without depending on one another.

pub mod card;
mod error;
pub mod fs;
pub mod layout;
pub mod plot;
pub mod report;

pub use error::{Error, Result};
pub use layout::RunDir;
pub use report::{Key, Report};
