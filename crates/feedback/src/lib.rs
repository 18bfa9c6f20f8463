//! Human feedback: the SQLite preference store, simulated labelers, and preference files in
//! TRL's conversational format. The reward model that learns from it lives in `chatforge-train`.

pub mod error;
pub mod prefs;
pub mod simulated;
pub mod store;

pub use error::{Error, Result};
pub use store::{Choice, NewChatFeedback, NewComparison, NewRanking, NewSample, Pair, PairFilter, SampleRow, Store, StoreCounts};
