//! Tools the model calls while it answers: what they are, how a call is read from the model's
//! text, and the session that runs calls between decoding steps.
//!
//! In order:
//! 1. The built-in tools ([`Builtin`]): a calculator (`calc.rs`) and three string tools
//!    (count a letter, spell a word, a length in letters, characters or words). Each takes a
//!    JSON object of arguments and returns a short text, or an error text that starts with
//!    `error:`; the model reads either and goes on. They touch no files and no network, and
//!    their inputs and outputs are capped ([`MAX_TEXT`], the calculator's own caps).
//! 2. Reading calls: a turn of the model's is `content`, then one `<tool_call>...</tool_call>`
//!    block per call (the format in `chat.rs`). [`parse_turn`] splits it; a block that is not
//!    `{"name": ..., "arguments": {...}}` is a malformed call, answered with an error.
//! 3. Client-declared functions ([`Function`]): the tools an API caller lists are written into
//!    the system message ([`declare`]) for the model to read, and calls to them end the answer
//!    with `finish_reason: "tool_calls"`; the caller runs them.
//! 4. [`Session`]: the hook `chatforge_core::sample::generate_batch_with` calls when a sequence
//!    ends its turn. If the turn ends with calls, it runs them (built-ins only when they are on;
//!    otherwise the result is the error "tools are turned off") and returns the tokens of the
//!    `tool` turns and the next assistant header, so decoding continues in the same KV cache. At
//!    most [`Toolbox::max_calls`] calls are run per answer.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::{Conversation, Message, Role, ToolCall};
use crate::tokenizer::Tokenizer;

mod calc;
mod ground;

pub use calc::{eval as calculate, format as format_number};
pub use ground::{slot, Ground, Slot};

/// The longest text a string tool takes or a result holds, in characters.
pub const MAX_TEXT: usize = 200;
/// Opens a call in the model's text.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closes a call.
pub const CALL_CLOSE: &str = "</tool_call>";
/// The result every call gets when the built-in tools are off.
pub const TOOLS_OFF: &str = "error: tools are turned off";

// ---------------------------------------------------------------------------------------------
// 1. Built-in tools

