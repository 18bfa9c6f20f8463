//! The web pages and the feedback they send.
//!
//! - `GET /`: the chat (multi-turn, streamed from `/v1/chat/completions`, system-message presets,
//!   model picker, regenerate, edit, stop, thumbs up/down, "which is better?").
//! - `GET /assets/*`: its script and style sheet (and the rater page's), compiled into the binary.
//! - `POST /feedback/chat`: a thumbs up/down on an answer, into `chat_feedback`.
//! - `POST /feedback/compare`: "which is better?" — the prompt, the two answers (as samples, with
//!   their seeds and sampling settings) and the choice, into `prompts`, `samples` and `comparisons`.
//!
//! A feedback request is answered 2xx only after its rows are committed to `feedback.sqlite`.
//! Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatforge_data::chat::{Conversation, Message, Role};
use chatforge_feedback::{Choice, NewChatFeedback, NewComparison, NewSample, Store};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, AppState};

pub const CHAT_HTML: &str = include_str!("../assets/chat.html");
pub const CHAT_JS: &str = include_str!("../assets/chat.js");
pub const LABEL_HTML: &str = include_str!("../assets/label.html");
pub const LABEL_JS: &str = include_str!("../assets/label.js");
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The preference store, shared by the handlers. `Store` is `Send` but not `Sync`: every use
/// locks it inside `spawn_blocking` (SQLite commits wait for fsync).
pub type SharedStore = Arc<Mutex<Store>>;

/// Opens (creating and migrating) the store at `path`, usually `R/feedback.sqlite`.
pub fn open_store(path: &Path) -> chatforge_feedback::Result<SharedStore> {
    Ok(Arc::new(Mutex::new(Store::open(path)?)))
}

/// Longest rater name, comment or reason, and longest stored text (characters).
const MAX_NAME: usize = 64;
const MAX_NOTE: usize = 2000;
const MAX_TEXT: usize = 100_000;

/// 400 `invalid_request_error`, about `param` when one is named.
pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
    match param {
        Some(p) => ApiError::invalid(p, message),
        None => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message),
    }
}

/// 500 `server_error`.
pub fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

/// Parses a JSON body, answering 400 in OpenAI's shape (axum's own rejection is plain text).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}"), None))
}

/// Runs `f` on the store in the blocking pool (`f` maps store errors with [`store_error`]).
pub async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(|e| internal(format!("feedback store task failed: {e}")))?
}

/// The store rejects bad input (a sample of another prompt, a repeated sample) as `Input`: a 400.
pub fn store_error(e: chatforge_feedback::Error) -> ApiError {
    match e {
        chatforge_feedback::Error::Input(msg) => bad_request(msg, None),
        e => internal(format!("feedback store: {e}")),
    }
}

/// A rater's name: trimmed, at most [`MAX_NAME`] characters; empty means `anonymous`.
pub fn rater_name(name: Option<&str>, required: bool) -> Result<String, ApiError> {
    let name = name.unwrap_or("").trim();
    if name.chars().count() > MAX_NAME {
        return Err(bad_request(format!("rater is longer than {MAX_NAME} characters"), Some("rater")));
    }
    if name.is_empty() {
        return if required { Err(bad_request("rater is required", Some("rater"))) } else { Ok("anonymous".into()) };
    }
    Ok(name.to_string())
}

/// An optional note (comment, reason): trimmed, empty is none, at most [`MAX_NOTE`] characters.
pub fn note(text: Option<String>, param: &'static str) -> Result<Option<String>, ApiError> {
    let text = text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    match text {
        Some(t) if t.chars().count() > MAX_NOTE => Err(bad_request(format!("{param} is longer than {MAX_NOTE} characters"), Some(param))),
        t => Ok(t),
    }
}

/// The name a model id of the API is stored under: `<run>/<stage>`, e.g. `speedrun/sft`
/// (404 for a model the server does not offer).
fn model_name(app: &AppState, model: &str) -> Result<String, ApiError> {
    if !app.models.iter().any(|m| m.id == model) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("The model `{model}` does not exist."))
            .code("model_not_found"));
    }
    Ok(format!("{}/{model}", app.run.name()))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The scripts and the style sheet of both pages (no state; never behind the API key).
