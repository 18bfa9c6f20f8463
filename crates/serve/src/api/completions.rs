//! `/v1/completions`: a raw text prompt (a string, or a list of one string) with no chat
//! template, answered as one JSON response or an SSE stream.

use std::collections::VecDeque;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::chat::sse;
use super::request::{check_context, common, get_bool, get_uint, read_object, type_err};
use super::{collect, moderate_input, new_id, now, submit, usage, S};
use crate::engine::{Event, TokenLogprob};
use crate::ApiError;

pub(super) async fn completions(State(st): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let o = read_object(&st, &headers, body).await?;
    let text = match o.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
        None => return Err(ApiError::invalid("prompt", "`prompt` is required.").code("missing_required_parameter")),
        Some(_) => return Err(type_err("prompt", "a string (or a list of one string)")),
    };
    let p = common(&st, &o)?;
    for k in ["tools", "tool_choice", "builtin_tools", "grounded_tools"] {
        if super::request::field(&o, k).is_some() {
            return Err(ApiError::invalid(k, format!("`{k}` is for /v1/chat/completions; a text completion calls no tools."))
                .code("unsupported_parameter"));
        }
    }
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
    let rx = submit(&st, &p, prompt, max_tokens, vec![st.tok.eot_id(), st.tok.im_end_id()], logprobs, None, None)?;
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
                    // No tools in a text completion.
                    Event::Tools { .. } => continue,
                    Event::Done { finish_reason, prompt_tokens, completion_tokens, .. } => {
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