/// A tool the engine runs itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `{"expression": "12 + 7"}` → `19`.
    Calculator,
    /// `{"word": "castle", "letter": "s"}` → `1` (case does not matter).
    CountLetter,
    /// `{"word": "castle"}` → `c-a-s-t-l-e`.
    Spell,
    /// `{"text": "castle", "unit": "letters" | "characters" | "words"}` → `6` (unit: letters).
    Length,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [Builtin::Calculator, Builtin::CountLetter, Builtin::Spell, Builtin::Length];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Calculator => "calculator",
            Builtin::CountLetter => "count_letter",
            Builtin::Spell => "spell",
            Builtin::Length => "length",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The tool as an OpenAI function definition (what `/v1/models` and the docs show).
    pub fn function(self) -> Function {
        let string = |d: &str| json!({"type": "string", "description": d});
        let (description, properties, required) = match self {
            Builtin::Calculator => (
                "Evaluates arithmetic: integers and decimals, + - * / ^ and parentheses.",
                json!({"expression": string("for example \"(12 + 7) * 3\"")}),
                vec!["expression"],
            ),
            Builtin::CountLetter => (
                "How many times a letter occurs in a word (any case).",
                json!({"word": string("the word"), "letter": string("one letter")}),
                vec!["word", "letter"],
            ),
            Builtin::Spell => ("A word letter by letter, joined by dashes.", json!({"word": string("the word")}), vec!["word"]),
            Builtin::Length => (
                "The length of a text in letters, characters (spaces included) or words.",
                json!({"text": string("the text"), "unit": {"type": "string", "enum": ["letters", "characters", "words"]}}),
                vec!["text"],
            ),
        };
        Function {
            name: self.name().into(),
            description: Some(description.into()),
            parameters: json!({"type": "object", "properties": properties, "required": required}),
        }
    }

    /// Runs the tool on parsed arguments: the result text, or an `error: ...` text.
    pub fn run(self, args: &Value) -> Result<String, String> {
        let text = |key: &str| -> Result<&str, String> {
            let v = args.get(key).and_then(Value::as_str).ok_or_else(|| format!("error: {} needs \"{key}\", a string", self.name()))?;
            if v.chars().count() > MAX_TEXT {
                return Err(format!("error: \"{key}\" is longer than {MAX_TEXT} characters"));
            }
            Ok(v)
        };
        match self {
            Builtin::Calculator => calc::eval(text("expression")?).map(calc::format),
            Builtin::CountLetter => {
                let word = text("word")?;
                let letter = text("letter")?.trim();
                let mut chars = letter.chars();
                let (Some(l), None) = (chars.next(), chars.next()) else {
                    return Err(format!("error: \"letter\" must be one character, not {letter:?}"));
                };
                let l = l.to_lowercase().collect::<String>();
                Ok(word.chars().filter(|c| c.to_lowercase().collect::<String>() == l).count().to_string())
            }
            Builtin::Spell => {
                let word = text("word")?.trim();
                if word.is_empty() {
                    return Err("error: \"word\" is empty".into());
                }
                Ok(word.chars().map(String::from).collect::<Vec<_>>().join("-"))
            }
            Builtin::Length => {
                let t = text("text")?;
                let unit = match args.get("unit") {
                    None | Some(Value::Null) => "letters",
                    Some(Value::String(u)) => u.as_str(),
                    Some(_) => return Err("error: \"unit\" must be \"letters\", \"characters\" or \"words\"".into()),
                };
                match unit {
                    "letters" => Ok(t.chars().filter(|c| c.is_alphabetic()).count().to_string()),
                    "characters" => Ok(t.chars().count().to_string()),
                    "words" => Ok(t.split_whitespace().count().to_string()),
                    u => Err(format!("error: unknown unit {u:?}; use \"letters\", \"characters\" or \"words\"")),
                }
            }
        }
    }
}

/// Runs a built-in tool by name on arguments given as JSON text: the result or an error text.
pub fn run_builtin(name: &str, arguments: &str) -> Result<String, String> {
    let Some(tool) = Builtin::from_name(name) else {
        let names: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
        return Err(format!("error: unknown tool {name:?}; the tools are {}", names.join(", ")));
    };
    let args: Value = serde_json::from_str(arguments).map_err(|e| format!("error: the arguments are not JSON ({e})"))?;
    if !args.is_object() {
        return Err("error: the arguments must be a JSON object".into());
    }
    let out = tool.run(&args)?;
    Ok(if out.chars().count() > MAX_TEXT { out.chars().take(MAX_TEXT).collect() } else { out })
}

