//! chatforge's server: the web pages (chat and rater) and the feedback they collect.

mod error;
pub mod label;
pub mod web;

pub use error::{Error, Result};
