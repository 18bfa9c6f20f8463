//! Reading requests: the body (with its size cap) as a JSON object, typed getters whose errors
//! name the field, the parameters chat and text completions share, the messages and
//! `response_format` of a chat request, and the context check. Everything here runs before a
//! request is queued, so a bad request is a 400 before any SSE byte.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use chatforge_core::sample::SamplingParams;
use chatforge_data::chat::{Conversation, Message, Role};
use serde_json::{Map, Value};

use super::find_model;
use crate::constrained::Grammar;
use crate::{ApiError, AppState};

/// Reads the body (413 over the cap) and parses it as a JSON object (400 otherwise).
pub(super) async fn read_object(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
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

pub(super) fn type_err(param: &str, want: &str) -> ApiError {
    ApiError::invalid(param, format!("`{param}` must be {want}.")).code("invalid_type")
}

/// A field that may be absent or null.
pub(super) fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
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

pub(super) fn get_uint(o: &Map<String, Value>, k: &str) -> Result<Option<u64>, ApiError> {
    match field(o, k) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| type_err(k, "a non-negative integer")),
    }
}

pub(super) fn get_bool(o: &Map<String, Value>, k: &str) -> Result<bool, ApiError> {
    match field(o, k) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| type_err(k, "a boolean")),
    }
}

/// What chat and text completions share.
pub(super) struct Params {
    pub model: usize,
    pub max_tokens: Option<usize>,
    /// Stop tokens cannot end the answer before this many tokens (`min_tokens`); `usize::MAX`
    /// with `ignore_eos`: they never do, and the answer runs to `max_tokens` (as in vLLM).
    pub min_tokens: usize,
    pub params: SamplingParams,
    pub n: usize,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parameters that would change the output in ways this server does not implement: refused
/// rather than silently ignored.
fn unsupported(o: &Map<String, Value>) -> Result<(), ApiError> {
    for k in ["functions", "function_call", "audio", "prediction"] {
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

pub(super) fn common(st: &AppState, o: &Map<String, Value>) -> Result<Params, ApiError> {
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
    let mut min_tokens = get_uint(o, "min_tokens")?.unwrap_or(0) as usize;
    if let Some(m) = max_tokens.filter(|&m| min_tokens > m) {
        return Err(ApiError::invalid("min_tokens", format!("`min_tokens` ({min_tokens}) must not be above `max_tokens` ({m})."))
            .code("invalid_value"));
    }
    if get_bool(o, "ignore_eos")? {
        min_tokens = usize::MAX;
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
        min_tokens,
        params: SamplingParams { temperature, top_k: 0, top_p },
        n: n as usize,
        seed,
        stop,
        stream,
        include_usage,
    })
}

pub(super) fn parse_messages(o: &Map<String, Value>) -> Result<Conversation, ApiError> {
    let arr = match o.get("messages") {
        None => return Err(ApiError::invalid("messages", "`messages` is required.").code("missing_required_parameter")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(type_err("messages", "an array of messages")),
    };
    if arr.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty.").code("invalid_value"));
    }
    let mut msgs: Vec<Message> = Vec::new();
    for (i, m) in arr.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = m.as_object().ok_or_else(|| type_err(&p, "an object with `role` and `content`"))?;
        let role = match m.get("role") {
            Some(Value::String(r)) => match r.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(ApiError::invalid(
                        &format!("{p}.role"),
                        format!("Unsupported role `{other}` (system, user, assistant or tool)."),
                    )
                    .code("invalid_value"))
                }
            },
            None => {
                return Err(ApiError::invalid(&format!("{p}.role"), format!("`{p}.role` is required.")).code("missing_required_parameter"))
            }
            Some(_) => return Err(type_err(&format!("{p}.role"), "a string")),
        };
        let tool_calls = match field(m, "tool_calls") {
            None => vec![],
            Some(_) if role != Role::Assistant => {
                return Err(
                    ApiError::invalid(&format!("{p}.tool_calls"), "Only assistant messages may carry `tool_calls`.").code("invalid_value")
                )
            }
            Some(v) => super::tools::parse_calls(&format!("{p}.tool_calls"), v)?,
        };
        let tool_call_id = match field(m, "tool_call_id") {
            None if role == Role::Tool => {
                return Err(ApiError::invalid(&format!("{p}.tool_call_id"), format!("`{p}.tool_call_id` is required in a tool message."))
                    .code("missing_required_parameter"))
            }
            None => None,
            Some(_) if role != Role::Tool => {
                return Err(
                    ApiError::invalid(&format!("{p}.tool_call_id"), "Only tool messages carry `tool_call_id`.").code("invalid_value")
                )
            }
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(type_err(&format!("{p}.tool_call_id"), "a string")),
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
            // An assistant message that only calls tools has no content.
            None | Some(Value::Null) if !tool_calls.is_empty() => String::new(),
            None | Some(Value::Null) => {
                return Err(
                    ApiError::invalid(&format!("{p}.content"), format!("`{p}.content` is required.")).code("missing_required_parameter")
                )
            }
            Some(_) => return Err(type_err(&format!("{p}.content"), "a string or a list of text parts")),
        };
        check_order(&msgs, role, &p)?;
        if role == Role::Tool {
            // A result answers a call of the assistant message before this run of results, once.
            let calls = msgs.iter().rev().find(|x| x.role != Role::Tool).map(|x| x.tool_calls.as_slice()).unwrap_or_default();
            let id = tool_call_id.as_deref().unwrap_or_default();
            let answered = msgs.iter().rev().take_while(|x| x.role == Role::Tool).any(|x| x.tool_call_id.as_deref() == Some(id));
            if !calls.iter().any(|c| c.id == id) || answered {
                return Err(ApiError::invalid(
                    &format!("{p}.tool_call_id"),
                    format!("{p} answers tool_call_id {id:?}, which the assistant message before it did not call (or which is answered already)."),
                )
                .code("invalid_value"));
            }
        }
        msgs.push(Message { tool_calls, tool_call_id, ..Message::new(role, content) });
    }
    if let Some(m) = unanswered(&msgs) {
        return Err(ApiError::invalid("messages", format!("The tool calls of message {m} are not all answered by tool messages."))
            .code("invalid_value"));
    }
    let conv = Conversation::new(msgs);
    conv.validate_for_prompt().map_err(|e| ApiError::invalid("messages", format!("Invalid messages: {e}.")).code("invalid_value"))?;
    Ok(conv)
}

