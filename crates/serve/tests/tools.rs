//! Tool calling through the API in-process (tower `oneshot` on `app()`), on a tiny random model
//! with the byte tokenizer: the matrix of bad tool inputs (each a 4xx in OpenAI's shape naming the
//! field, never a 5xx), forced calls of declared functions (their arguments always parse and match
//! the schema, streamed or not), a follow-up with the tool's result, built-in calls run by the
//! server (the trace holds the real result), and the session's error texts for bad calls.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chatforge_core::checkpoint::save_model;
use chatforge_core::cpu::Cpu;
use chatforge_core::model::Llama;
use chatforge_core::LlamaConfig;
use chatforge_data::tokenizer::Tokenizer;
use chatforge_data::tools::{run_builtin, Session, Toolbox};
use chatforge_serve::{app, AppState, ServeConfig};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const CONTEXT: usize = 512;

/// A run with the byte tokenizer, a random `sft` model and the moderation classifier.
fn state(dir: &Path) -> Arc<AppState> {
    let tok = Tokenizer::bytes();
    tok.save(&dir.join("tokenizer.json")).unwrap();
    chatforge_serve::moderation::train(1).unwrap().0.save(&dir.join("moderation.json")).unwrap();
    std::fs::create_dir_all(dir.join("sft")).unwrap();
    save_model(&Llama::new(Cpu, LlamaConfig::from_depth(1, tok.vocab_size(), CONTEXT), 5), &dir.join("sft")).unwrap();
    Arc::new(AppState::load(&ServeConfig::new(dir)).unwrap())
}

async fn post(st: &Arc<AppState>, path: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::builder().method("POST").uri(path).header("content-type", "application/json");
    let resp = app(st.clone()).oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

/// The chunks of an SSE body (without `[DONE]`, which must end it).
fn chunks(raw: &Value) -> Vec<Value> {
    let raw = raw.as_str().expect("an SSE body");
    let events: Vec<&str> = raw.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{raw}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

fn weather() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
            "unit": {"enum": ["c", "f"]}}, "required": ["city", "days"]}}})
}

fn time_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}})
}

