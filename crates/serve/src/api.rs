//! The OpenAI-compatible API: `/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//! `/v1/moderations`, `/health`, `/metrics`.
//!
//! Requests are parsed by hand from JSON values so that every malformed field is a 400 that names
//! the field (`param`), never a 422 or a 500. Validation happens before anything is queued or
//! streamed: a prompt over the context is a 400 `context_length_exceeded` before any SSE byte.
//!
//! Messages: an optional first `system` (or `developer`) message, then `user` and `assistant`
//! turns that alternate, starting and ending with `user`. Two user or two assistant messages in a
//! row are a 400: the chat template and SFT data never have them, so the model would be asked
//! something it was not trained on. `content` is a string or a list of `{"type": "text"}` parts.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatforge_core::sample::SamplingParams;
use chatforge_data::chat::{encode_prompt, Conversation, Message, Role};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::engine::{Event, Job, SubmitError, TokenLogprob};
use crate::json::{Constraint, Grammar};
use crate::moderation::Action;
use crate::{ApiError, AppState};

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

// ---------------------------------------------------------------------------------------------
// Reading requests

/// Reads the body (413 over the cap) and parses it as a JSON object (400 otherwise).
async fn read_object(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
    let cap = st.limits.max_body_bytes;
    let too_big = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", format!("The request body is over {cap} bytes."))
            .code("request_too_large")
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        if len > cap {
            return Err(too_big());
        }
    }
    let bytes = axum::body::to_bytes(body, cap).await.map_err(|_| too_big())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", format!("The body is not valid JSON: {e}")).code("invalid_json")
    })?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "The body must be a JSON object.").code("invalid_json")),
    }
}

fn type_err(param: &str, want: &str) -> ApiError {
    ApiError::invalid(param, format!("`{param}` must be {want}.")).code("invalid_type")
}

/// A field that may be absent or null.
fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn get_f32(o: &Map<String, Value>, k: &str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match field(o, k) {
        None => Ok(None),
        Some(v) => {
            let x = v.as_f64().ok_or_else(|| type_err(k, "a number"))? as f32;
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::invalid(k, format!("`{k}` must be between {lo} and {hi}; got {x}.")).code("invalid_value"));
            }
            Ok(Some(x))
        }
    }
}

fn get_uint(o: &Map<String, Value>, k: &str) -> Result<Option<u64>, ApiError> {
    match field(o, k) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| type_err(k, "a non-negative integer")),
    }
}

fn get_bool(o: &Map<String, Value>, k: &str) -> Result<bool, ApiError> {
    match field(o, k) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| type_err(k, "a boolean")),
    }
}

