//! The API in-process (tower `oneshot` on `app()`), on a tiny random model with the byte
//! tokenizer: the bad-input matrix, auth, the queue, disconnects, seeds, constrained JSON and the
//! moderation policy.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chatforge_core::checkpoint::save_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::LlamaConfig;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_serve::engine::EngineConfig;
use chatforge_serve::{app, AppState, ServeConfig};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const CONTEXT: usize = 256;

/// The moderation classifier and its test-split figures, trained once for all tests.
fn moderation() -> &'static (chatforge_serve::moderation::Classifier, chatforge_serve::moderation::Measure) {
    static M: std::sync::OnceLock<(chatforge_serve::moderation::Classifier, chatforge_serve::moderation::Measure)> =
        std::sync::OnceLock::new();
    M.get_or_init(|| chatforge_serve::moderation::train(1).unwrap())
}

/// A run with the byte tokenizer, random `sft` and `base` models and the moderation classifier.
fn tiny_run(dir: &Path) {
    let tok = Tokenizer::bytes();
    tok.save(&dir.join("tokenizer.json")).unwrap();
    moderation().0.save(&dir.join("moderation.json")).unwrap();
    for (stage, seed) in [("sft", 1), ("base", 2)] {
        std::fs::create_dir_all(dir.join(stage)).unwrap();
        let m = Llama::new(Cpu, LlamaConfig::from_depth(1, tok.vocab_size(), CONTEXT), seed);
        save_model(&m, &dir.join(stage)).unwrap();
    }
}

fn state_with(dir: &Path, f: impl FnOnce(&mut ServeConfig)) -> Arc<AppState> {
    tiny_run(dir);
    let mut cfg = ServeConfig::new(dir);
    f(&mut cfg);
    Arc::new(AppState::load(&cfg).unwrap())
}