/// Whether `args` (a JSON string) holds arguments `get_weather` or `get_time` accepts.
fn matches(name: &str, args: &str) -> bool {
    let Ok(Value::Object(a)) = serde_json::from_str::<Value>(args) else { return false };
    match name {
        "get_weather" => {
            a.keys().all(|k| ["city", "days", "unit"].contains(&k.as_str()))
                && a.get("city").is_some_and(Value::is_string)
                && a.get("days").is_some_and(|d| d.is_i64() || d.is_u64())
                && a.get("unit").is_none_or(|u| u == "c" || u == "f")
        }
        "get_time" => a.len() == 1 && a.get("zone").is_some_and(Value::is_string),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_inputs_are_4xx_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let ask = json!([{"role": "user", "content": "Weather in Verona?"}]);
    let with = |extra: Value| {
        let mut b = json!({"messages": ask, "max_tokens": 8});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let fun = |f: Value| json!({"tools": [{"type": "function", "function": f}]});
    let call = |args: Value| json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}});
    let convo = |calls: Value, then: Value| {
        let mut m =
            vec![json!({"role": "user", "content": "Weather?"}), json!({"role": "assistant", "content": null, "tool_calls": calls})];
        m.extend(then.as_array().unwrap().iter().cloned());
        json!({"messages": m, "tools": [weather()], "max_tokens": 8})
    };
    let result = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "sunny"});
    let many: Vec<Value> = (0..33).map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}})).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("tools not an array", with(json!({"tools": {"type": "function"}})), "tools"),
        ("a tool not an object", with(json!({"tools": [5]})), "tools[0]"),
        ("a tool without type", with(json!({"tools": [{"function": {"name": "f"}}]})), "tools[0].type"),
        ("a tool of another type", with(json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]})), "tools[0].type"),
        ("a tool without function", with(json!({"tools": [{"type": "function"}]})), "tools[0].function"),
        ("a function without name", with(fun(json!({"description": "x"}))), "tools[0].function.name"),
        ("a numeric name", with(fun(json!({"name": 7}))), "tools[0].function.name"),
        ("bad name characters", with(fun(json!({"name": "get weather!"}))), "tools[0].function.name"),
        ("a name too long", with(fun(json!({"name": "f".repeat(65)}))), "tools[0].function.name"),
        ("a numeric description", with(fun(json!({"name": "f", "description": 3}))), "tools[0].function.description"),
        ("parameters not an object", with(fun(json!({"name": "f", "parameters": "city"}))), "tools[0].function.parameters"),
        ("parameters of a string", with(fun(json!({"name": "f", "parameters": {"type": "string"}}))), "tools[0].function.parameters"),
        ("an unsupported schema", with(fun(json!({"name": "f", "parameters": {"anyOf": []}}))), "tools[0].function.parameters"),
        (
            "a required key not among the properties",
            with(fun(json!({"name": "f", "parameters": {"type": "object", "properties": {}, "required": ["x"]}}))),
            "tools[0].function.parameters",
        ),
        ("a duplicate name", with(json!({"tools": [weather(), weather()]})), "tools[1].function.name"),
        ("too many tools", with(json!({"tools": many})), "tools"),
        ("tool_choice unknown", with(json!({"tools": [weather()], "tool_choice": "always"})), "tool_choice"),
        ("tool_choice a number", with(json!({"tools": [weather()], "tool_choice": 1})), "tool_choice"),
        ("tool_choice of another type", with(json!({"tool_choice": {"type": "x", "function": {"name": "f"}}})), "tool_choice.type"),
        (
            "tool_choice without a name",
            with(json!({"tools": [weather()], "tool_choice": {"type": "function"}})),
            "tool_choice.function.name",
        ),
        (
            "tool_choice naming an undeclared function",
            with(json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "get_time"}}})),
            "tool_choice.function.name",
        ),
        ("tool_choice required without tools", with(json!({"tool_choice": "required"})), "tool_choice"),
        (
            "tool_choice naming a built-in that is off",
            with(json!({"builtin_tools": false, "tool_choice": {"type": "function", "function": {"name": "calculator"}}})),
            "tool_choice.function.name",
        ),
        ("builtin_tools a string", with(json!({"builtin_tools": "yes"})), "builtin_tools"),
        ("parallel_tool_calls a string", with(json!({"parallel_tool_calls": "x"})), "parallel_tool_calls"),
        (
            "a forced call longer than max_tokens",
            with(json!({"tools": [weather()], "tool_choice": "required", "max_tokens": 20})),
            "max_tokens",
        ),
        (
            "a tool message without tool_call_id",
            convo(json!([call(json!("{}"))]), json!([{"role": "tool", "content": "sunny"}])),
            "messages[2].tool_call_id",
        ),
        ("a tool message answering no call", convo(json!([call(json!("{}"))]), json!([result("call_9")])), "messages[2].tool_call_id"),
        (
            "a call answered twice",
            convo(json!([call(json!("{}"))]), json!([result("call_1"), result("call_1")])),
            "messages[3].tool_call_id",
        ),
        (
            "a tool message after a user message",
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]}),
            "messages[1]",
        ),
        (
            "tool_calls on a user message",
            json!({"messages": [{"role": "user", "content": "hi", "tool_calls": [call(json!("{}"))]}]}),
            "messages[0].tool_calls",
        ),
        (
            "tool_call_id on a user message",
            json!({"messages": [{"role": "user", "content": "hi", "tool_call_id": "call_1"}]}),
            "messages[0].tool_call_id",
        ),
        ("tool_calls not an array", convo(json!({"id": "x"}), json!([result("x")])), "messages[1].tool_calls"),
        (
            "a call without id",
            convo(json!([{"type": "function", "function": {"name": "f", "arguments": "{}"}}]), json!([])),
            "messages[1].tool_calls[0].id",
        ),
        (
            "arguments an object, not a string",
            convo(json!([call(json!({"city": "Verona"}))]), json!([result("call_1")])),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            "arguments not JSON",
            convo(json!([call(json!("{\"city\": "))]), json!([result("call_1")])),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            "arguments a JSON array",
            convo(json!([call(json!("[1, 2]"))]), json!([result("call_1")])),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            "a call with a bad name",
            convo(json!([{"id": "c", "function": {"name": "a b", "arguments": "{}"}}]), json!([result("c")])),
            "messages[1].tool_calls[0].function.name",
        ),
        (
            "two calls with one id",
            convo(json!([call(json!("{}")), call(json!("{}"))]), json!([result("call_1")])),
            "messages[1].tool_calls[1].id",
        ),
        ("an unanswered call", convo(json!([call(json!("{}"))]), json!([{"role": "user", "content": "and?"}])), "messages[2]"),
        ("tools on a text completion", json!({"prompt": "hi", "tools": [weather()]}), "tools"),
    ];
    assert!(cases.len() >= 15);
    for (case, body, param) in &cases {
        let path = if body.get("prompt").is_some() { "/v1/completions" } else { "/v1/chat/completions" };
        for stream in [false, true] {
            let mut body = body.clone();
            body["stream"] = json!(stream);
            let (s, v) = post(&st, path, &body).await;
            assert!(s.is_client_error(), "{case}: {s} {v}");
            let e = &v["error"];
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"] == "invalid_request_error", "{case}: {v}");
            assert!(e.get("code").is_some(), "{case}: {v}");
            assert_eq!(e["param"], *param, "{case}: {v}");
        }
    }
    // Odd but valid inputs complete.
    let fine: Vec<(&str, Value)> = vec![
        ("an empty tools array", with(json!({"tools": []}))),
        ("tool_choice none with tools", with(json!({"tools": [weather()], "tool_choice": "none"}))),
        (
            "tool_choice auto, parallel calls off",
            with(json!({"tools": [weather(), time_tool()], "tool_choice": "auto", "parallel_tool_calls": false})),
        ),
        ("built-ins off", with(json!({"builtin_tools": false}))),
        ("a function without parameters", with(fun(json!({"name": "ping"})))),
        ("a declared function shadowing a built-in", with(json!({"tools": [{"type": "function", "function": {"name": "calculator"}}]}))),
        (
            "a conversation that ends with a result",
            convo(json!([call(json!("{\"city\": \"Verona\", \"days\": 1}"))]), json!([result("call_1")])),
        ),
        (
            "a result, then the user again",
            convo(
                json!([call(json!("{}"))]),
                json!([result("call_1"), {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Thanks"}]),
            ),
        ),
    ];
    for (case, body) in &fine {
        let (s, v) = post(&st, "/v1/chat/completions", body).await;
        assert_eq!(s, StatusCode::OK, "{case}: {v}");
        assert!(["stop", "length", "tool_calls"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap()), "{case}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_calls_match_the_schema_streamed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let ask = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Verona for 3 days?"}]);
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let mut ids = HashSet::new();
    for (seed, choice) in (0..6).zip([named.clone(), json!("required")].into_iter().cycle()) {
        for max_tokens in [86, 91] {
            let body = json!({"messages": ask, "tools": [weather(), time_tool()], "tool_choice": choice, "max_tokens": max_tokens,
                "temperature": 1.5, "seed": seed, "n": 2});
            let (s, v) = post(&st, "/v1/chat/completions", &body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            for c in v["choices"].as_array().unwrap() {
                assert_eq!(c["finish_reason"], "tool_calls", "{c}");
                let calls = c["message"]["tool_calls"].as_array().unwrap();
                assert_eq!(calls.len(), 1, "{c}");
                let f = &calls[0]["function"];
                let (name, args) = (f["name"].as_str().unwrap(), f["arguments"].as_str().unwrap());
                assert!(matches(name, args), "seed {seed}: {name} {args}");
                if choice == named {
                    assert_eq!(name, "get_weather");
                }
                assert_eq!(calls[0]["type"], "function");
                let id = calls[0]["id"].as_str().unwrap();
                assert!(id.starts_with("call_") && ids.insert(id.to_string()), "ids are fresh: {id}");
                assert!(c["message"]["content"].is_null() || c["message"]["content"].is_string());
            }
            assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 2 * max_tokens);
        }
    }
    // Streamed: the first delta of a call has its id, type and name; then the arguments come in
    // pieces; the finish reason is tool_calls.
    let body = json!({"messages": ask, "tools": [weather()], "tool_choice": named, "max_tokens": 120, "temperature": 1.2, "seed": 9,
        "stream": true});
    let (s, raw) = post(&st, "/v1/chat/completions", &body).await;
    assert_eq!(s, StatusCode::OK);
    let cs = chunks(&raw);
    let deltas: Vec<&Value> =
        cs.iter().flat_map(|c| c["choices"].as_array().unwrap()).flat_map(|c| c["delta"]["tool_calls"].as_array()).flatten().collect();
    assert!(deltas.len() >= 2, "{raw}");
    assert_eq!((deltas[0]["index"].as_u64(), deltas[0]["type"].as_str()), (Some(0), Some("function")));
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let args: String = deltas.iter().filter_map(|d| d["function"]["arguments"].as_str()).collect();
    assert!(matches("get_weather", &args), "{args}");
    let finish: Vec<&str> = cs.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    // The same request unstreamed gives the same call (the same seed).
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let (_, v) = post(&st, "/v1/chat/completions", &whole).await;
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], args.as_str());
    // The follow-up with the result gets an answer.
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    let mut messages = ask.as_array().unwrap().clone();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"forecast\": \"sunny\", \"high\": 24}"}));
    for stream in [false, true] {
        let body = json!({"messages": messages, "tools": [weather()], "max_tokens": 30, "seed": 1, "stream": stream});
        let (s, v) = post(&st, "/v1/chat/completions", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let reason = if stream {
            chunks(&v).iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(String::from)).next().unwrap()
        } else {
            assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
            v["choices"][0]["finish_reason"].as_str().unwrap().to_string()
        };
        assert!(["stop", "length", "tool_calls"].contains(&reason.as_str()), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_built_in_calls_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let calc = json!({"type": "function", "function": {"name": "calculator"}});
    let mut seen_ok = HashSet::new();
    for seed in 0..6 {
        let body = json!({"messages": [{"role": "user", "content": "What is 12 + 7?"}], "tool_choice": calc, "max_tokens": 120,
            "temperature": 1.0, "seed": seed});
        let (s, v) = post(&st, "/v1/chat/completions", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let c = &v["choices"][0];
        assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()), "{c}");
        assert!(c["message"]["content"].is_string() && c["message"].get("tool_calls").is_none(), "{c}");
        let trace = c["message"]["tool_trace"].as_array().unwrap_or_else(|| panic!("no trace: {c}"));
        assert_eq!(trace[0]["name"], "calculator");
        // The result shown is what running the tool on those arguments gives.
        let args = trace[0]["arguments"].as_str().unwrap();
        let want = run_builtin("calculator", args);
        assert_eq!(trace[0]["ok"], want.is_ok(), "{args}");
        assert_eq!(trace[0]["result"].as_str().unwrap(), want.unwrap_or_else(|e| e), "{args}");
        seen_ok.insert(trace[0]["ok"].as_bool().unwrap());
        // Grounded: every number a random model writes into the expression is one of the user's.
        let expr = serde_json::from_str::<Value>(args).ok().and_then(|a| a["expression"].as_str().map(str::to_string));
        if let Some(expr) = expr {
            assert!(numbers(&expr).iter().all(|n| n == "12" || n == "7"), "{expr:?} is not grounded in \"What is 12 + 7?\"");
        }
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 120);
        // Streamed: the trace comes in a chunk of its own, and the text is the same.
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        let (_, raw) = post(&st, "/v1/chat/completions", &sb).await;
        let cs = chunks(&raw);
        let traced: Vec<&Value> = cs.iter().filter_map(|x| x["choices"][0]["delta"]["tool_trace"].as_array()).flatten().collect();
        assert_eq!(traced, trace.iter().collect::<Vec<_>>());
        let text: String = cs.iter().filter_map(|x| x["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, c["message"]["content"].as_str().unwrap());
    }
    assert!(seen_ok.contains(&false), "a random model's expressions get the calculator's error text");
    // With "grounded_tools": false the same random model writes numbers of its own.
    let mut free = vec![];
    for seed in 0..6 {
        let body = json!({"messages": [{"role": "user", "content": "What is 12 + 7?"}], "tool_choice": calc, "max_tokens": 120,
            "temperature": 1.0, "seed": seed, "grounded_tools": false});
        let (s, v) = post(&st, "/v1/chat/completions", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let args = v["choices"][0]["message"]["tool_trace"][0]["arguments"].as_str().unwrap_or("{}").to_string();
        let expr = serde_json::from_str::<Value>(&args).ok().and_then(|a| a["expression"].as_str().map(str::to_string));
        free.extend(numbers(&expr.unwrap_or_default()));
    }
    assert!(free.iter().any(|n| n != "12" && n != "7"), "ungrounded, a random model invents numbers: {free:?}");
    let (s, v) = post(&st, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "grounded_tools": 1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "grounded_tools");
    let (_, m) = post(&st, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})).await;
    assert!(m["choices"][0]["message"].get("tool_trace").is_none(), "no calls, no trace");
}

/// The maximal digit runs of `text`.
fn numbers(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit()).filter(|r| !r.is_empty()).map(str::to_string).collect()
}

/// What the engine's sessions answer to bad calls: the error text as the tool's result, and the
/// answer goes on.
#[test]
fn bad_calls_get_error_results_and_the_answer_goes_on() {
    let tok = Tokenizer::bytes();
    let cases = [
        ("{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1 / 0\"}}", "error: division by zero"),
        ("{\"name\": \"calculator\", \"arguments\": {\"expression\": \"10^20\"}}", "too large"),
        ("{\"name\": \"python\", \"arguments\": {}}", "unknown tool"),
        ("{\"name\": \"calculator\", \"arguments\": [1]}", "not a JSON object"),
        ("not json at all", "not valid JSON"),
    ];
    for (body, want) in cases {
        let mut s = Session::new(&tok, Toolbox::builtins(), 1);
        let out = tok.encode(&format!("<tool_call>\n{body}\n</tool_call>"));
        let put = s.on_stop(0, &out).unwrap_or_else(|| panic!("{body}: the answer ended"));
        let text = tok.decode(&put, false);
        assert!(text.contains(want) && text.ends_with("<|im_start|>assistant\n"), "{body}: {text}");
    }
}