/// Texts in the tool-call format, for the tokenizer's training corpus: one rendered call of
/// each built-in tool, its `tool` turn and the tools-off error, `copies` times. A BPE trained
/// on plays alone spells `<tool_call>`, `"arguments"` or `calculator` in many byte-sized
/// pieces (57 tokens for one call); with these beside the corpus the format gets its own
/// merges, and a call costs about half as many tokens of the 256-token context.
pub fn format_texts(copies: usize) -> Vec<String> {
    let calls = [
        // Argument values the plays already have as tokens: the format's merges, not new words.
        ToolCall::new("call_1", "calculator", r#"{"expression": "2 + 3"}"#),
        ToolCall::new("call_1", "count_letter", r#"{"word": "king", "letter": "s"}"#),
        ToolCall::new("call_1", "spell", r#"{"word": "love"}"#),
        ToolCall::new("call_1", "length", r#"{"text": "the", "unit": "characters"}"#),
        ToolCall::new("call_1", "length", r#"{"text": "to be or not", "unit": "words"}"#),
    ];
    let mut one = String::new();
    for c in &calls {
        one.push_str(&format!("<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>tool\n5<|im_end|>\n", c.render()));
    }
    one.push_str(&format!("<|im_start|>tool\n{TOOLS_OFF}<|im_end|>\nYou can call these functions:\n"));
    vec![one; copies]
}

// ---------------------------------------------------------------------------------------------
// 2. Reading calls

/// A turn of the model's, split: the text before its calls, and each call (or why a block is
/// not a call).
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub content: String,
    pub calls: Vec<Result<ToolCall, String>>,
}

/// Splits a turn into its content and its `<tool_call>` blocks; call ids are `call_{first}`,
/// `call_{first+1}`, ... A turn without blocks has no calls.
pub fn parse_turn(text: &str, first: usize) -> Turn {
    let Some(start) = text.find(CALL_OPEN) else {
        return Turn { content: text.trim().to_string(), calls: vec![] };
    };
    let content = text[..start].trim().to_string();
    let mut calls = Vec::new();
    let mut rest = &text[start..];
    while let Some(open) = rest.find(CALL_OPEN) {
        let body_start = open + CALL_OPEN.len();
        let (body, next) = match rest[body_start..].find(CALL_CLOSE) {
            Some(end) => (&rest[body_start..body_start + end], &rest[body_start + end + CALL_CLOSE.len()..]),
            None => (&rest[body_start..], ""),
        };
        let id = format!("call_{}", first + calls.len());
        calls.push(parse_call(body.trim(), id));
        rest = next;
    }
    Turn { content, calls }
}

fn parse_call(body: &str, id: String) -> Result<ToolCall, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("error: the call is not valid JSON ({e})"))?;
    let name = v.get("name").and_then(Value::as_str).ok_or("error: the call has no \"name\"")?;
    let args = match v.get("arguments") {
        // The text as written: a `Value` would round an integer past 64 bits to a float.
        Some(Value::Object(_)) => raw_arguments(body).unwrap_or_else(|| v["arguments"].to_string()),
        // Some writers put the arguments in a JSON string, as OpenAI's API does.
        Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok_and(|a| a.is_object()) => s.clone(),
        None => "{}".into(),
        Some(_) => return Err("error: the call's \"arguments\" is not a JSON object".into()),
    };
    Ok(ToolCall::new(id, name, args))
}

/// The `arguments` member of a call's JSON text as written, less the whitespace outside strings
/// (the compact form a `Value` prints, but with the model's numbers and key order).
fn raw_arguments(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        arguments: &'a serde_json::value::RawValue,
    }
    let raw = serde_json::from_str::<Call>(body).ok()?.arguments.get().to_string();
    let (mut out, mut in_str, mut esc) = (String::with_capacity(raw.len()), false, false);
    for c in raw.chars() {
        if in_str {
            (in_str, esc) = (esc || c != '"', !esc && c == '\\');
        } else if c.is_ascii_whitespace() {
            continue;
        } else {
            in_str = c == '"';
        }
        out.push(c);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// 3. Client-declared functions

/// A function the caller declares (OpenAI's `tools[].function`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object.
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    json!({"type": "object", "properties": {}})
}

/// `conv` with the declared functions written at the end of its system message (one is added
/// if it has none), one line per function, in a compact signature form the model learned to
/// read (the context is small):
///
/// ```text
/// You can call these functions:
/// get_weather(city: string) - Current weather in a city.
/// ```
///
/// Parameters are the schema's `properties` with their `type` (`?` marks one not `required`).
pub fn declare(conv: &Conversation, functions: &[Function]) -> Conversation {
    if functions.is_empty() {
        return conv.clone();
    }
    let mut block = String::from("You can call these functions:");
    for f in functions {
        block.push('\n');
        block.push_str(&signature(f));
    }
    let mut messages = conv.messages.clone();
    match messages.first_mut() {
        Some(m) if m.role == Role::System => m.content = format!("{}\n\n{block}", m.content),
        _ => messages.insert(0, Message::system(block)),
    }
    Conversation::new(messages)
}

/// `get_weather(city: string, days?: integer) - Current weather in a city.`
pub fn signature(f: &Function) -> String {
    let required: Vec<&str> =
        f.parameters.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let params: Vec<String> = f
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            let kind = schema.get("type").and_then(Value::as_str).unwrap_or("any");
            let opt = if required.contains(&name.as_str()) { "" } else { "?" };
            format!("{name}{opt}: {kind}")
        })
        .collect();
    let mut s = format!("{}({})", f.name, params.join(", "));
    if let Some(d) = f.description.as_deref().filter(|d| !d.trim().is_empty()) {
        s.push_str(" - ");
        s.push_str(d.trim());
    }
    s
}