/// What chat and text completions share.
struct Params {
    model: usize,
    max_tokens: Option<usize>,
    params: SamplingParams,
    n: usize,
    seed: Option<u64>,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

/// Parameters that would change the output in ways this server does not implement: refused
/// rather than silently ignored.
fn unsupported(o: &Map<String, Value>) -> Result<(), ApiError> {
    for k in ["tools", "functions", "tool_choice", "function_call", "audio", "prediction"] {
        if field(o, k).is_some_and(|v| !v.as_array().is_some_and(|a| a.is_empty())) {
            return Err(ApiError::invalid(k, format!("`{k}` is not supported by this server.")).code("unsupported_parameter"));
        }
    }
    for k in ["frequency_penalty", "presence_penalty"] {
        if field(o, k).is_some_and(|v| v.as_f64() != Some(0.0)) {
            return Err(ApiError::invalid(k, format!("`{k}` other than 0 is not supported by this server.")).code("unsupported_parameter"));
        }
    }
    if field(o, "logit_bias").is_some_and(|v| !v.as_object().is_some_and(|m| m.is_empty())) {
        return Err(ApiError::invalid("logit_bias", "`logit_bias` is not supported by this server.").code("unsupported_parameter"));
    }
    Ok(())
}

fn common(st: &AppState, o: &Map<String, Value>) -> Result<Params, ApiError> {
    unsupported(o)?;
    let model = match field(o, "model") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(type_err("model", "a string")),
    };
    let model = find_model(st, model)?;
    let mut max_tokens = None;
    for k in ["max_tokens", "max_completion_tokens"] {
        if let Some(m) = get_uint(o, k)? {
            if m == 0 || m as usize > st.limits.max_tokens {
                return Err(
                    ApiError::invalid(k, format!("`{k}` must be between 1 and {}; got {m}.", st.limits.max_tokens)).code("invalid_value")
                );
            }
            max_tokens = Some(m as usize);
        }
    }
    let temperature = get_f32(o, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = get_f32(o, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    if top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "`top_p` must be above 0.").code("invalid_value"));
    }
    let n = get_uint(o, "n")?.unwrap_or(1);
    if n == 0 || n as usize > st.limits.max_n {
        return Err(ApiError::invalid("n", format!("`n` must be between 1 and {}; got {n}.", st.limits.max_n)).code("invalid_value"));
    }
    let seed = match field(o, "seed") {
        None => None,
        Some(v) => Some(v.as_i64().map(|x| x as u64).or_else(|| v.as_u64()).ok_or_else(|| type_err("seed", "an integer"))?),
    };
    let stop = match field(o, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let v: Option<Vec<String>> = a.iter().map(|x| x.as_str().map(String::from)).collect();
            v.ok_or_else(|| type_err("stop", "a string or a list of strings"))?
        }
        Some(_) => return Err(type_err("stop", "a string or a list of strings")),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::invalid("stop", "`stop` takes at most 4 non-empty strings of at most 256 bytes.").code("invalid_value"));
    }
    let stream = get_bool(o, "stream")?;
    let include_usage = match field(o, "stream_options") {
        None => false,
        Some(Value::Object(so)) => get_bool(so, "include_usage").map_err(|_| type_err("stream_options.include_usage", "a boolean"))?,
        Some(_) => return Err(type_err("stream_options", "an object")),
    };
    if field(o, "stream_options").is_some() && !stream {
        return Err(ApiError::invalid("stream_options", "`stream_options` is only allowed when `stream` is true.").code("invalid_value"));
    }
    Ok(Params {
        model,
        max_tokens,
        params: SamplingParams { temperature, top_k: 0, top_p },
        n: n as usize,
        seed,
        stop,
        stream,
        include_usage,
    })
}

fn parse_messages(o: &Map<String, Value>) -> Result<Conversation, ApiError> {
    let arr = match o.get("messages") {
        None => return Err(ApiError::invalid("messages", "`messages` is required.").code("missing_required_parameter")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(type_err("messages", "an array of messages")),
    };
    if arr.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty.").code("invalid_value"));
    }
    let mut msgs = Vec::new();
    for (i, m) in arr.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = m.as_object().ok_or_else(|| type_err(&p, "an object with `role` and `content`"))?;
        let role = match m.get("role") {
            Some(Value::String(r)) => match r.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::invalid(&format!("{p}.role"), format!("Unsupported role `{other}` (system, user or assistant)."))
                        .code("invalid_value"))
                }
            },
            None => {
                return Err(ApiError::invalid(&format!("{p}.role"), format!("`{p}.role` is required.")).code("missing_required_parameter"))
            }
            Some(_) => return Err(type_err(&format!("{p}.role"), "a string")),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => return Err(type_err(&format!("{p}.content[{j}]"), "a text part {\"type\": \"text\", \"text\": ...}")),
                    }
                }
                text
            }
            None | Some(Value::Null) => {
                return Err(
                    ApiError::invalid(&format!("{p}.content"), format!("`{p}.content` is required.")).code("missing_required_parameter")
                )
            }
            Some(_) => return Err(type_err(&format!("{p}.content"), "a string or a list of text parts")),
        };
        if let Some(prev) = msgs.last().map(|x: &Message| x.role) {
            if prev == role && role != Role::System {
                return Err(ApiError::invalid(
                    &p,
                    format!("{p} is a second {role} message in a row; user and assistant turns must alternate."),
                )
                .code("invalid_value"));
            }
            if prev == Role::System && role == Role::Assistant {
                return Err(ApiError::invalid(&p, "The first turn after the system message must be the user's.").code("invalid_value"));
            }
        } else if role == Role::Assistant {
            return Err(ApiError::invalid(&p, "The conversation must start with a system or user message.").code("invalid_value"));
        }
        msgs.push(Message::new(role, content));
    }
    let conv = Conversation::new(msgs);
    conv.validate_for_prompt().map_err(|e| ApiError::invalid("messages", format!("Invalid messages: {e}.")).code("invalid_value"))?;
    Ok(conv)
}

