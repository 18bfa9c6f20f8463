//! The OpenAI-compatible API: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! `/v1/moderations`, `/health`, `/metrics`.
//!
//! Requests are parsed by hand from JSON values so that every malformed field is a 400 that names
//! the field (`param`), never a 422 or a 500. Validation happens before anything is queued or
//! streamed: a prompt over the context is a 400 `context_length_exceeded` before any SSE byte.
//!
//! Messages: an optional first `system` (or `developer`) message, then `user` and `assistant`
//! turns that alternate, starting with `user` and ending with `user` or with tool results. Two
//! user or two assistant messages in a row are a 400: the chat template and SFT data never have
//! them, so the model would be asked something it was not trained on. An assistant message may
//! carry `tool_calls` (its `content` may then be null); it is followed by one `tool` message per
//! call (`tool_call_id`). `content` is a string or a list of `{"type": "text"}` parts.
//!
//! # Layout
//! This file holds the routes, the small handlers (health, models, metrics, moderations) and
//! what the completion handlers share once a request is read: queueing its sequences, collecting
//! their events, moderation of inputs and outputs. Reading a request and checking every field is
//! `request`; the tool fields of a chat request (`tools`, `tool_choice`, `builtin_tools`) and the
//! JSON of calls are `tools`; the two completion endpoints, streamed or not, are `chat` and
//! `completions`.

mod chat;
mod completions;
mod request;
mod tools;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::constrained::{Grammar, JsonConstraint};
use crate::engine::{Event, Job, SubmitError, TokenLogprob, ToolUse};
use crate::moderation::Action;
use crate::{ApiError, AppState};
use chatforge_data::chat::ToolCall;
use chatforge_data::tools::CallRecord;

use chat::chat_completions;
use completions::completions;
use request::{choice_seed, read_object, type_err, Params};

type S = State<Arc<AppState>>;

/// The API routes (the caller adds auth and state).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/moderations", post(moderations))
        .route("/metrics", get(metrics))
}

pub async fn health(State(st): S) -> Json<Value> {
    Json(json!({"status": "ok", "models": st.models.iter().map(|m| m.id.clone()).collect::<Vec<_>>()}))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "Unknown route.").code("unknown_url")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "This route does not take that method.")
        .code("method_not_allowed")
}

async fn metrics(State(st): S) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

fn model_json(st: &AppState, i: usize) -> Value {
    let m = &st.models[i];
    json!({"id": m.id, "object": "model", "created": m.created, "owned_by": "chatforge", "context_length": m.context})
}

async fn list_models(State(st): S) -> Json<Value> {
    Json(json!({"object": "list", "data": (0..st.models.len()).map(|i| model_json(&st, i)).collect::<Vec<_>>()}))
}

async fn get_model(State(st): S, axum::extract::Path(id): axum::extract::Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(model_json(&st, find_model(&st, Some(&id))?)))
}

fn find_model(st: &AppState, id: Option<&str>) -> Result<usize, ApiError> {
    match id {
        None => Ok(st.default_model),
        Some(id) => st.models.iter().position(|m| m.id == id).ok_or_else(|| {
            ApiError {
                param: Some("model".into()),
                ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("The model `{id}` does not exist."))
            }
            .code("model_not_found")
        }),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>())
}

/// Queues the `n` sequences of a request; their events arrive on the returned receiver.
#[allow(clippy::too_many_arguments)]
fn submit(
    st: &AppState,
    p: &Params,
    prompt: Vec<u32>,
    max_tokens: usize,
    stop_ids: Vec<u32>,
    logprobs: Option<usize>,
    grammar: Option<Grammar>,
    tools: Option<ToolUse>,
) -> Result<mpsc::UnboundedReceiver<(usize, Event)>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let grammar = grammar.map(Arc::new);
    let jobs = (0..p.n)
        .map(|i| Job {
            model: p.model,
            prompt: prompt.clone(),
            max_tokens,
            min_tokens: p.min_tokens,
            params: p.params,
            seed: choice_seed(p.seed, i),
            stop_ids: stop_ids.clone(),
            stop: p.stop.clone(),
            logprobs,
            constraint: grammar.clone().map(JsonConstraint::new),
            tools: tools.clone(),
            index: i,
            tx: tx.clone(),
        })
        .collect();
    st.engine.submit_all(jobs).map_err(|e| match e {
        SubmitError::QueueFull => {
            st.metrics.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "The server is busy: its queue is full. Retry shortly.")
                .code("queue_full")
        }
        SubmitError::Stopped => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "The engine has stopped.").code("engine_stopped")
        }
    })?;
    Ok(rx)
}

