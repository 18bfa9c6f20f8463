//! Conversations and the ChatML chat template.
//!
//! A conversation is a list of messages, each with a role (`system`, `user`, `assistant`) and a
//! text. On disk it is one JSON object per line (JSONL), the format OpenAI, HF and TRL use:
//!
//! ```text
//! {"messages": [{"role": "system", "content": "Answer in one word."},
//!               {"role": "user", "content": "Who wrote Comus?"},
//!               {"role": "assistant", "content": "Milton."}]}
//! ```
//!
//! Other fields of the object (such as the task suite's `"meta"`) and of a message (`"name"`) are
//! ignored. Tool use follows OpenAI's fine-tuning format: an assistant message may carry
//! `"tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}]` (arguments a
//! JSON string; content may then be empty), and a `"tool"` message holds a call's result, with
//! the `"tool_call_id"` it answers. An assistant message may carry `"weight": 0`, as in OpenAI's fine-tuning format: it
//! stays in the context but is left out of the loss (used for a deliberately wrong answer that a
//! later turn corrects).
//!
//! # ChatML
//! Each message becomes `<|im_start|>{role}\n{content}<|im_end|>\n`; a prompt for generation ends
//! with `<|im_start|>assistant\n`, and the model answers until it emits `<|im_end|>`:
//!
//! ```text
//! <|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\nWho wrote Comus?<|im_end|>\n<|im_start|>assistant\n
//! ```
//!
//! Tool calls are written inside the assistant's turn, one block per call, as Hermes and Qwen2.5
//! write them; a call's result is a `tool` turn, and the assistant then goes on in a new turn:
//!
//! ```text
//! <|im_start|>user\nWhat is 12 plus 7?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 + 7"}}\n</tool_call><|im_end|>\n<|im_start|>tool\n19<|im_end|>\n<|im_start|>assistant\n12 + 7 = 19.<|im_end|>\n
//! ```
//!
//! `<tool_call>` is plain text, not a special token: only what the model itself generates is
//! parsed for calls (`crate::tools`), so a user who types one runs nothing.
//!
//! [`render`] gives this text exactly as HF `transformers`' `apply_chat_template` does with
//! [`CHATML_TEMPLATE`] (golden test in `tests/chat.rs`). For the model, [`encode_for_training`]
//! and [`encode_prompt`] build the token ids directly: the markers are inserted **by id** and the
//! contents are encoded with [`Tokenizer::encode`], which treats special-token strings as plain
//! text, so a user who types `<|im_end|>` cannot end their turn or forge a system message.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tokenizer::{Tokenizer, IM_END, IM_START};
use crate::{Error, Result};

/// The ChatML template as HF Jinja (`tokenizer_config.json`'s `chat_template`): what
/// [`render`] implements, for exporting a chatforge model to `transformers`.
pub const CHATML_TEMPLATE: &str = concat!(
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}",
    "{% if message['content'] %}{{ message['content'] }}{% endif %}",
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}",
    "{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}",
    "{{ '<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' + call['function']['arguments'] + '}\\n</tool_call>' }}",
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
);

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from whoever deploys the model; only as the first message.
    System,
    User,
    Assistant,
    /// The result of a tool call, answering the assistant message before it.
    Tool,
}