fn parse_response_format(o: &Map<String, Value>) -> Result<Option<Grammar>, ApiError> {
    let Some(rf) = field(o, "response_format") else { return Ok(None) };
    let rf = rf.as_object().ok_or_else(|| type_err("response_format", "an object"))?;
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::json_object())),
        Some("json_schema") => {
            let js =
                rf.get("json_schema").and_then(Value::as_object).ok_or_else(|| type_err("response_format.json_schema", "an object"))?;
            let schema = js.get("schema").ok_or_else(|| {
                ApiError::invalid("response_format.json_schema.schema", "`response_format.json_schema.schema` is required.")
                    .code("missing_required_parameter")
            })?;
            Grammar::from_schema(schema)
                .map(Some)
                .map_err(|e| ApiError::invalid("response_format.json_schema.schema", e).code("invalid_value"))
        }
        Some(other) => Err(ApiError::invalid(
            "response_format.type",
            format!("Unknown response_format type `{other}` (text, json_object or json_schema)."),
        )
        .code("invalid_value")),
        None => Err(ApiError::invalid("response_format.type", "`response_format.type` is required.").code("missing_required_parameter")),
    }
}

/// 400 `context_length_exceeded` when the prompt and the asked-for completion do not fit.
fn check_context(st: &AppState, p: &Params, prompt: usize) -> Result<usize, ApiError> {
    let ctx = st.models[p.model].context;
    let want = p.max_tokens.unwrap_or(1);
    if prompt + want > ctx {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({prompt} in the messages, {want} in the completion). Please reduce the length of the messages or completion.",
                prompt + want
            ),
        )
        .code("context_length_exceeded"));
    }
    Ok(p.max_tokens.unwrap_or((ctx - prompt).min(st.limits.max_tokens)))
}

