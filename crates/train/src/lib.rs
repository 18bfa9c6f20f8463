//! chatforge-train: the optimiser, the training loops of every stage, and resume.

pub mod optim;