// ---------------------------------------------------------------------------------------------
// 4. The session

/// Which tools a generation may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Toolbox {
    /// Run the built-in tools; when false, every call gets [`TOOLS_OFF`] as its result.
    pub builtins: bool,
    /// Names of client-declared functions: a turn that calls one ends the answer.
    pub client: Vec<String>,
    /// Calls run per answer; a turn past the cap gets an error asking for an answer, and the
    /// turn after that ends the answer.
    pub max_calls: usize,
    /// Ground the built-in tools' arguments in the conversation (`ground.rs`): a session given
    /// the prompts masks, while the model writes a call, every token that would put a number or
    /// a word into an argument that the conversation does not hold.
    pub grounded: bool,
}

impl Toolbox {
    /// The built-in tools, up to 4 calls per answer.
    pub fn builtins() -> Toolbox {
        Toolbox { builtins: true, client: vec![], max_calls: 4, grounded: true }
    }

    /// No tools: calls are answered with [`TOOLS_OFF`] (the model then answers by itself).
    pub fn off() -> Toolbox {
        Toolbox { builtins: false, ..Toolbox::builtins() }
    }
}

/// One call the engine ran, for traces ("calculator: 12 + 7 → 19").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub result: String,
    /// Whether the tool gave a result (false: the result is an error text).
    pub ok: bool,
}

impl CallRecord {
    /// `calculator: {"expression":"12 + 7"} → 19`.
    pub fn line(&self) -> String {
        format!("{}: {} → {}", self.name, self.arguments, self.result)
    }
}

/// An answer read back from a session: the final text, the turns on the way as messages, the
/// calls run, and calls left for the client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// The last turn's text (its content, without call blocks): what is graded and shown.
    pub text: String,
    /// Assistant and tool messages in order, ending with the last assistant turn.
    pub messages: Vec<Message>,
    pub calls: Vec<CallRecord>,
    /// Calls of client-declared functions in the last turn: the answer ends for the client.
    pub client_calls: Vec<ToolCall>,
}

#[derive(Clone, Debug, Default)]
struct SeqState {
    /// Where the current turn starts in the output tokens.
    turn_start: usize,
    /// Finished turns: (assistant message with its calls, the tool messages).
    turns: Vec<(Message, Vec<Message>)>,
    calls: Vec<CallRecord>,
    client_calls: Vec<ToolCall>,
    over_cap: bool,
}

/// Runs tool calls for a batch of sequences between decoding steps (see the module docs).
pub struct Session<'a> {
    tok: &'a Tokenizer,
    toolbox: Toolbox,
    seqs: Vec<SeqState>,
    /// Per sequence, what its conversation grounds (empty until [`Session::ground`]).
    grounds: Vec<Ground>,
    /// Each token's bytes, and whether it is special (for [`Session::mask`]).
    table: Vec<(Vec<u8>, bool)>,
}