pub fn assets() -> Router {
    Router::new()
        .route("/assets/chat.js", get(|| async { asset("text/javascript; charset=utf-8", CHAT_JS) }))
        .route("/assets/label.js", get(|| async { asset("text/javascript; charset=utf-8", LABEL_JS) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// The chat page at `/` and the assets (no state; never behind the API key).
pub fn pages() -> Router {
    assets().route("/", get(|| async { asset("text/html; charset=utf-8", CHAT_HTML) }))
}

/// The rater page's HTML.
pub fn label_page() -> Response {
    asset("text/html; charset=utf-8", LABEL_HTML)
}

/// What the feedback handlers share: the store, and the server (its models, its API key).
#[derive(Clone)]
struct WebState {
    store: SharedStore,
    app: Arc<AppState>,
}

/// The chat page, its assets and its feedback endpoints (`POST /feedback/chat`,
/// `POST /feedback/compare`, behind the API key when one is set): what `chatforge serve` adds
/// to [`crate::app`].
pub fn routes(app: Arc<AppState>, store: SharedStore) -> Router {
    let feedback = Router::new()
        .route("/feedback/chat", post(chat_feedback))
        .route("/feedback/compare", post(compare_feedback))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), crate::require_key))
        .with_state(WebState { store, app });
    pages().merge(feedback)
}

#[derive(Deserialize)]
struct ChatFeedbackRequest {
    model: String,
    /// The conversation up to and including the rated answer (the last message).
    messages: Vec<Message>,
    /// +1 (thumbs up) or -1 (thumbs down).
    rating: i8,
    #[serde(default)]
    rater: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

async fn chat_feedback(State(st): State<WebState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatFeedbackRequest = parse_body(&body)?;
    if req.rating != 1 && req.rating != -1 {
        return Err(bad_request("rating must be 1 (thumbs up) or -1 (thumbs down)", Some("rating")));
    }
    let conversation = Conversation::new(req.messages);
    check_texts(&conversation)?;
    match conversation.messages.last() {
        Some(m) if m.role == Role::Assistant => {}
        _ => return Err(bad_request("the rated answer must be the last message (an assistant message)", Some("messages"))),
    }
    if !conversation.messages.iter().any(|m| m.role == Role::User) {
        return Err(bad_request("the conversation has no user message", Some("messages")));
    }
    conversation.validate().map_err(|e| bad_request(format!("messages: {e}"), Some("messages")))?;
    let f = NewChatFeedback {
        model: model_name(&st.app, &req.model)?,
        conversation,
        rating: req.rating,
        rater: rater_name(req.rater.as_deref(), false)?,
        comment: note(req.comment, "comment")?,
    };
    let id = with_store(&st.store, move |s| s.add_chat_feedback(&f).map_err(store_error)).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

#[derive(Deserialize)]
struct Answer {
    text: String,
    seed: u64,
}

#[derive(Deserialize)]
struct CompareRequest {
    model: String,
    /// The prompt both answers reply to: the messages up to the last user turn.
    messages: Vec<Message>,
    answers: Vec<Answer>,
    /// The sampling settings the answers were drawn with (temperature, top_p, max_tokens).
    #[serde(default)]
    params: serde_json::Value,
    choice: Choice,
    #[serde(default)]
    rater: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn compare_feedback(State(st): State<WebState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompareRequest = parse_body(&body)?;
    let prompt = Conversation::new(req.messages);
    prompt.validate_for_prompt().map_err(|e| bad_request(format!("messages: {e}"), Some("messages")))?;
    check_texts(&prompt)?;
    if req.answers.len() != 2 {
        return Err(bad_request(format!("answers must hold 2 answers, not {}", req.answers.len()), Some("answers")));
    }
    if req.answers.iter().any(|a| a.text.chars().count() > MAX_TEXT) {
        return Err(bad_request(format!("an answer is longer than {MAX_TEXT} characters"), Some("answers")));
    }
    let params = match req.params {
        serde_json::Value::Null => json!({}),
        p @ serde_json::Value::Object(_) => p,
        _ => return Err(bad_request("params must be an object", Some("params"))),
    };
    let model = model_name(&st.app, &req.model)?;
    let rater = rater_name(req.rater.as_deref(), false)?;
    let reason = note(req.reason, "reason")?;
    let choice = req.choice;
    let answers = req.answers;
    let (id, prompt_id, samples) = with_store(&st.store, move |s| {
        let prompt_id = s.add_prompt(&prompt, "chat").map_err(store_error)?;
        let samples: Vec<NewSample> = answers
            .into_iter()
            .map(|a| NewSample { prompt_id, model: model.clone(), text: a.text, params: params.clone(), seed: a.seed })
            .collect();
        let ids = s.add_samples(&samples).map_err(store_error)?;
        let c = NewComparison { prompt_id, sample_a: ids[0], sample_b: ids[1], choice, rater, simulated: false, reason };
        Ok((s.add_comparison(&c).map_err(store_error)?, prompt_id, ids))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "prompt_id": prompt_id, "samples": samples}))).into_response())
}

/// Caps each message's length.
fn check_texts(conv: &Conversation) -> Result<(), ApiError> {
    if conv.messages.len() > 200 {
        return Err(bad_request("more than 200 messages", Some("messages")));
    }
    if conv.messages.iter().any(|m| m.content.chars().count() > MAX_TEXT) {
        return Err(bad_request(format!("a message is longer than {MAX_TEXT} characters"), Some("messages")));
    }
    Ok(())
}