/// A choice being collected.
#[derive(Default, Clone)]
struct Choice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<&'static str>,
    completion_tokens: usize,
    prompt_tokens: usize,
    /// Built-in calls the engine ran, in order.
    trace: Vec<CallRecord>,
    /// Calls of client functions the answer ends with (ids already made unique).
    tool_calls: Vec<ToolCall>,
}

/// Applies the policy to a finished or growing output: true when it is refused (the refusal
/// replaces it). `flagged` remembers that this output was already counted as flagged.
fn moderate_output(st: &AppState, text: &str, flagged: &mut bool) -> bool {
    if !st.moderator.policy.moderate_outputs || text.trim().is_empty() {
        return false;
    }
    match st.moderator.check(text).action {
        Action::Refuse => {
            st.metrics.moderation_refused.fetch_add(1, Ordering::Relaxed);
            true
        }
        Action::Flag => {
            if !*flagged {
                *flagged = true;
                st.metrics.moderation_flagged.fetch_add(1, Ordering::Relaxed);
                tracing::info!("moderation flagged an output");
            }
            false
        }
        Action::Allow => false,
    }
}

/// Applies the policy to the user's last message: `Some(refusal)` when refused.
fn moderate_input(st: &AppState, text: &str) -> Option<String> {
    let v = st.moderator.check(text);
    match v.action {
        Action::Refuse => {
            st.metrics.moderation_refused.fetch_add(1, Ordering::Relaxed);
            Some(st.moderator.policy.refusal.clone())
        }
        Action::Flag => {
            st.metrics.moderation_flagged.fetch_add(1, Ordering::Relaxed);
            tracing::info!("moderation flagged a request");
            None
        }
        Action::Allow => None,
    }
}

async fn collect(st: &AppState, mut rx: mpsc::UnboundedReceiver<(usize, Event)>, n: usize) -> Vec<Choice> {
    let mut choices = vec![Choice::default(); n];
    let mut left = n;
    while left > 0 {
        let Some((i, ev)) = rx.recv().await else { break };
        match ev {
            Event::Delta { text, logprobs } => {
                choices[i].text.push_str(&text);
                choices[i].logprobs.extend(logprobs);
            }
            Event::Tools { calls } => choices[i].trace.extend(calls),
            Event::Done { finish_reason, prompt_tokens, completion_tokens, tool_calls } => {
                let c = &mut choices[i];
                c.tool_calls = tools::with_ids(&tool_calls);
                c.finish = Some(finish_reason);
                c.prompt_tokens = prompt_tokens;
                c.completion_tokens = completion_tokens;
                left -= 1;
            }
        }
    }
    for c in &mut choices {
        if moderate_output(st, &c.text, &mut false) {
            c.text = st.moderator.policy.refusal.clone();
            c.logprobs.clear();
            c.tool_calls.clear();
            c.finish = Some("content_filter");
        }
    }
    choices
}

fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let item = |t: &str, b: &[u8], lp: f32| json!({"token": t, "logprob": lp, "bytes": b});
    json!({"content": lps.iter().map(|l| {
        let mut v = item(&l.token, &l.bytes, l.logprob);
        v["top_logprobs"] = Value::Array(l.top.iter().map(|(t, b, lp)| item(t, b, *lp)).collect());
        v
    }).collect::<Vec<_>>()})
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

// ---------------------------------------------------------------------------------------------
// Moderations

async fn moderations(State(st): S, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let o = read_object(&st, &headers, body).await?;
    let inputs: Vec<String> = match o.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            let v: Option<Vec<String>> = a.iter().map(|x| x.as_str().map(String::from)).collect();
            v.ok_or_else(|| type_err("input", "a string or a list of strings"))?
        }
        None => return Err(ApiError::invalid("input", "`input` is required.").code("missing_required_parameter")),
        Some(_) => return Err(type_err("input", "a string or a non-empty list of strings")),
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|t| {
            let v = st.moderator.check(t);
            let cats: Map<String, Value> = v.categories.iter().map(|(c, _, f)| (c.clone(), json!(f))).collect();
            let scores: Map<String, Value> = v.categories.iter().map(|(c, s, _)| (c.clone(), json!(s))).collect();
            let action = match v.action {
                Action::Allow => "allow",
                Action::Flag => "flag",
                Action::Refuse => "refuse",
            };
            json!({"flagged": v.flagged(), "categories": cats, "category_scores": scores, "policy_action": action})
        })
        .collect();
    Ok(Json(json!({"id": new_id("modr"), "model": "chatforge-moderation", "results": results})))
}
