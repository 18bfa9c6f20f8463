//! Tools in a chat request: reading `tools`, `tool_choice`, `parallel_tool_calls` and the
//! `builtin_tools` extension into the prompt's declared functions and the engine's [`ToolUse`];
//! and the JSON of what came back (`message.tool_calls`, the `tool_trace` extension).
//!
//! In order: each declared function is checked (type, name, description, parameters, which must
//! be a JSON schema of an object that constrained decoding supports, so that its arguments always
//! parse and match); then `tool_choice` picks what the model may or must call; then the
//! grammars the engine decodes calls under are built (declared functions, then the built-ins
//! the declarations do not shadow). Every error is a 400 that names the field.

use std::sync::{Arc, OnceLock};

use chatforge_data::chat::ToolCall;
use chatforge_data::tools::{Builtin, CallRecord, Function, Toolbox};
use serde_json::{json, Map, Value};

use super::request::{field, type_err};
use crate::constrained::{CallGrammar, Grammar};
use crate::engine::ToolUse;
use crate::ApiError;

/// Most functions a request may declare.
pub const MAX_TOOLS: usize = 32;
/// Longest function name (OpenAI's limit).
pub const MAX_NAME: usize = 64;
/// Longest function description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;

/// What a request's tool fields come to.
pub(super) struct ToolRequest {
    /// Functions written into the system message (none with `tool_choice: "none"`).
    pub declared: Vec<Function>,
    pub tools: ToolUse,
}

impl ToolRequest {
    /// The fewest tokens an answer needs: a forced call and the stop token after it.
    pub fn min_tokens(&self) -> usize {
        self.tools.force.as_ref().map_or(0, |g| g.min_len() + 1)
    }
}

/// Whether `name` is a function name the API accepts: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn invalid(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(param, msg).code("invalid_value")
}

/// The argument grammar of the built-in tools, compiled once.
fn builtin_grammars() -> &'static [(String, Arc<Grammar>)] {
    static G: OnceLock<Vec<(String, Arc<Grammar>)>> = OnceLock::new();
    G.get_or_init(|| {
        Builtin::ALL
            .iter()
            .map(|b| {
                let g = Grammar::from_schema(&b.function().parameters).expect("the built-in schemas compile");
                (b.name().to_string(), Arc::new(g))
            })
            .collect()
    })
}

/// One `tools[i]`: the function and the grammar of its arguments.
fn parse_tool(i: usize, t: &Value) -> Result<(Function, Arc<Grammar>), ApiError> {
    let p = format!("tools[{i}]");
    let t = t.as_object().ok_or_else(|| type_err(&p, "an object {\"type\": \"function\", \"function\": {...}}"))?;
    match t.get("type") {
        Some(Value::String(s)) if s == "function" => {}
        None => return Err(ApiError::invalid(&format!("{p}.type"), format!("`{p}.type` is required.")).code("missing_required_parameter")),
        Some(_) => return Err(invalid(&format!("{p}.type"), format!("`{p}.type` must be \"function\" (the only tool type supported)."))),
    }
    let f = match t.get("function") {
        Some(Value::Object(f)) => f,
        None => {
            return Err(
                ApiError::invalid(&format!("{p}.function"), format!("`{p}.function` is required.")).code("missing_required_parameter")
            )
        }
        Some(_) => return Err(type_err(&format!("{p}.function"), "an object")),
    };
    let np = format!("{p}.function.name");
    let name = match f.get("name") {
        Some(Value::String(n)) => n.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid(&np, format!("`{np}` is required.")).code("missing_required_parameter")),
        Some(_) => return Err(type_err(&np, "a string")),
    };
    if !valid_name(&name) {
        return Err(invalid(&np, format!("`{np}` must be 1 to {MAX_NAME} letters, digits, underscores or dashes; got {name:?}.")));
    }
    let dp = format!("{p}.function.description");
    let description = match field(f, "description") {
        None => None,
        Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION => Some(d.clone()),
        Some(Value::String(_)) => return Err(invalid(&dp, format!("`{dp}` is longer than {MAX_DESCRIPTION} characters."))),
        Some(_) => return Err(type_err(&dp, "a string")),
    };
    let pp = format!("{p}.function.parameters");
    let (parameters, grammar) = match field(f, "parameters") {
        None => (json!({"type": "object", "properties": {}}), Grammar::json_object()),
        Some(s @ Value::Object(_)) => {
            let g = Grammar::from_schema(s).map_err(|e| invalid(&pp, format!("`{pp}`: {e}.")))?;
            if !g.is_object() {
                return Err(invalid(&pp, format!("`{pp}` must describe an object (\"type\": \"object\"): arguments are a JSON object.")));
            }
            (s.clone(), g)
        }
        Some(_) => return Err(type_err(&pp, "a JSON schema object")),
    };
    if let Some(s) = field(f, "strict") {
        if !s.is_boolean() {
            return Err(type_err(&format!("{p}.function.strict"), "a boolean"));
        }
    }
    Ok((Function { name, description, parameters }, Arc::new(grammar)))
}