impl Role {
    /// The role as ChatML writes it: `system`, `user`, `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// The text; `null` reads as empty (an assistant message that only calls tools).
    #[serde(default, deserialize_with = "null_is_empty")]
    pub content: String,
    /// `Some(0)`: an assistant message the model sees but does not learn to say (OpenAI's
    /// fine-tuning `weight`). `None` or `Some(1)`: learned, for assistant messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    /// The tools an assistant message calls, after its content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A call of a tool by the assistant, in OpenAI's shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// Which function a [`ToolCall`] calls, and its arguments as JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> ToolCall {
        ToolCall { id: id.into(), kind: function_type(), function: FunctionCall { name: name.into(), arguments: arguments.into() } }
    }

    /// The call as the model writes it: `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`.
    pub fn render(&self) -> String {
        format!(
            "<tool_call>\n{{\"name\": {}, \"arguments\": {}}}\n</tool_call>",
            serde_json::Value::from(self.function.name.as_str()),
            self.function.arguments
        )
    }
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), weight: None, tool_calls: vec![], tool_call_id: None }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }

    /// An assistant message that calls tools (after `content`, which may be empty).
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Message {
        Message { tool_calls: calls, ..Message::assistant(content) }
    }

    /// The result of the call `id`.
    pub fn tool(id: impl Into<String>, content: impl Into<String>) -> Message {
        Message { tool_call_id: Some(id.into()), ..Message::new(Role::Tool, content) }
    }

    /// The text of the turn as the template writes it: the content, then each call's block.
    pub fn text(&self) -> String {
        let mut text = self.content.clone();
        for call in &self.tool_calls {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&call.render());
        }
        text
    }

    /// An assistant message kept out of the loss (`weight: 0`).
    pub fn assistant_unlearned(content: impl Into<String>) -> Message {
        Message { weight: Some(0), ..Message::assistant(content) }
    }

    /// Whether SFT learns this message: an assistant message without `weight: 0`.
    pub fn is_learned(&self) -> bool {
        self.role == Role::Assistant && self.weight != Some(0)
    }
}

/// A conversation: the messages in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

impl Conversation {
    pub fn new(messages: Vec<Message>) -> Conversation {
        Conversation { messages }
    }

    /// The system message, if the conversation has one.
    pub fn system(&self) -> Option<&str> {
        match self.messages.first() {
            Some(m) if m.role == Role::System => Some(&m.content),
            _ => None,
        }
    }

    /// The last message, if it is the assistant's: the reference answer of a task.
    pub fn last_assistant(&self) -> Option<&str> {
        match self.messages.last() {
            Some(m) if m.role == Role::Assistant => Some(&m.content),
            _ => None,
        }
    }

    /// The conversation without the assistant's reply to its last user message (the reference
    /// answer, with any tool calls and results on the way): the prompt that asks for it.
    pub fn prompt(&self) -> Conversation {
        let mut messages = self.messages.clone();
        while matches!(messages.last().map(|m| m.role), Some(Role::Assistant | Role::Tool)) && messages.len() > 1 {
            messages.pop();
        }
        Conversation { messages }
    }

