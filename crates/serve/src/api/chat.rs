//! `/v1/chat/completions`: the request through the template (with the declared functions in
//! the system message; an imported model's own template places them itself), then one JSON response or an SSE stream of chunks (moderated as it grows
//! when the policy says so). Built-in calls the engine ran come back as `message.tool_trace`
//! (streamed: a chunk whose delta holds only `tool_trace`); calls of client functions as
//! `message.tool_calls` (streamed: OpenAI's tool-call deltas, the name first, then the arguments
//! in pieces), with `finish_reason: "tool_calls"`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatforge_data::chat::{encode_prompt, Role, ToolCall};
use chatforge_data::tools::declare;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::request::{check_context, common, get_bool, get_uint, parse_messages, parse_response_format, read_object};
use super::tools::{calls_json, parse_tools, trace_json};
use super::{chat_logprobs, collect, moderate_input, moderate_output, new_id, now, submit, usage, Choice, S};
use crate::engine::Event;
use crate::{ApiError, AppState};

pub(super) async fn chat_completions(State(st): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let o = read_object(&st, &headers, body).await?;
    let conv = parse_messages(&o)?;
    let p = common(&st, &o)?;
    let tools = parse_tools(&o)?;
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
    let prompt = match st.tok.template() {
        // An imported model's own template places the declared functions (and may refuse the
        // conversation, e.g. roles that do not alternate: a 400 with its message).
        Some(t) => {
            let list: Vec<Value> = tools.declared.iter().map(|f| json!({"type": "function", "function": f})).collect();
            let list = (!list.is_empty()).then_some(Value::Array(list));
            t.encode_prompt_with_tools(&st.tok, &conv, list.as_ref())
                .map_err(|e| ApiError::invalid("messages", format!("The model's chat template refused these messages: {e}")))?
        }
        None => encode_prompt(&st.tok, &declare(&conv, &tools.declared)),
    };
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
    let need = tools.min_tokens();
    if need > max_tokens {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("The tool_choice forces a call that needs at least {need} tokens but only {max_tokens} are allowed (max_tokens or the context)."),
        )
        .code("invalid_value"));
    }
    let id = new_id("chatcmpl");
    let created = now();
    let model = st.models[p.model].id.clone();
    let last_user = conv.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()).unwrap_or_default();
    if let Some(refusal) = moderate_input(&st, &last_user) {
        let choices =
            vec![Choice { text: refusal, finish: Some("content_filter"), prompt_tokens: prompt.len(), ..Default::default() }; p.n];
        return Ok(if p.stream {
            stream_fixed(id, created, model, choices, p.include_usage)
        } else {
            chat_response(id, created, model, choices, false)
        });
    }
    let rx = submit(&st, &p, prompt, max_tokens, st.tok.chat_stop_ids(), logprobs, grammar, Some(tools.tools))?;
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
            let mut message = json!({"role": "assistant", "content": c.text, "refusal": null});
            if !c.tool_calls.is_empty() {
                message["tool_calls"] = calls_json(&c.tool_calls);
                if c.text.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            if !c.trace.is_empty() {
                message["tool_trace"] = trace_json(&c.trace);
            }
            json!({"index": i, "message": message,
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

pub(super) fn sse(events: impl futures_util::Stream<Item = SseEvent> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    let mut r = Sse::new(events.map(Ok::<_, Infallible>)).keep_alive(KeepAlive::default()).into_response();
    // SSE is always UTF-8; saying so keeps clients that guess a charset from the header right.
    r.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/event-stream; charset=utf-8"));
    r
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
                Event::Tools { calls } => {
                    let ev = s.mk.chunk(i, json!({"tool_trace": trace_json(&calls)}), Value::Null, None);
                    s.queue.push_back(ev);
                }
                Event::Done { finish_reason, prompt_tokens, completion_tokens, tool_calls } => {
                    s.done[i] = true;
                    s.prompt = prompt_tokens;
                    s.completion += completion_tokens;
                    for ev in call_chunks(&s.mk, i, &super::tools::with_ids(&tool_calls)) {
                        s.queue.push_back(ev);
                    }
                    let ev = s.mk.chunk(i, json!({}), Value::Null, Some(finish_reason));
                    s.queue.push_back(ev);
                }
            }
        }
    }))
}

/// Bytes of a call's arguments per streamed piece.
const ARGUMENT_PIECE: usize = 24;

/// OpenAI's tool-call deltas: per call, its index, id, type and name (arguments empty), then its
/// arguments in pieces.
fn call_chunks(mk: &ChunkMaker, i: usize, calls: &[ToolCall]) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for (k, c) in calls.iter().enumerate() {
        let head = json!({"index": k, "id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": ""}});
        out.push(mk.chunk(i, json!({"tool_calls": [head]}), Value::Null, None));
        let args = c.function.arguments.as_str();
        let mut at = 0;
        while at < args.len() {
            let mut end = (at + ARGUMENT_PIECE).min(args.len());
            while !args.is_char_boundary(end) {
                end += 1;
            }
            let piece = json!({"index": k, "function": {"arguments": &args[at..end]}});
            out.push(mk.chunk(i, json!({"tool_calls": [piece]}), Value::Null, None));
            at = end;
        }
    }
    out
}
