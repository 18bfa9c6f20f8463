//! Errors: the crate's own (`Error`), and the HTTP errors of the API in OpenAI's shape
//! (`ApiError`: `{"error": {"message", "type", "param", "code"}}`).

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors of the serve crate: loading a run, the policy file, binding the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Core(#[from] chatforge_core::Error),
    #[error(transparent)]
    Data(#[from] chatforge_data::Error),
    #[error(transparent)]
    File(#[from] chatforge_rundir::Error),
    #[error("{path}: bad policy file: {msg}")]
    Policy { path: PathBuf, msg: String },
    #[error("bad config: {0}")]
    Config(String),
    #[error("server: {0}")]
    Server(String),
    #[error(transparent)]
    Feedback(#[from] chatforge_feedback::Error),
    #[error("the prompt has {tokens} tokens; the model's context is {context}")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("no prompts to label")]
    NoPrompts,
    #[error("prompt {index}: {message}")]
    BadPrompt { index: usize, message: String },
}

impl Error {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An error answer of the API, as OpenAI writes them.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }

    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError { param: Some(param.to_string()), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