    /// Checks the shape any conversation must have: at least one message, a system message only
    /// first, no empty content, `weight` only 0 or 1 and only on assistant messages. The error
    /// says which message is wrong (1-based).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.messages.is_empty() {
            return Err("no messages".into());
        }
        for (i, m) in self.messages.iter().enumerate() {
            let n = i + 1;
            if m.role == Role::System && i > 0 {
                return Err(format!("message {n} is a system message; only the first may be"));
            }
            if m.content.trim().is_empty() && m.tool_calls.is_empty() {
                return Err(format!("message {n} ({}) is empty", m.role));
            }
            if !m.tool_calls.is_empty() && m.role != Role::Assistant {
                return Err(format!("message {n} ({}) has tool_calls; only assistant messages may", m.role));
            }
            for call in &m.tool_calls {
                if call.function.name.trim().is_empty() {
                    return Err(format!("message {n} has a tool call without a function name"));
                }
                if serde_json::from_str::<serde_json::Value>(&call.function.arguments).map_or(true, |v| !v.is_object()) {
                    return Err(format!("message {n}: the arguments of tool call {:?} are not a JSON object", call.id));
                }
            }
            if m.role == Role::Tool {
                // A result answers a call of the assistant message before the run of tool messages.
                let calls = self.messages[..i].iter().rev().find(|p| p.role != Role::Tool);
                let Some(calls) = calls.filter(|p| !p.tool_calls.is_empty()) else {
                    return Err(format!("message {n} (tool) does not follow an assistant message with tool_calls"));
                };
                if let Some(id) = &m.tool_call_id {
                    if !calls.tool_calls.iter().any(|c| &c.id == id) {
                        return Err(format!("message {n} (tool) answers tool_call_id {id:?}, which the assistant did not call"));
                    }
                }
            }
            match m.weight {
                None => {}
                Some(_) if m.role != Role::Assistant => {
                    return Err(format!("message {n} ({}) has a weight; only assistant messages may", m.role))
                }
                Some(0 | 1) => {}
                Some(w) => return Err(format!("message {n} has weight {w}; it must be 0 or 1")),
            }
        }
        Ok(())
    }

    /// [`Conversation::validate`], and the conversation ends with an assistant message that is
    /// learned, so there is something to train on.
    pub fn validate_for_training(&self) -> std::result::Result<(), String> {
        self.validate()?;
        match self.messages.last() {
            Some(m) if m.role != Role::Assistant => {
                Err(format!("the last message is a {} message; a training conversation ends with the assistant's", m.role))
            }
            Some(m) if !m.is_learned() => Err("the last assistant message has weight 0: nothing to learn".into()),
            _ => Ok(()),
        }
    }

    /// [`Conversation::validate`], and the conversation ends with a user message (or a tool's
    /// result), ready for the assistant to answer.
    pub fn validate_for_prompt(&self) -> std::result::Result<(), String> {
        self.validate()?;
        match self.messages.last() {
            Some(m) if m.role == Role::User || m.role == Role::Tool => Ok(()),
            Some(m) => Err(format!("the last message is a {} message; a prompt ends with the user's", m.role)),
            None => unreachable!("validate checked the conversation is not empty"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering and tokenisation

/// The ChatML text of a conversation; with `add_generation_prompt`, followed by
/// `<|im_start|>assistant\n` (even after an assistant message, as HF's template does).
///
/// Content is copied as it is: a message containing the string `<|im_end|>` renders ambiguously.
/// The ids from [`encode_for_training`] / [`encode_prompt`] are not ambiguous; use them for the
/// model and this text for people and for other tools.
pub fn render(conv: &Conversation, add_generation_prompt: bool) -> String {
    let mut text = String::new();
    for m in &conv.messages {
        text.push_str(IM_START);
        text.push_str(m.role.as_str());
        text.push('\n');
        text.push_str(&m.text());
        text.push_str(IM_END);
        text.push('\n');
    }
    if add_generation_prompt {
        text.push_str(IM_START);
        text.push_str("assistant\n");
    }
    text
}

/// Token ids of a conversation for SFT, and the loss mask: `mask[i]` says whether the model
/// learns to predict `ids[i]` (from `ids[..i]`). It is true exactly on the content tokens of
/// learned assistant messages (tool calls included) and on their `<|im_end|>` (so the model
/// learns to stop), and false on system, user and tool messages (a tool's output is given, not
/// learned), on the `<|im_start|>assistant\n` headers and on the `\n` after
/// each `<|im_end|>`. `decode(ids, false) == render(conv, false)`.
///
/// With an imported model's template ([`Tokenizer::template`]), the template's rendering and
/// mask (`crate::template`); a conversation its template refuses panics with the template's
/// message (import checks the template on sample conversations first).
pub fn encode_for_training(tok: &Tokenizer, conv: &Conversation) -> (Vec<u32>, Vec<bool>) {
    if let Some(t) = tok.template() {
        return t.encode_for_training(tok, conv).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for m in &conv.messages {
        let learn = m.is_learned();
        let mut push = |piece: &[u32], on: bool| {
            ids.extend_from_slice(piece);
            mask.extend(std::iter::repeat_n(on, piece.len()));
        };
        push(&header(tok, m.role), false);
        push(&tok.encode(&m.text()), learn);
        push(&[tok.im_end_id()], learn);
        push(&tok.encode("\n"), false);
    }
    (ids, mask)
}

/// Token ids that ask the model for the next assistant message: every message of `conv`, then
/// `<|im_start|>assistant\n`. Generation stops at `<|im_end|>`. The ids of the messages are the
/// same as [`encode_for_training`] gives, so a prompt is a prefix of the training sequence.
/// [`encode_prompt`], keeping only the last `cap` tokens of a longer prompt (the most recent
/// turns, and always the assistant header the answer continues).
pub fn encode_prompt_capped(tok: &Tokenizer, conv: &Conversation, cap: usize) -> Vec<u32> {
    keep_last(encode_prompt(tok, conv), cap)
}

/// The last `cap` tokens of `ids`.
pub fn keep_last(mut ids: Vec<u32>, cap: usize) -> Vec<u32> {
    if ids.len() > cap {
        ids.drain(..ids.len() - cap);
    }
    ids
}

pub fn encode_prompt(tok: &Tokenizer, conv: &Conversation) -> Vec<u32> {
    if let Some(t) = tok.template() {
        return t.encode_prompt(tok, conv).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut ids = Vec::new();
    for m in &conv.messages {
        ids.extend(header(tok, m.role));
        ids.extend(tok.encode(&m.text()));
        ids.push(tok.im_end_id());
        ids.extend(tok.encode("\n"));
    }
    ids.extend(header(tok, Role::Assistant));
    ids
}

/// `<|im_start|>` (by id) followed by the tokens of `role\n`.
fn header(tok: &Tokenizer, role: Role) -> Vec<u32> {
    let mut ids = vec![tok.im_start_id()];
    ids.extend(tok.encode(&format!("{role}\n")));
    ids
}

// ---------------------------------------------------------------------------------------------
// JSONL

/// Parses one JSONL line into a conversation and checks it for training
/// ([`Conversation::validate_for_training`]). The error is a message without the location.
pub fn parse_line(line: &str) -> std::result::Result<Conversation, String> {
    let conv: Conversation = serde_json::from_str(line).map_err(|e| e.to_string())?;
    conv.validate_for_training()?;
    Ok(conv)
}

/// Reads training conversations from a JSONL file, one `{"messages": [...]}` per line (blank
/// lines are skipped). A line that is not valid JSON, has an unknown role or fails
/// [`Conversation::validate_for_training`] is an error naming the file and the line number; with
/// `skip_bad` it is skipped instead and counted. Returns the conversations and that count.
pub fn load_jsonl(path: &Path, skip_bad: bool) -> Result<(Vec<Conversation>, usize)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut convs = Vec::new();
    let mut skipped = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(conv) => convs.push(conv),
            Err(_) if skip_bad => skipped += 1,
            Err(msg) => return Err(Error::BadLine { path: path.to_path_buf(), line: i + 1, msg }),
        }
    }
    Ok((convs, skipped))
}

/// Writes values as JSONL, one per line, atomically (temp file in the same folder, fsync,
/// rename): a crash leaves the old file or the new one.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    Ok(chatforge_rundir::fs::write_atomic_with(path, |out| {
        for item in items {
            serde_json::to_writer(&mut *out, item)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?)
}

/// The prompts of a JSONL file: each line's `messages` (or `prompt`), without a trailing
/// assistant message. A line that does not parse, or is not a prompt (it must end with the
/// user's turn), is an error naming the file and the line.
pub fn load_prompts(path: &Path) -> Result<Vec<Conversation>> {
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(alias = "prompt")]
        messages: Vec<Message>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::BadLine { path: path.to_path_buf(), line: i + 1, msg };
        let l: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let conv = Conversation::new(l.messages).prompt();
        conv.validate_for_prompt().map_err(bad)?;
        prompts.push(conv);
    }
    if prompts.is_empty() {
        return Err(Error::Format(format!("{}: no prompts", path.display())));
    }
    Ok(prompts)
}