/// The order of turns: an optional system message, then user and assistant turns that
/// alternate; an assistant message with tool calls is followed by their results (`tool`
/// messages), after which the assistant or the user goes on.
fn check_order(msgs: &[Message], role: Role, p: &str) -> Result<(), ApiError> {
    let bad = |msg: String| Err(ApiError::invalid(p, msg).code("invalid_value"));
    let Some(prev) = msgs.last() else {
        return match role {
            Role::Assistant | Role::Tool => bad("The conversation must start with a system or user message.".into()),
            _ => Ok(()),
        };
    };
    let calls = !prev.tool_calls.is_empty();
    match (prev.role, role) {
        (Role::Assistant, Role::Tool) if calls => Ok(()),
        (Role::Assistant, _) if calls => {
            bad(format!("{p} follows an assistant message with tool_calls; their results (tool messages) must come first."))
        }
        (_, Role::Tool) if prev.role != Role::Tool => {
            bad(format!("{p} is a tool message that does not follow an assistant message with tool_calls."))
        }
        (Role::System, Role::Assistant) => bad("The first turn after the system message must be the user's.".into()),
        (Role::Tool, Role::User | Role::Assistant | Role::Tool) => Ok(()),
        (a, b) if a == b && b != Role::System => {
            bad(format!("{p} is a second {b} message in a row; user and assistant turns must alternate."))
        }
        _ => Ok(()),
    }
}

/// The 0-based index of an assistant message whose calls do not all have a result.
fn unanswered(msgs: &[Message]) -> Option<usize> {
    msgs.iter().enumerate().find_map(|(i, m)| {
        let results: Vec<&str> =
            msgs[i + 1..].iter().take_while(|x| x.role == Role::Tool).filter_map(|x| x.tool_call_id.as_deref()).collect();
        m.tool_calls.iter().any(|c| !results.contains(&c.id.as_str())).then_some(i)
    })
}

pub(super) fn parse_response_format(o: &Map<String, Value>) -> Result<Option<Grammar>, ApiError> {
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
pub(super) fn check_context(st: &AppState, p: &Params, prompt: usize) -> Result<usize, ApiError> {
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
pub(super) fn choice_seed(seed: Option<u64>, i: usize) -> u64 {
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