/// Sequence `i`'s seed: the request's seed mixed with `i` (splitmix64), or a fresh random one.
fn choice_seed(seed: Option<u64>, i: usize) -> u64 {
    match seed {
        Some(s) => {
            let mut z = s ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        None => rand::random(),
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
) -> Result<mpsc::UnboundedReceiver<(usize, Event)>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let grammar = grammar.map(Arc::new);
    let jobs = (0..p.n)
        .map(|i| Job {
            model: p.model,
            prompt: prompt.clone(),
            max_tokens,
            params: p.params,
            seed: choice_seed(p.seed, i),
            stop_ids: stop_ids.clone(),
            stop: p.stop.clone(),
            logprobs,
            constraint: grammar.clone().map(Constraint::new),
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
            Event::Done { finish_reason, prompt_tokens, completion_tokens } => {
                let c = &mut choices[i];
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
// Chat completions

async fn chat_completions(State(st): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let o = read_object(&st, &headers, body).await?;
    let conv = parse_messages(&o)?;
    let p = common(&st, &o)?;
    let want_lp = get_bool(&o, "logprobs")?;
    let top = get_uint(&o, "top_logprobs")?;
    if top.is_some_and(|k| k > 20) {
        return Err(ApiError::invalid("top_logprobs", "`top_logprobs` must be between 0 and 20.").code("invalid_value"));
    }
    if top.is_some() && !want_lp {
        return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`.").code("invalid_value"));
    }
    let logprobs = want_lp.then(|| top.unwrap_or(0) as usize);
    let grammar = parse_response_format(&o)?;
    let prompt = encode_prompt(&st.tok, &conv);
    let max_tokens = check_context(&st, &p, prompt.len())?;
    if let Some(g) = &grammar {
        let need = g.start().min_remaining(g);
        if need > max_tokens {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("The response_format needs at least {need} tokens but only {max_tokens} are allowed (max_tokens or the context)."),
            )
            .code("invalid_value"));
        }
    }
    let id = new_id("chatcmpl");
    let created = now();
    let model = st.models[p.model].id.clone();
    let last_user = conv.messages.last().map(|m| m.content.clone()).unwrap_or_default();
    if let Some(refusal) = moderate_input(&st, &last_user) {
        let choices =
            vec![Choice { text: refusal, finish: Some("content_filter"), prompt_tokens: prompt.len(), ..Default::default() }; p.n];
        return Ok(if p.stream {
            stream_fixed(id, created, model, choices, p.include_usage)
        } else {
            chat_response(id, created, model, choices, false)
        });
    }
    let rx = submit(&st, &p, prompt, max_tokens, st.tok.chat_stop_ids(), logprobs, grammar)?;
    if p.stream {
        return Ok(chat_stream(st.clone(), rx, id, created, model, p.n, p.include_usage, logprobs.is_some()));
    }
    let choices = collect(&st, rx, p.n).await;
    Ok(chat_response(id, created, model, choices, logprobs.is_some()))
}

fn chat_response(id: String, created: u64, model: String, choices: Vec<Choice>, logprobs: bool) -> Response {
    let prompt = choices.first().map_or(0, |c| c.prompt_tokens);
    let completion: usize = choices.iter().map(|c| c.completion_tokens).sum();
    let cs: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": i, "message": {"role": "assistant", "content": c.text, "refusal": null},
                   "logprobs": if logprobs { chat_logprobs(&c.logprobs) } else { Value::Null },
                   "finish_reason": c.finish.unwrap_or("stop")})
        })
        .collect();
    Json(json!({"id": id, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": format!("chatforge-{model}"),
                "choices": cs, "usage": usage(prompt, completion)}))
    .into_response()
}

/// Builds the SSE chunks of a chat stream.
struct ChunkMaker {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl ChunkMaker {
    fn chunk(&self, i: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> SseEvent {
        let mut v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": format!("chatforge-{}", self.model),
            "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]});
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        SseEvent::default().data(v.to_string())
    }

    fn usage_chunk(&self, prompt: usize, completion: usize) -> SseEvent {
        let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": format!("chatforge-{}", self.model), "choices": [], "usage": usage(prompt, completion)});
        SseEvent::default().data(v.to_string())
    }
}

fn sse(events: impl futures_util::Stream<Item = SseEvent> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    Sse::new(events.map(Ok::<_, Infallible>)).keep_alive(KeepAlive::default()).into_response()
}

/// A stream of answers known in advance (a refused request).
fn stream_fixed(id: String, created: u64, model: String, choices: Vec<Choice>, include_usage: bool) -> Response {
    let mk = ChunkMaker { id, created, model, include_usage };
    let mut out = Vec::new();
    for (i, c) in choices.iter().enumerate() {
        out.push(mk.chunk(i, json!({"role": "assistant", "content": ""}), Value::Null, None));
        out.push(mk.chunk(i, json!({"content": c.text}), Value::Null, None));
        out.push(mk.chunk(i, json!({}), Value::Null, c.finish));
    }
    if include_usage {
        out.push(mk.usage_chunk(choices.first().map_or(0, |c| c.prompt_tokens), 0));
    }
    out.push(SseEvent::default().data("[DONE]"));
    sse(futures_util::stream::iter(out))
}

struct StreamState {
    st: Arc<AppState>,
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
    mk: ChunkMaker,
    queue: VecDeque<SseEvent>,
    text: Vec<String>,
    flagged: Vec<bool>,
    done: Vec<bool>,
    prompt: usize,
    completion: usize,
    logprobs: bool,
    finished: bool,
}

#[allow(clippy::too_many_arguments)]
fn chat_stream(
    st: Arc<AppState>,
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
    id: String,
    created: u64,
    model: String,
    n: usize,
    include_usage: bool,
    logprobs: bool,
) -> Response {
    let mk = ChunkMaker { id, created, model, include_usage };
    let lp0 = if logprobs { json!({"content": []}) } else { Value::Null };
    let queue: VecDeque<SseEvent> = (0..n).map(|i| mk.chunk(i, json!({"role": "assistant", "content": ""}), lp0.clone(), None)).collect();
    let state = StreamState {
        st,
        rx,
        mk,
        queue,
        text: vec![String::new(); n],
        flagged: vec![false; n],
        done: vec![false; n],
        prompt: 0,
        completion: 0,
        logprobs,
        finished: false,
    };
    sse(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.queue.pop_front() {
                return Some((ev, s));
            }
            if s.finished {
                return None;
            }
            if s.done.iter().all(|&d| d) {
                if s.mk.include_usage {
                    s.queue.push_back(s.mk.usage_chunk(s.prompt, s.completion));
                }
                s.queue.push_back(SseEvent::default().data("[DONE]"));
                s.finished = true;
                continue;
            }
            let Some((i, ev)) = s.rx.recv().await else {
                // The engine went away: end the choices that are still open.
                for i in 0..s.done.len() {
                    if !s.done[i] {
                        s.done[i] = true;
                        let ev = s.mk.chunk(i, json!({}), Value::Null, Some("stop"));
                        s.queue.push_back(ev);
                    }
                }
                continue;
            };
            if s.done[i] {
                continue;
            }
            match ev {
                Event::Delta { text, logprobs } => {
                    s.text[i].push_str(&text);
                    if moderate_output(&s.st, &s.text[i], &mut s.flagged[i]) {
                        s.done[i] = true;
                        let ev = s.mk.chunk(i, json!({}), Value::Null, Some("content_filter"));
                        s.queue.push_back(ev);
                        continue;
                    }
                    let lp = if s.logprobs { chat_logprobs(&logprobs) } else { Value::Null };
                    let ev = s.mk.chunk(i, json!({"content": text}), lp, None);
                    s.queue.push_back(ev);
                }
                Event::Done { finish_reason, prompt_tokens, completion_tokens } => {
                    s.done[i] = true;
                    s.prompt = prompt_tokens;
                    s.completion += completion_tokens;
                    let ev = s.mk.chunk(i, json!({}), Value::Null, Some(finish_reason));
                    s.queue.push_back(ev);
                }
            }
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// Text completions

async fn completions(State(st): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let o = read_object(&st, &headers, body).await?;
    let text = match o.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
        None => return Err(ApiError::invalid("prompt", "`prompt` is required.").code("missing_required_parameter")),
        Some(_) => return Err(type_err("prompt", "a string (or a list of one string)")),
    };
    let p = common(&st, &o)?;
    if get_bool(&o, "echo")? {
        return Err(ApiError::invalid("echo", "`echo` is not supported.").code("unsupported_parameter"));
    }
    if get_uint(&o, "best_of")?.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid("best_of", "`best_of` other than 1 is not supported.").code("unsupported_parameter"));
    }
    let logprobs = match get_uint(&o, "logprobs")? {
        Some(k) if k > 5 => return Err(ApiError::invalid("logprobs", "`logprobs` must be between 0 and 5.").code("invalid_value")),
        k => k.map(|k| k as usize),
    };
    let mut prompt = st.tok.encode(&text);
    if prompt.is_empty() {
        prompt.push(st.tok.eot_id());
    }
    let max_tokens = check_context(&st, &p, prompt.len()).map_err(|e| ApiError { param: Some("prompt".into()), ..e })?;
    let id = new_id("cmpl");
    let (created, model) = (now(), st.models[p.model].id.clone());
    if let Some(refusal) = moderate_input(&st, &text) {
        let v = json!({"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": (0..p.n).map(|i| json!({"index": i, "text": refusal, "logprobs": null, "finish_reason": "content_filter"})).collect::<Vec<_>>(),
            "usage": usage(prompt.len(), 0)});
        return Ok(if p.stream {
            let mut evs: Vec<SseEvent> = vec![SseEvent::default().data(v.to_string())];
            evs.push(SseEvent::default().data("[DONE]"));
            sse(futures_util::stream::iter(evs))
        } else {
            Json(v).into_response()
        });
    }
    let rx = submit(&st, &p, prompt, max_tokens, vec![st.tok.eot_id(), st.tok.im_end_id()], logprobs, None)?;
    let lp_json = |lps: &[TokenLogprob]| {
        json!({"tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
               "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
               "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, _, lp)| (t.clone(), json!(lp))).collect::<Map<_, _>>()).collect::<Vec<_>>()})
    };
    if !p.stream {
        let choices = collect(&st, rx, p.n).await;
        let prompt_tokens = choices.first().map_or(0, |c| c.prompt_tokens);
        let completion: usize = choices.iter().map(|c| c.completion_tokens).sum();
        let cs: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"index": i, "text": c.text, "logprobs": if logprobs.is_some() { lp_json(&c.logprobs) } else { Value::Null },
                                 "finish_reason": c.finish.unwrap_or("stop")})
            })
            .collect();
        return Ok(Json(json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": cs,
                              "usage": usage(prompt_tokens, completion)}))
        .into_response());
    }
    let include_usage = p.include_usage;
    let n = p.n;
    let base = json!({"id": id, "object": "text_completion", "created": created, "model": model});
    let state = (rx, vec![false; n], VecDeque::<SseEvent>::new(), 0usize, 0usize, false);
    Ok(sse(futures_util::stream::unfold(state, move |(mut rx, mut done, mut q, mut prompt_t, mut compl, mut fin)| {
        let base = base.clone();
        async move {
            loop {
                if let Some(ev) = q.pop_front() {
                    return Some((ev, (rx, done, q, prompt_t, compl, fin)));
                }
                if fin {
                    return None;
                }
                if done.iter().all(|&d| d) {
                    if include_usage {
                        let mut v = base.clone();
                        v["choices"] = json!([]);
                        v["usage"] = usage(prompt_t, compl);
                        q.push_back(SseEvent::default().data(v.to_string()));
                    }
                    q.push_back(SseEvent::default().data("[DONE]"));
                    fin = true;
                    continue;
                }
                let (i, ev) = match rx.recv().await {
                    Some(x) => x,
                    None => {
                        done.iter_mut().for_each(|d| *d = true);
                        continue;
                    }
                };
                let mut v = base.clone();
                match ev {
                    Event::Delta { text, logprobs: lps } => {
                        let lp = if logprobs.is_some() { lp_json(&lps) } else { Value::Null };
                        v["choices"] = json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}]);
                    }
                    Event::Done { finish_reason, prompt_tokens, completion_tokens } => {
                        done[i] = true;
                        prompt_t = prompt_tokens;
                        compl += completion_tokens;
                        v["choices"] = json!([{"index": i, "text": "", "logprobs": null, "finish_reason": finish_reason}]);
                    }
                }
                if include_usage {
                    v["usage"] = Value::Null;
                }
                q.push_back(SseEvent::default().data(v.to_string()));
            }
        }
    })))
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