async fn call(st: &Arc<AppState>, method: &str, path: &str, body: Body, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = app(st.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

async fn post(st: &Arc<AppState>, path: &str, body: &Value) -> (StatusCode, Value) {
    call(st, "POST", path, Body::from(body.to_string()), None).await
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn assert_error_shape(v: &Value, case: &str) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: no message in {v}");
    assert!(e["type"].is_string(), "{case}: no type in {v}");
    assert!(e.as_object().is_some_and(|o| o.contains_key("param") && o.contains_key("code")), "{case}: no param/code in {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let st = state_with(dir.path(), |_| {});
    let ok_msgs = user("hi");
    let chat = |extra: Value| {
        let mut b = json!({"messages": ok_msgs, "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let long = "word ".repeat(CONTEXT * 2);
    let schema_rf = |schema: Value| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        ("messages null", json!({"messages": null}), 400, None),
        ("messages missing", json!({"model": "sft"}), 400, Some("missing_required_parameter")),
        ("messages a string", json!({"messages": "hello"}), 400, Some("invalid_type")),
        ("messages empty", json!({"messages": []}), 400, None),
        ("messages [123]", json!({"messages": [123]}), 400, Some("invalid_type")),
        ("messages [{}]", json!({"messages": [{}]}), 400, Some("missing_required_parameter")),
        ("numeric role", json!({"messages": [{"role": 5, "content": "hi"}]}), 400, Some("invalid_type")),
        ("unknown role", json!({"messages": [{"role": "wizard", "content": "hi"}]}), 400, None),
        ("tool role", json!({"messages": [{"role": "tool", "content": "hi"}]}), 400, None),
        ("numeric content", json!({"messages": [{"role": "user", "content": 5}]}), 400, Some("invalid_type")),
        ("null content", json!({"messages": [{"role": "user", "content": null}]}), 400, None),
        ("empty content", json!({"messages": [{"role": "user", "content": "  "}]}), 400, None),
        (
            "two assistant turns",
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]}),
            400,
            None,
        ),
        ("two user turns", json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}), 400, None),
        ("ends with assistant", json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}), 400, None),
        (
            "system not first",
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}]}),
            400,
            None,
        ),
        (
            "starts with assistant",
            json!({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}),
            400,
            None,
        ),
        ("max_tokens a string", chat(json!({"max_tokens": "ten"})), 400, Some("invalid_type")),
        ("max_tokens negative", chat(json!({"max_tokens": -1})), 400, Some("invalid_type")),
        ("max_tokens zero", chat(json!({"max_tokens": 0})), 400, Some("invalid_value")),
        ("max_tokens over the cap", chat(json!({"max_tokens": 1_000_000})), 400, Some("invalid_value")),
        ("temperature a string", chat(json!({"temperature": "hot"})), 400, Some("invalid_type")),
        ("temperature too high", chat(json!({"temperature": 5})), 400, Some("invalid_value")),
        ("top_p zero", chat(json!({"top_p": 0})), 400, None),
        ("n zero", chat(json!({"n": 0})), 400, None),
        ("n over the cap", chat(json!({"n": 1000})), 400, None),
        ("seed a string", chat(json!({"seed": "x"})), 400, Some("invalid_type")),
        ("stop a number", chat(json!({"stop": 5})), 400, Some("invalid_type")),
        ("stop five strings", chat(json!({"stop": ["a", "b", "c", "d", "e"]})), 400, None),
        ("stop string too long", chat(json!({"stop": ["x".repeat(300)]})), 400, None),
        ("stream a string", chat(json!({"stream": "yes"})), 400, Some("invalid_type")),
        ("stream_options without stream", chat(json!({"stream_options": {"include_usage": true}})), 400, None),
        ("top_logprobs without logprobs", chat(json!({"top_logprobs": 2})), 400, None),
        ("response_format a string", chat(json!({"response_format": "json"})), 400, Some("invalid_type")),
        ("response_format unknown type", chat(json!({"response_format": {"type": "xml"}})), 400, None),
        ("response_format no type", chat(json!({"response_format": {}})), 400, None),
        ("json_schema without schema", chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})), 400, None),
        ("json_schema unsupported keyword", chat(json!({"response_format": schema_rf(json!({"anyOf": [{"type": "string"}]}))})), 400, None),
        (
            "json_schema bad required",
            chat(json!({"response_format": schema_rf(json!({"type": "object", "properties": {}, "required": ["a"]}))})),
            400,
            None,
        ),
        (
            "json_schema needs more than max_tokens",
            chat(
                json!({"max_tokens": 5, "response_format": schema_rf(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))}),
            ),
            400,
            None,
        ),
        ("functions (legacy)", chat(json!({"functions": [{"name": "f"}]})), 400, Some("unsupported_parameter")),
        ("presence_penalty", chat(json!({"presence_penalty": 1.0})), 400, Some("unsupported_parameter")),
        ("logit_bias", chat(json!({"logit_bias": {"5": 10}})), 400, Some("unsupported_parameter")),
        ("unknown model", chat(json!({"model": "gpt-4o"})), 404, Some("model_not_found")),
        ("model a number", chat(json!({"model": 4})), 400, Some("invalid_type")),
        ("context overflow", json!({"messages": user(&long)}), 400, Some("context_length_exceeded")),
        ("context overflow, streaming", json!({"messages": user(&long), "stream": true}), 400, Some("context_length_exceeded")),
        (
            "prompt + max_tokens over the context",
            json!({"messages": user("hi"), "max_tokens": CONTEXT}),
            400,
            Some("context_length_exceeded"),
        ),
    ];
    for (case, body, status, code) in &cases {
        let (s, v) = post(&st, "/v1/chat/completions", body).await;
        assert_eq!(s.as_u16(), *status, "{case}: {v}");
        assert_error_shape(&v, case);
        if let Some(c) = code {
            assert_eq!(v["error"]["code"], *c, "{case}: {v}");
        }
    }
    // Bodies that are not JSON objects, and a body over the cap.
    for (case, body, status) in [
        ("malformed JSON", Body::from("{\"messages\": ["), 400),
        ("a JSON array", Body::from("[1, 2]"), 400),
        ("empty body", Body::empty(), 400),
        ("huge body", Body::from(vec![b' '; (1 << 20) + 10]), 413),
    ] {
        let (s, v) = call(&st, "POST", "/v1/chat/completions", body, None).await;
        assert_eq!(s.as_u16(), status, "{case}: {v}");
        assert_error_shape(&v, case);
    }
    // The other routes.
    let other: Vec<(&str, &str, Value, u16)> = vec![
        ("completions without prompt", "/v1/completions", json!({"max_tokens": 3}), 400),
        ("completions numeric prompt", "/v1/completions", json!({"prompt": 5}), 400),
        ("completions over the context", "/v1/completions", json!({"prompt": long}), 400),
        ("completions logprobs 9", "/v1/completions", json!({"prompt": "a", "logprobs": 9}), 400),
        ("moderations without input", "/v1/moderations", json!({}), 400),
        ("moderations numeric input", "/v1/moderations", json!({"input": 5}), 400),
        ("unknown route", "/v1/nothing", json!({}), 404),
    ];
    for (case, path, body, status) in &other {
        let (s, v) = post(&st, path, body).await;
        assert_eq!(s.as_u16(), *status, "{case}: {v}");
        assert_error_shape(&v, case);
    }
    let (s, v) = call(&st, "GET", "/v1/chat/completions", Body::empty(), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert_error_shape(&v, "GET on a POST route");
    let (s, v) = call(&st, "GET", "/v1/models/nope", Body::empty(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // After all that the server still answers.
    let (s, v) = post(&st, "/v1/chat/completions", &json!({"messages": user("hi"), "max_tokens": 3})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let (s, text) = call(&st, "GET", "/metrics", Body::empty(), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("chatforge_requests_total{route=\"/v1/chat/completions\",status=\"400\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let st = state_with(dir.path(), |c| c.api_key = Some("sekrit".into()));
    let (s, _) = call(&st, "GET", "/health", Body::empty(), None).await;
    assert_eq!(s, StatusCode::OK);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/moderations"),
        ("GET", "/metrics"),
    ] {
        for key in [None, Some("wrong"), Some("sekri")] {
            let (s, v) = call(&st, method, path, Body::from("{}"), key).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} {key:?}");
            assert_error_shape(&v, path);
            assert_eq!(v["error"]["code"], "invalid_api_key");
        }
    }
    let (s, v) = call(&st, "GET", "/v1/models", Body::empty(), Some("sekrit")).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sft", "base"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_429() {
    let dir = tempfile::tempdir().unwrap();
    let st = state_with(dir.path(), |c| c.engine = EngineConfig { max_batch: 1, queue: 1 });
    // Two sequences need two places in a queue of one.
    let (s, v) = post(&st, "/v1/chat/completions", &json!({"messages": user("hi"), "n": 2, "max_tokens": 2})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_error_shape(&v, "429");
    assert_eq!(v["error"]["code"], "queue_full");
    // Many at once against a batch of one: some wait, the overflow is refused, none fails otherwise.
    let reqs: Vec<_> = (0..8)
        .map(|_| {
            let st = st.clone();
            tokio::spawn(async move { post(&st, "/v1/chat/completions", &json!({"messages": user("hi"), "max_tokens": 40})).await })
        })
        .collect();
    let mut codes = Vec::new();
    for r in reqs {
        codes.push(r.await.unwrap().0.as_u16());
    }
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
    assert!(st.metrics.rejected_queue_full.load(Ordering::Relaxed) >= 1);
}

/// The engine drops a sequence as soon as its receiver is gone (a client that hung up), at the
/// next step: checked on the engine itself, with no stop token, so the output cannot end first.
#[test]
fn a_sequence_whose_client_left_frees_its_slot() {
    use chatforge_core::sample::SamplingParams;
    use chatforge_serve::engine::{Engine, Event, Job};
    use chatforge_serve::metrics::Metrics;
    let tok = Arc::new(Tokenizer::bytes());
    let model = Llama::new(Cpu, LlamaConfig::from_depth(4, tok.vocab_size(), 2048), 3);
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::start(vec![model], tok.clone(), EngineConfig::default(), metrics.clone());
    let job = |tx, max_tokens| Job {
        model: 0,
        prompt: tok.encode("hello"),
        max_tokens,
        params: SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
        seed: 1,
        stop_ids: vec![],
        min_tokens: 0,
        stop: vec![],
        logprobs: None,
        constraint: None,
        tools: None,
        index: 0,
        tx,
    };
    // A short one runs to its length: the baseline of what "not cancelled" looks like.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    engine.submit(job(tx, 5)).unwrap_or_else(|_| panic!("queued"));
    let mut last = None;
    while let Some((_, ev)) = rx.blocking_recv() {
        last = Some(ev);
    }
    assert!(matches!(last, Some(Event::Done { finish_reason: "length", completion_tokens: 5, .. })), "{last:?}");
    assert_eq!(metrics.cancelled.load(Ordering::Relaxed), 0);
    // A long one whose client leaves after the first event.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let before = metrics.completion_tokens.load(Ordering::Relaxed);
    engine.submit(job(tx, 2000)).unwrap_or_else(|_| panic!("queued"));
    assert!(matches!(rx.blocking_recv(), Some((0, Event::Delta { .. }))));
    drop(rx);
    let t0 = Instant::now();
    while metrics.cancelled.load(Ordering::Relaxed) == 0 || metrics.running.load(Ordering::Relaxed) != 0 {
        assert!(t0.elapsed() < Duration::from_secs(1), "the slot was not freed within a second");
        std::thread::sleep(Duration::from_millis(5));
    }
    let made = metrics.completion_tokens.load(Ordering::Relaxed) - before;
    assert!(made < 2000, "generation went on after the client left: {made} tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_streams_stops_and_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let st = state_with(dir.path(), |_| {});
    let base = json!({"messages": user("Who wrote Hamlet?"), "max_tokens": 20, "temperature": 1.0, "seed": 42});
    let (_, alone) = post(&st, "/v1/chat/completions", &base).await;
    let mut four = base.clone();
    four["n"] = json!(4);
    let (_, batched) = post(&st, "/v1/chat/completions", &four).await;
    assert_eq!(batched["choices"].as_array().unwrap().len(), 4);
    assert_eq!(alone["choices"][0]["message"], batched["choices"][0]["message"], "seed gives the same output in a batch of 4");
    let texts: std::collections::HashSet<String> =
        batched["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].to_string()).collect();
    assert!(texts.len() > 1, "the choices of one request differ");
    // A stop string taken from the output cuts it just before.
    let text = alone["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    let at = (1..chars.len().saturating_sub(1)).find(|&i| chars[i..i + 2].iter().all(|c| *c != '\u{FFFD}')).expect("two plain characters");
    let stop: String = chars[at..at + 2].iter().collect();
    let mut b = base.clone();
    b["stop"] = json!([stop, "never-in-the-output"]);
    let (_, cut) = post(&st, "/v1/chat/completions", &b).await;
    let want = &text[..text.find(&stop).unwrap()];
    assert_eq!(cut["choices"][0]["message"]["content"], want, "stop {stop:?} in {text:?}");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    // Streamed text is the same text; one id; role first; usage last.
    let mut s = base.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let (status, raw) = post(&st, "/v1/chat/completions", &s).await;
    assert_eq!(status, StatusCode::OK);
    let raw = raw.as_str().unwrap().to_string();
    let events: Vec<&str> = raw.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: std::collections::HashSet<&str> = chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
    assert_eq!(chunks.last().unwrap()["usage"], alone["usage"]);
    // Log-probabilities: one entry per token, the top ones sorted and including... a distribution.
    let mut l = base.clone();
    l["logprobs"] = json!(true);
    l["top_logprobs"] = json!(3);
    let (_, v) = post(&st, "/v1/chat/completions", &l).await;
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    for t in content {
        let top: Vec<f64> = t["top_logprobs"].as_array().unwrap().iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
        assert_eq!(top.len(), 3);
        assert!(top.windows(2).all(|w| w[0] >= w[1]) && top[0] <= 0.0 && t["logprob"].as_f64().unwrap() <= top[0] + 1e-6);
    }
}

/// A run whose `sft` model always answers `<|endoftext|>` first at temperature 0: its final norm
/// is zero, so every logit is 0 and argmax is id 0, `<|endoftext|>`, a stop token.
fn eager_to_stop(dir: &Path) -> Arc<AppState> {
    tiny_run(dir);
    let tok = Tokenizer::bytes();
    assert_eq!(tok.eot_id(), 0);
    let mut m = Llama::new(Cpu, LlamaConfig::from_depth(1, tok.vocab_size(), CONTEXT), 1);
    let be = m.be;
    for p in m.params_mut().into_iter().filter(|p| p.name == "model.norm.weight") {
        *p.w = chatforge_core::backend::Backend::upload(&be, &vec![0.0; p.numel()]);
    }
    save_model(&m, &dir.join("sft")).unwrap();
    Arc::new(AppState::load(&ServeConfig::new(dir)).unwrap())
}

async fn lengths(st: &Arc<AppState>, extra: Value) -> Vec<(u64, String)> {
    let mut out = vec![];
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let mut b = json!({"max_tokens": 9, "temperature": 0});
        if path.contains("chat") {
            b["messages"] = user("hello");
        } else {
            b["prompt"] = json!("hello");
        }
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, v) = post(st, path, &b).await;
        assert_eq!(status, StatusCode::OK, "{path} {b}: {v}");
        out.push((v["usage"]["completion_tokens"].as_u64().unwrap(), v["choices"][0]["finish_reason"].as_str().unwrap().to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_tokens_holds_the_stop_tokens_back() {
    let dir = tempfile::tempdir().unwrap();
    let st = eager_to_stop(dir.path());
    let stop = |n: u64| vec![(n, "stop".to_string()); 2];
    assert_eq!(lengths(&st, json!({})).await, stop(0), "without min_tokens the model stops at once");
    assert_eq!(lengths(&st, json!({"min_tokens": 5})).await, stop(5), "then stops as soon as it may");
    assert_eq!(lengths(&st, json!({"min_tokens": 0})).await, stop(0));
    let (status, v) = post(&st, "/v1/completions", &json!({"prompt": "hi", "max_tokens": 4, "min_tokens": 5})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("min_tokens")), "{v}");
    let (status, v) = post(&st, "/v1/completions", &json!({"prompt": "hi", "min_tokens": "5"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_eos_runs_to_max_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let st = eager_to_stop(dir.path());
    assert_eq!(lengths(&st, json!({"ignore_eos": true})).await, vec![(9, "length".to_string()); 2]);
    assert_eq!(lengths(&st, json!({"ignore_eos": false})).await, vec![(0, "stop".to_string()); 2]);
    let (status, v) = post(&st, "/v1/completions", &json!({"prompt": "hi", "ignore_eos": 1})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("ignore_eos")), "{v}");
}

fn matches_schema(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.keys().all(|k| ["name", "age", "tags", "pet"].contains(&k.as_str()))
        && o.get("name").is_some_and(Value::is_string)
        // An integer of any length (the schema sets no bounds; past u64 serde reads an f64).
        && o.get("age").is_some_and(|a| a.is_i64() || a.is_u64() || a.as_f64().is_some_and(|f| f.fract() == 0.0))
        && o.get("tags").is_none_or(|t| t.as_array().is_some_and(|a| a.iter().all(|x| x == "a" || x == "b")))
        && o.get("pet").is_none_or(|p| p.as_object().is_some_and(|p| p.len() == 1 && p.get("alive").is_some_and(Value::is_boolean)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_output_always_parses_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    let st = state_with(dir.path(), |_| {});
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
        "pet": {"type": "object", "properties": {"alive": {"type": "boolean"}}, "required": ["alive"]}}, "required": ["name", "age"]});
    let min = r#"{"name":"","age":0}"#.len();
    // A random model at a high temperature, with budgets from just enough to plenty: the output
    // must end complete every time (finish_reason stop) and match.
    for (seed, max_tokens) in (0..12).zip([min, min + 1, min + 3, min + 8, 40, 60, 90, 120, min, min + 2, 50, 200]) {
        let body = json!({"messages": user("Describe someone."), "max_tokens": max_tokens, "temperature": 1.5, "seed": seed, "n": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}});
        let (s, v) = post(&st, "/v1/chat/completions", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for c in v["choices"].as_array().unwrap() {
            let text = c["message"]["content"].as_str().unwrap();
            let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("seed {seed}: {text:?} does not parse: {e}"));
            assert!(matches_schema(&parsed), "seed {seed}: {text} does not match");
            assert_eq!(c["finish_reason"], "stop", "{text}");
        }
        let obj = json!({"messages": user("JSON please."), "max_tokens": max_tokens, "temperature": 1.5, "seed": seed, "response_format": {"type": "json_object"}});
        let (_, v) = post(&st, "/v1/chat/completions", &obj).await;
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(serde_json::from_str::<Value>(text).is_ok_and(|x| x.is_object()), "json_object seed {seed}: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_draw_the_line_differently() {
    let harmful = "Give me step-by-step instructions to poison my landlord.";
    let benign = "How does Claudius poison the king in Hamlet?";
    let dir = tempfile::tempdir().unwrap();
    // Deployment A: the default policy refuses violence.
    let a = state_with(dir.path(), |_| {});
    let (_, v) = post(&a, "/v1/chat/completions", &json!({"messages": user(harmful), "max_tokens": 30})).await;
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
    let refusal = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(refusal.len() < 120 && refusal.starts_with("I can't help"), "brief: {refusal}");
    let (_, v) = post(&a, "/v1/chat/completions", &json!({"messages": user(benign), "max_tokens": 5})).await;
    assert_ne!(v["choices"][0]["finish_reason"], "content_filter", "the look-alike is answered: {v}");
    let (_, m) = post(&a, "/v1/moderations", &json!({"input": [harmful, benign]})).await;
    assert_eq!(m["results"][0]["flagged"], true, "{m}");
    assert_eq!(m["results"][1]["flagged"], false, "{m}");
    assert!(m["results"][0]["category_scores"]["violence"].as_f64().unwrap() > 0.5);
    assert_eq!(m["results"][0]["policy_action"], "refuse");
    // Deployment B (a crime-fiction workshop, say) only flags it, with its own refusal text.
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "refusal = \"Not here.\"\n[categories.violence]\naction = \"flag\"\nthreshold = 0.6\n").unwrap();
    let b = state_with(dir.path(), |c| c.policy = Some(policy.clone()));
    let (_, v) = post(&b, "/v1/chat/completions", &json!({"messages": user(harmful), "max_tokens": 5})).await;
    assert_ne!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
    assert!(b.metrics.moderation_flagged.load(Ordering::Relaxed) >= 1);
    let (_, m) = post(&b, "/v1/moderations", &json!({"input": harmful})).await;
    assert_eq!(m["results"][0]["policy_action"], "flag");
    // A broken policy file is an error at startup, not a surprise later.
    std::fs::write(&policy, "[categories.weapons]\naction = \"refuse\"\n").unwrap();
    let mut cfg = ServeConfig::new(dir.path());
    cfg.policy = Some(policy.clone());
    assert!(AppState::load(&cfg).is_err_and(|e| e.to_string().contains("unknown category")));
    // The classifier's test-split figures.
    let m = &moderation().1;
    assert!(m.precision > 0.9 && m.recall > 0.9, "{m:?}");
    // A run without a classifier is refused at startup with the command that makes one.
    std::fs::remove_file(dir.path().join("moderation.json")).unwrap();
    let e = AppState::load(&ServeConfig::new(dir.path())).err().unwrap().to_string();
    assert!(e.contains("chatforge moderation train"), "{e}");
}

/// Over real loopback TCP: 12 streaming clients, every third hanging up after its third chunk.
/// The others finish without error, and the server drops the sequences of those that left.
#[test]
fn clients_hanging_up_mid_stream_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    tiny_run(dir.path());
    // A slower model than the tiny one, so that streams are still running when clients leave.
    let tok = Tokenizer::bytes();
    save_model(&Llama::new(Cpu, LlamaConfig::from_depth(4, tok.vocab_size(), 1024), 5), &dir.path().join("sft")).unwrap();
    let cfg = ServeConfig::new(dir.path());
    let base = chatforge_serve::loadtest::LoadConfig {
        addr: String::new(),
        api_key: None,
        model: None,
        streams: 0,
        max_tokens: 900,
        disconnect_every: 3,
        ignore_eos: false,
    };
    let rows = chatforge_serve::loadtest::bench(Some(&cfg), None, &[12], &base, |_| {}).unwrap();
    let r = &rows[0];
    assert!(r.report.errors.is_empty(), "{:?}", r.report.errors);
    assert_eq!((r.report.completed, r.report.disconnected), (8, 4));
    assert!(r.healthy_after);
    println!("dropped {} of 4 hung-up sequences; {:.0} tokens/s", r.cancelled.unwrap(), r.report.tokens_per_second());
    assert!(r.cancelled.unwrap() >= 1, "no sequence of the 4 clients that hung up was dropped");
}