impl<'a> Session<'a> {
    pub fn new(tok: &'a Tokenizer, toolbox: Toolbox, n: usize) -> Session<'a> {
        Session { tok, toolbox, seqs: vec![SeqState::default(); n], grounds: vec![Ground::default(); n], table: vec![] }
    }

    /// Reads what each prompt (token ids, one per sequence) grounds: the contents of its user
    /// and tool messages (all of its text when it is not in ChatML). A no-op unless the built-in
    /// tools are on and grounded.
    pub fn ground(mut self, prompts: &[Vec<u32>]) -> Session<'a> {
        if !(self.toolbox.builtins && self.toolbox.grounded) {
            return self;
        }
        let (start, tok) = (self.tok.im_start_id(), self.tok);
        self.grounds = prompts
            .iter()
            .map(|p| {
                let texts: Vec<String> = p
                    .split(|&t| t == start)
                    .map(|seg| tok.decode(seg, true))
                    .filter_map(|seg| seg.strip_prefix("user\n").or(seg.strip_prefix("tool\n")).map(str::to_string))
                    .collect();
                if texts.is_empty() && !p.contains(&start) {
                    Ground::new(&[tok.decode(p, true)])
                } else {
                    Ground::new(&texts)
                }
            })
            .collect();
        self.table = (0..tok.vocab_size() as u32).map(|t| (tok.token_bytes(t).unwrap_or_default(), tok.is_special(t))).collect();
        self
    }

    /// The grounded value sequence `i` (output so far `out`) is writing, if any: its slot and
    /// text so far; `None` outside one (nothing is masked there).
    fn grounded_value(&self, i: usize, out: &[u32]) -> Option<(&Ground, Slot, String)> {
        let g = &self.grounds[i];
        if self.table.is_empty() || g.is_empty() {
            return None;
        }
        let s = &self.seqs[i];
        let turn = &out[s.turn_start.min(out.len())..];
        let text = self.tok.decode(turn, false);
        let text = text.trim_end_matches('\u{FFFD}');
        let (slot, value) = match slot(text) {
            Some(sv) => sv,
            // The reply after tool results, when one of them is a result, not an error.
            None if !text.contains(CALL_OPEN)
                && s.turns.last().is_some_and(|(_, r)| s.calls[s.calls.len() - r.len()..].iter().any(|c| c.ok)) =>
            {
                (Slot::Reply, text.to_string())
            }
            None => return None,
        };
        Some((g, slot, value))
    }