enum Choice {
    Auto,
    None,
    Required,
    Named(String),
}

fn parse_choice(o: &Map<String, Value>) -> Result<Choice, ApiError> {
    Ok(match field(o, "tool_choice") {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("Unknown tool_choice {other:?} (\"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}})."),
                ))
            }
        },
        Some(Value::Object(c)) => {
            if c.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid("tool_choice.type", "`tool_choice.type` must be \"function\"."));
            }
            match c.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(n)) => Choice::Named(n.clone()),
                None => {
                    return Err(ApiError::invalid("tool_choice.function.name", "`tool_choice.function.name` is required.")
                        .code("missing_required_parameter"))
                }
                Some(_) => return Err(type_err("tool_choice.function.name", "a string")),
            }
        }
        Some(_) => return Err(type_err("tool_choice", "a string or an object")),
    })
}

/// Reads `tools`, `tool_choice`, `parallel_tool_calls`, `builtin_tools` and `grounded_tools` (see the README's
/// server section for what each choice means).
pub(super) fn parse_tools(o: &Map<String, Value>) -> Result<ToolRequest, ApiError> {
    let builtins = match field(o, "builtin_tools") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(type_err("builtin_tools", "a boolean")),
    };
    let grounded = match field(o, "grounded_tools") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(type_err("grounded_tools", "a boolean")),
    };
    if field(o, "parallel_tool_calls").is_some_and(|v| !v.is_boolean()) {
        return Err(type_err("parallel_tool_calls", "a boolean"));
    }
    let list = match field(o, "tools") {
        None => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(type_err("tools", "an array of tools")),
    };
    if list.len() > MAX_TOOLS {
        return Err(invalid("tools", format!("At most {MAX_TOOLS} tools may be declared; got {}.", list.len())));
    }
    let mut functions: Vec<(Function, Arc<Grammar>)> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let (f, g) = parse_tool(i, t)?;
        if functions.iter().any(|(x, _)| x.name == f.name) {
            return Err(invalid(&format!("tools[{i}].function.name"), format!("The function name {:?} is declared twice.", f.name)));
        }
        functions.push((f, g));
    }
    let choice = parse_choice(o)?;
    // Built-ins a declared function of the same name does not shadow.
    let builtin: Vec<(String, Arc<Grammar>)> = if builtins {
        builtin_grammars().iter().filter(|(n, _)| !functions.iter().any(|(f, _)| &f.name == n)).cloned().collect()
    } else {
        vec![]
    };
    let declared_grammars = || functions.iter().map(|(f, g)| (f.name.clone(), g.clone())).collect::<Vec<_>>();
    let grammar = |fs: Vec<(String, Arc<Grammar>)>| (!fs.is_empty()).then(|| Arc::new(CallGrammar::new(fs)));
    let all = grammar(declared_grammars().into_iter().chain(builtin.iter().cloned()).collect());
    let (force, client) = match &choice {
        Choice::Auto => (None, true),
        Choice::None => (None, false),
        Choice::Required => {
            if functions.is_empty() {
                return Err(invalid("tool_choice", "`tool_choice: \"required\"` needs at least one function in `tools`."));
            }
            (grammar(declared_grammars()), true)
        }
        Choice::Named(name) => {
            let g = declared_grammars().into_iter().chain(builtin.iter().cloned()).find(|(n, _)| n == name);
            let Some(g) = g else {
                let mut known: Vec<String> = functions.iter().map(|(f, _)| f.name.clone()).collect();
                known.extend(builtin.iter().map(|(n, _)| n.clone()));
                return Err(invalid(
                    "tool_choice.function.name",
                    format!(
                        "tool_choice names {name:?}, which is neither declared in `tools` nor a built-in tool that is on (known: {}).",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                ));
            };
            (grammar(vec![g]), true)
        }
    };
    let calls = if client { all } else { grammar(builtin.clone()) };
    let declared: Vec<Function> = if client { functions.iter().map(|(f, _)| f.clone()).collect() } else { vec![] };
    let client_names = declared.iter().map(|f| f.name.clone()).collect();
    let toolbox = Toolbox { builtins, client: client_names, max_calls: Toolbox::builtins().max_calls, grounded };
    Ok(ToolRequest { declared, tools: ToolUse { toolbox, calls, force } })
}

