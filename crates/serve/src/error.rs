/// Errors of the serve crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Feedback(#[from] chatforge_feedback::Error),
    #[error("the prompt has {tokens} tokens; the model's context is {context}")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("no prompts to label")]
    NoPrompts,
    #[error("prompt {index}: {message}")]
    BadPrompt { index: usize, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;