    /// The mask while sequence `i` (output so far `out`) writes a grounded argument, or the
    /// reply after tool results: the logits of tokens that would break it become −∞
    /// (`ground.rs`). Returns whether it masked; it
    /// leaves the logits alone outside a grounded value, and when nothing would be allowed.
    pub fn mask(&self, i: usize, out: &[u32], logits: &mut [f32]) -> bool {
        let Some(allowed) = self.allowed(i, out) else { return false };
        for (l, ok) in logits.iter_mut().zip(&allowed) {
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
        true
    }

    /// The tokens [`Session::mask`] keeps, one flag per vocabulary entry; `None` where it
    /// leaves the logits alone.
    pub fn allowed(&self, i: usize, out: &[u32]) -> Option<Vec<bool>> {
        let (g, slot, value) = self.grounded_value(i, out)?;
        let end = g.may_end(slot, &value);
        let mut allowed = g.allowed(slot, &value, self.table.iter().map(|(bytes, _)| bytes.as_slice()));
        for (ok, (bytes, special)) in allowed.iter_mut().zip(&self.table) {
            *ok = if *special { end } else { *ok && !bytes.is_empty() };
        }
        allowed.contains(&true).then_some(allowed)
    }

    /// Whether [`Session::mask`] keeps `token` (it keeps every token where it does not mask):
    /// one token's check, for samplers that draw first and mask only on a refusal. When it
    /// says false, `mask` may still leave everything (nothing allowed), so the caller masks.
    pub fn allows(&self, i: usize, out: &[u32], token: u32) -> bool {
        let Some((g, slot, value)) = self.grounded_value(i, out) else { return true };
        match self.table.get(token as usize) {
            Some((_, true)) => g.may_end(slot, &value),
            Some((bytes, false)) => !bytes.is_empty() && g.allowed(slot, &value, [bytes.as_slice()])[0],
            None => false,
        }
    }

    /// The hook for `generate_batch_with`: sequence `i` ended a turn after `out` (its output so
    /// far, the stop token not included). Returns the tokens to put in after the stop token, or
    /// `None` to end the answer.
    pub fn on_stop(&mut self, i: usize, out: &[u32]) -> Option<Vec<u32>> {
        let s = &mut self.seqs[i];
        let text = self.tok.decode(&out[s.turn_start.min(out.len())..], false);
        if !text.contains(CALL_OPEN) || s.over_cap {
            return None;
        }
        let turn = parse_turn(&text, s.calls.len() + 1);
        let wants_client = turn.calls.iter().any(|c| c.as_ref().is_ok_and(|c| self.toolbox.client.contains(&c.function.name)));
        if wants_client {
            s.client_calls = turn.calls.into_iter().filter_map(Result::ok).collect();
            return None;
        }
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for call in turn.calls {
            let id = format!("call_{}", s.calls.len() + 1);
            let (call, result) = match call {
                Err(e) => (ToolCall::new(id.clone(), "", "{}"), Err(e)),
                Ok(c) if s.calls.len() >= self.toolbox.max_calls => {
                    s.over_cap = true;
                    let e = format!("error: no more than {} tool calls per answer; answer now", self.toolbox.max_calls);
                    (c, Err(e))
                }
                Ok(c) if !self.toolbox.builtins => (c, Err(TOOLS_OFF.to_string())),
                Ok(c) => {
                    let r = run_builtin(&c.function.name, &c.function.arguments);
                    (c, r)
                }
            };
            let ok = result.is_ok();
            let result = result.unwrap_or_else(|e| e);
            if ok && !self.table.is_empty() {
                // A result is part of the conversation: later calls may use its number.
                self.grounds[i].add(&result);
            }
            s.calls.push(CallRecord {
                id: id.clone(),
                name: call.function.name.clone(),
                arguments: call.function.arguments.clone(),
                result: result.clone(),
                ok,
            });
            results.push(Message::tool(id.clone(), result));
            calls.push(ToolCall { id, ..call });
        }
        // The stop token (`<|im_end|>`) comes next in the output; then the tool turns.
        let mut put = self.tok.encode("\n");
        for m in &results {
            put.push(self.tok.im_start_id());
            put.extend(self.tok.encode(&format!("tool\n{}", m.content)));
            put.push(self.tok.im_end_id());
            put.extend(self.tok.encode("\n"));
        }
        put.push(self.tok.im_start_id());
        put.extend(self.tok.encode("assistant\n"));
        s.turns.push((Message::assistant_calls(turn.content, calls), results));
        s.turn_start = out.len() + 1 + put.len();
        Some(put)
    }

    /// Sequence `i`'s answer from its output tokens.
    pub fn answer(&self, i: usize, out: &[u32]) -> Answer {
        let s = &self.seqs[i];
        let last = self.tok.decode(&out[s.turn_start.min(out.len())..], true);
        let mut messages = Vec::new();
        for (call, results) in &s.turns {
            messages.push(call.clone());
            messages.extend(results.iter().cloned());
        }
        let text = if s.client_calls.is_empty() { last.trim().to_string() } else { parse_turn(&last, 0).content };
        messages.push(if s.client_calls.is_empty() {
            Message::assistant(text.clone())
        } else {
            Message::assistant_calls(text.clone(), s.client_calls.clone())
        });
        Answer { text, messages, calls: s.calls.clone(), client_calls: s.client_calls.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's arguments keep the text the model wrote: an integer past 64 bits stays one.
    #[test]
    fn call_arguments_are_kept_verbatim() {
        let text = format!(
            "{CALL_OPEN}\n{{\"name\": \"get_weather\", \"arguments\": {{\"days\": 89036126325994740000000000000000000, \"x\": 1.50}}}}\n{CALL_CLOSE}"
        );
        let turn = parse_turn(&text, 0);
        let call = turn.calls[0].as_ref().expect("a call");
        assert_eq!(call.function.arguments, r#"{"days":89036126325994740000000000000000000,"x":1.50}"#);
        let spaced = format!("{CALL_OPEN}\n{{\"name\": \"f\", \"arguments\": {{\"s\": \"a \\\" b\\\\\", \"t\": [1, 2]}}}}\n{CALL_CLOSE}");
        assert_eq!(parse_turn(&spaced, 0).calls[0].as_ref().unwrap().function.arguments, r#"{"s":"a \" b\\","t":[1,2]}"#);
    }

    #[test]
    fn builtins_run_and_fail_with_messages() {
        assert_eq!(run_builtin("calculator", r#"{"expression": "12 + 7"}"#), Ok("19".into()));
        assert_eq!(run_builtin("count_letter", r#"{"word": "Strawberry", "letter": "R"}"#), Ok("3".into()));
        assert_eq!(run_builtin("spell", r#"{"word": "castle"}"#), Ok("c-a-s-t-l-e".into()));
        assert_eq!(run_builtin("length", r#"{"text": "castle"}"#), Ok("6".into()));
        assert_eq!(run_builtin("length", r#"{"text": "to be or not", "unit": "characters"}"#), Ok("12".into()));
        assert_eq!(run_builtin("length", r#"{"text": "to be or not", "unit": "words"}"#), Ok("4".into()));
        assert!(run_builtin("python", "{}").unwrap_err().contains("unknown tool"));
        assert!(run_builtin("calculator", "{").unwrap_err().contains("not JSON"));
        assert!(run_builtin("calculator", "[1]").unwrap_err().contains("JSON object"));
        assert!(run_builtin("calculator", r#"{"expr": "1"}"#).unwrap_err().contains("needs \"expression\""));
        assert!(run_builtin("count_letter", r#"{"word": "a", "letter": "ab"}"#).unwrap_err().contains("one character"));
        assert!(run_builtin("spell", &format!(r#"{{"word": "{}"}}"#, "a".repeat(300))).unwrap_err().contains("longer than"));
        assert!(run_builtin("length", r#"{"text": "a", "unit": "bytes"}"#).unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn turns_split_into_content_and_calls() {
        let t =
            parse_turn("Let me check.\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}\n</tool_call>", 1);
        assert_eq!(t.content, "Let me check.");
        let call = t.calls[0].as_ref().unwrap();
        assert_eq!((call.id.as_str(), call.function.name.as_str()), ("call_1", "calculator"));
        assert_eq!(serde_json::from_str::<Value>(&call.function.arguments).unwrap(), json!({"expression": "1+1"}));
        let bad = parse_turn("<tool_call>{\"name\": 3}</tool_call><tool_call>nonsense", 1);
        assert_eq!(bad.calls.len(), 2);
        assert!(bad.calls.iter().all(Result::is_err));
        assert!(parse_turn("Just text.", 1).calls.is_empty());
    }

    #[test]
    fn a_session_runs_calls_and_reads_the_answer_back() {
        let tok = Tokenizer::bytes();
        let mut session = Session::new(&tok, Toolbox::builtins(), 1);
        let call = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12 + 7\"}}\n</tool_call>";
        let mut out = tok.encode(call);
        let put = session.on_stop(0, &out).expect("a call is run");
        assert_eq!(tok.decode(&put, false), "\n<|im_start|>tool\n19<|im_end|>\n<|im_start|>assistant\n");
        out.push(tok.im_end_id());
        out.extend(&put);
        out.extend(tok.encode("12 + 7 = 19."));
        assert_eq!(session.on_stop(0, &out), None, "a turn without calls ends the answer");
        let a = session.answer(0, &out);
        assert_eq!(a.text, "12 + 7 = 19.");
        assert_eq!(a.calls[0].line(), "calculator: {\"expression\":\"12 + 7\"} → 19");
        assert_eq!(a.messages.len(), 3);
        assert_eq!((a.messages[0].tool_calls.len(), a.messages[1].role), (1, Role::Tool));
        // Off: the call is answered with an error and the answer goes on.
        let mut off = Session::new(&tok, Toolbox::off(), 1);
        assert!(tok.decode(&off.on_stop(0, &tok.encode(call)).unwrap(), false).contains(TOOLS_OFF));
        // A client function ends the answer with the call for the client.
        let weather = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Verona\"}}\n</tool_call>";
        let mut client = Session::new(&tok, Toolbox { client: vec!["get_weather".into()], ..Toolbox::builtins() }, 1);
        assert_eq!(client.on_stop(0, &tok.encode(weather)), None);
        let a = client.answer(0, &tok.encode(weather));
        assert_eq!(a.client_calls[0].function.name, "get_weather");
        assert_eq!(a.text, "");
    }

    #[test]
    fn a_grounded_session_masks_what_the_conversation_does_not_hold() {
        let tok = Tokenizer::bytes();
        let conv = Conversation::new(vec![Message::user("What is 31 - 19?")]);
        let prompt = crate::chat::encode_prompt(&tok, &conv);
        let v = tok.vocab_size();
        let allowed = |toolbox: Toolbox, written: &str| {
            let session = Session::new(&tok, toolbox, 1).ground(std::slice::from_ref(&prompt));
            let mut logits = vec![0.0f32; v];
            let masked = session.mask(0, &tok.encode(written), &mut logits);
            let ok: Vec<u32> = (0..v as u32).filter(|&t| logits[t as usize].is_finite()).collect();
            (masked, ok)
        };
        let call = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"3";
        let (masked, ok) = allowed(Toolbox::builtins(), call);
        assert!(masked);
        assert_eq!(tok.decode(&ok, false), "1", "only 31 begins with 3");
        let (_, ok) = allowed(Toolbox::builtins(), &format!("{call}1 - 19"));
        assert!(ok.contains(&tok.encode("\"")[0]) && !ok.contains(&tok.encode("7")[0]));
        // The reply after the result quotes its numbers: 12 and 19 are there, 13 is not.
        let mut session = Session::new(&tok, Toolbox::builtins(), 1).ground(std::slice::from_ref(&prompt));
        let mut out = tok.encode(&format!("{call}1 - 19\"}}}}\n</tool_call>"));
        let put = session.on_stop(0, &out).expect("the call runs");
        out.push(tok.im_end_id());
        out.extend(put);
        out.extend(tok.encode("31 - 19 = 1"));
        let mut logits = vec![0.0f32; v];
        assert!(session.mask(0, &out, &mut logits));
        let ok: Vec<u32> = (0..v as u32).filter(|&t| logits[t as usize].is_finite()).collect();
        assert!(ok.contains(&tok.encode("2")[0]) && !ok.contains(&tok.encode("3")[0]) && !ok.contains(&tok.im_end_id()));
        // One token's check keeps exactly what the mask keeps.
        assert!((0..v as u32).all(|t| session.allows(0, &out, t) == logits[t as usize].is_finite()));
        // Outside an argument, with grounding off, or with the tools off: nothing is masked.
        assert_eq!(allowed(Toolbox::builtins(), "31 - 1").1.len(), v);
        assert!(!allowed(Toolbox { grounded: false, ..Toolbox::builtins() }, call).0);
        assert!(!allowed(Toolbox::off(), call).0);
    }

    #[test]
    fn declared_functions_join_the_system_message() {
        let f = Function { name: "get_weather".into(), description: None, parameters: json!({"type": "object"}) };
        let g = Function {
            name: "get_weather".into(),
            description: Some("Weather.".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}),
        };
        assert_eq!(signature(&g), "get_weather(city: string, days?: integer) - Weather.");
        let conv = Conversation::new(vec![Message::user("Weather in Verona?")]);
        let d = declare(&conv, std::slice::from_ref(&f));
        assert_eq!(d.messages[0].role, Role::System);
        assert_eq!(d.messages[0].content, "You can call these functions:\nget_weather()");
        let with_system = Conversation::new(vec![Message::system("Be brief."), Message::user("Hi")]);
        let d = declare(&with_system, &[f]);
        assert!(d.messages[0].content.starts_with("Be brief.\n\nYou can call these functions:"));
        assert_eq!(d.messages.len(), 2);
    }
}