/// Reads `messages[i].tool_calls` (`p` is that field's name).
pub(super) fn parse_calls(p: &str, v: &Value) -> Result<Vec<ToolCall>, ApiError> {
    let a = v.as_array().ok_or_else(|| type_err(p, "an array of tool calls"))?;
    let mut calls: Vec<ToolCall> = Vec::new();
    for (j, c) in a.iter().enumerate() {
        let cp = format!("{p}[{j}]");
        let c = c.as_object().ok_or_else(|| type_err(&cp, "an object {\"id\", \"type\": \"function\", \"function\": {...}}"))?;
        let id = match c.get("id") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
            None => {
                return Err(ApiError::invalid(&format!("{cp}.id"), format!("`{cp}.id` is required.")).code("missing_required_parameter"))
            }
            Some(_) => return Err(type_err(&format!("{cp}.id"), "a non-empty string of at most 256 bytes")),
        };
        if calls.iter().any(|x| x.id == id) {
            return Err(invalid(&format!("{cp}.id"), format!("The tool call id {id:?} appears twice in one message.")));
        }
        match c.get("type") {
            None => {}
            Some(Value::String(t)) if t == "function" => {}
            Some(_) => return Err(invalid(&format!("{cp}.type"), format!("`{cp}.type` must be \"function\"."))),
        }
        let f = c.get("function").and_then(Value::as_object).ok_or_else(|| type_err(&format!("{cp}.function"), "an object"))?;
        let name = f.get("name").and_then(Value::as_str).filter(|n| valid_name(n)).ok_or_else(|| {
            invalid(&format!("{cp}.function.name"), format!("`{cp}.function.name` must be a function name (letters, digits, _ or -)."))
        })?;
        let ap = format!("{cp}.function.arguments");
        let args = match f.get("arguments") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(ApiError::invalid(&ap, format!("`{ap}` is required.")).code("missing_required_parameter")),
            Some(_) => return Err(type_err(&ap, "a string holding a JSON object")),
        };
        if !serde_json::from_str::<Value>(&args).is_ok_and(|v| v.is_object()) {
            return Err(invalid(&ap, format!("`{ap}` must be a string holding a JSON object; got {args:?}.")));
        }
        calls.push(ToolCall::new(id, name, args));
    }
    if calls.is_empty() {
        return Err(invalid(p, format!("`{p}` must not be empty (leave it out instead).")));
    }
    Ok(calls)
}

/// The `tool_trace` extension: the built-in calls an answer made, in order.
pub(super) fn trace_json(calls: &[CallRecord]) -> Value {
    Value::Array(calls.iter().map(|c| json!({"name": c.name, "arguments": c.arguments, "result": c.result, "ok": c.ok})).collect())
}

/// The calls of client functions, as `message.tool_calls`, with fresh ids.
pub(super) fn with_ids(calls: &[ToolCall]) -> Vec<ToolCall> {
    calls
        .iter()
        .map(|c| ToolCall { id: format!("call_{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>()), ..c.clone() })
        .collect()
}

pub(super) fn calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}))
            .collect(),
    )
}
