//! A model's own chat template: the Jinja `chat_template` of its `tokenizer_config.json`,
//! rendered with `minijinja` exactly as `transformers`' `apply_chat_template` renders it, and
//! turned into token ids with a loss mask that follows the model's own assistant turns.
//!
//! In order: the environment (`transformers`' settings and helpers), rendering, then the
//! segments that encoding and the loss mask are built from.
//!
//! **Rendering.** `transformers` compiles templates with `trim_blocks` and `lstrip_blocks`, adds
//! `raise_exception` and `strftime_now`, and a `tojson` that is Python's `json.dumps` with
//! `ensure_ascii=False` (", " and ": " separators, or "," and ": " with an indent). We do the
//! same; Python's string and dict methods (`.strip()`, `.startswith()`, `.items()`) come from
//! `minijinja-contrib`'s pycompat. The context holds `messages` (OpenAI's shape; a tool call's
//! `arguments` parsed into an object, as `transformers` expects), `tools`,
//! `add_generation_prompt`, `bos_token` and `eos_token`. `{% generation %}` markers (TRL's
//! assistant masks) render nothing in `transformers` and are removed here.
//!
//! **Encoding, and why segments.** The rendered text cannot simply be tokenized with special
//! tokens on: a user who types `<|im_end|>` would close their turn. So the template is rendered
//! once more with each message's content replaced by a placeholder; the text between placeholders
//! is the template's own (special tokens recognised), a placeholder's is the message's (plain
//! text). The two renders must agree once contents are put back (each content as given, or
//! trimmed as templates do: `| trim`, `.lstrip('\n')`, ...); a template that rewrites content
//! some other way is refused rather than guessed at.
//!
//! **The loss mask.** A learned assistant message's span starts where the generation prompt of
//! the conversation before it ends (`add_generation_prompt=True`), and ends after the first stop
//! token (the model's end of turn) that follows its content: the model learns its answer, tool
//! calls included, and to stop, but not the headers or what the template adds after the stop.

use std::sync::Arc;

use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, ErrorKind};

use crate::chat::{Conversation, Message, Role};
use crate::tokenizer::{Pieces, Tokenizer};
use crate::{Error, Result};

/// Marks a message's content in the placeholder render: private-use characters, no whitespace.
const OPEN: char = '\u{F0000}';
const CLOSE: char = '\u{F0001}';

/// A compiled chat template and the special-token strings its context needs.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
    /// Token strings that end an assistant turn (EOS, `<|im_end|>`, `<|eot_id|>`, ...).
    pub stops: Vec<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos_token", &self.bos_token).field("stops", &self.stops).finish()
    }
}

/// One piece of a rendered conversation: the template's text or a message's content.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    text: String,
    content: bool,
    learned: bool,
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = format!("chat template: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Format(msg)
}

impl ChatTemplate {
    /// Compiles `source` (the `chat_template` string) with `transformers`' settings.
    pub fn new(source: &str, bos_token: &str, eos_token: &str, stops: Vec<String>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String { strftime_now(&fmt) });
        env.add_filter("tojson", |v: Value, indent: Option<usize>, kwargs: Kwargs| -> std::result::Result<String, minijinja::Error> {
            let indent = indent.or(kwargs.get::<Option<usize>>("indent")?);
            let mut out = String::new();
            python_json(&v, indent, 0, &mut out);
            Ok(out)
        });
        let cleaned = source.replace("{% generation %}", "").replace("{% endgeneration %}", "");
        env.add_template_owned("chat", cleaned).map_err(template_error)?;
        Ok(ChatTemplate { env: Arc::new(env), source: source.to_string(), bos_token: bos_token.into(), eos_token: eos_token.into(), stops })
    }

    fn render_values(&self, messages: Vec<Value>, add_generation_prompt: bool, tools: Option<&serde_json::Value>) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(template_error)?;
        let tools = tools.map(|t| Value::from(Serde(t))).unwrap_or(Value::from(()));
        let ctx = minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        };
        tmpl.render(ctx).map_err(template_error)
    }

    /// The conversation as text, as `tokenizer.apply_chat_template(messages, tools=tools,
    /// add_generation_prompt=..., tokenize=False)` gives it.
    pub fn render(&self, conv: &Conversation, add_generation_prompt: bool, tools: Option<&serde_json::Value>) -> Result<String> {
        let msgs = conv.messages.iter().map(|m| message_value(m, &m.content)).collect();
        self.render_values(msgs, add_generation_prompt, tools)
    }

    /// The placeholder render of `messages`, split into template text and contents (as given,
    /// or trimmed: whichever makes the two renders agree).
    fn segments(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<(String, Option<usize>)>> {
        let marked: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| if m.content.is_empty() { message_value(m, "") } else { message_value(m, &format!("{OPEN}{i}{CLOSE}")) })
            .collect();
        let skeleton = self.render_values(marked, add_generation_prompt, tools)?;
        let real = self.render(&Conversation::new(messages.to_vec()), add_generation_prompt, tools)?;
        let mut pieces: Vec<(String, Option<usize>)> = Vec::new();
        for (k, part) in skeleton.split(OPEN).enumerate() {
            if k == 0 {
                pieces.push((part.to_string(), None));
                continue;
            }
            let (idx, rest) = part.split_once(CLOSE).ok_or_else(|| Error::Format("chat template cut a message's content apart".into()))?;
            let i: usize = idx.parse().map_err(|_| Error::Format("chat template rewrote a message's content".into()))?;
            pieces.push((String::new(), Some(i)));
            pieces.push((rest.to_string(), None));
        }
        // Walk the real render: template text must match as it is; each content is the message's
        // as given or as the template trims it (both ends, one end, newlines only), whichever is
        // followed by the next template text.
        let mut filled = Vec::with_capacity(pieces.len());
        let mut pos = 0;
        for (k, (text, content)) in pieces.iter().enumerate() {
            let rest = &real[pos..];
            let piece = match content {
                None if rest.starts_with(text.as_str()) => text.clone(),
                None => {
                    return Err(Error::Format(
                        "the chat template renders differently around a message's content; cannot tell content from markup".into(),
                    ))
                }
                Some(i) => {
                    let c = messages[*i].content.as_str();
                    let next = pieces.get(k + 1).map_or("", |p| p.0.as_str());
                    let at_end = k + 2 >= pieces.len();
                    [c, c.trim(), c.trim_start(), c.trim_end(), c.trim_start_matches('\n'), c.trim_end_matches('\n'), c.trim_matches('\n')]
                        .into_iter()
                        .find(|f| {
                            rest.starts_with(f) && (if at_end { rest[f.len()..] == *next } else { rest[f.len()..].starts_with(next) })
                        })
                        .ok_or_else(|| {
                            Error::Format(format!(
                                "the chat template rewrites message {i}'s content (beyond trimming it); cannot tell content from markup"
                            ))
                        })?
                        .to_string()
                }
            };
            pos += piece.len();
            filled.push((piece, *content));
        }
        if pos != real.len() {
            return Err(Error::Format("the chat template's render does not end where its markup does".into()));
        }
        Ok(filled)
    }

    /// Token ids and loss mask of a conversation for SFT (see the module docs for the mask).
    pub fn encode_for_training(&self, tok: &Tokenizer, conv: &Conversation) -> Result<(Vec<u32>, Vec<bool>)> {
        let msgs = &conv.messages;
        let pieces = self.segments(msgs, false, None)?;
        // Character offsets of each learned span in the full text.
        let mut spans = Vec::new();
        let full: String = pieces.iter().map(|p| p.0.as_str()).collect();
        for i in (0..msgs.len()).filter(|&i| msgs[i].is_learned()) {
            // Where this message's content sits in the full text, if it has any.
            let mut at = 0;
            let mut content = None;
            for (t, c) in &pieces {
                if *c == Some(i) {
                    content = Some((at, at + t.len()));
                }
                at += t.len();
            }
            let before: Option<String> = self.segments(&msgs[..i], true, None).ok().map(|p| p.into_iter().map(|p| p.0).collect());
            let start = match (before, content) {
                (Some(b), _) if full.starts_with(&b) => b.len(),
                // A template whose earlier turns change once an answer follows (Mistral's moves
                // the system message into the last user turn): the span starts at the content.
                (_, Some((s, _))) => s,
                _ => return Err(Error::Format(format!("chat template: message {i} does not extend the generation prompt before it"))),
            };
            let content_end = content.map_or(start, |(_, e)| e);
            let tail = &full[content_end.max(start)..];
            let stop = self.stops.iter().filter_map(|s| tail.find(s.as_str()).map(|p| p + s.len())).min().ok_or_else(|| {
                Error::Format(format!("chat template: no stop token ({}) after assistant message {i}", self.stops.join(", ")))
            })?;
            spans.push((start, content_end.max(start) + stop));
        }
        let mut segs: Vec<Segment> = Vec::new();
        let mut at = 0;
        for (text, content) in pieces {
            // Cut each piece at the spans' ends so that every segment is wholly in or out.
            let mut cuts: Vec<usize> = spans.iter().flat_map(|&(a, b)| [a, b]).filter(|&c| c > at && c < at + text.len()).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for c in cuts.into_iter().map(|c| c - at).chain([text.len()]) {
                let inside = spans.iter().any(|&(a, b)| at + from >= a && at + from < b);
                segs.push(Segment { text: text[from..c].to_string(), content: content.is_some(), learned: inside });
                from = c;
            }
            at += text.len();
        }
        if tok.pieces() == Pieces::ByteFallback {
            return encode_runs(tok, &segs);
        }
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for s in segs.iter().filter(|s| !s.text.is_empty()) {
            let piece = if s.content { tok.encode(&s.text) } else { tok.encode_chat(&s.text) };
            mask.extend(std::iter::repeat_n(s.learned, piece.len()));
            ids.extend(piece);
        }
        Ok((ids, mask))
    }

    /// Token ids asking for the next assistant message (`add_generation_prompt=True`).
    pub fn encode_prompt(&self, tok: &Tokenizer, conv: &Conversation) -> Result<Vec<u32>> {
        self.encode_prompt_with_tools(tok, conv, None)
    }

    /// [`ChatTemplate::encode_prompt`] with the functions the model may call (OpenAI's `tools`
    /// list), which the template writes where the model was trained to read them.
    pub fn encode_prompt_with_tools(&self, tok: &Tokenizer, conv: &Conversation, tools: Option<&serde_json::Value>) -> Result<Vec<u32>> {
        let pieces = self.segments(&conv.messages, true, tools)?;
        if tok.pieces() == Pieces::ByteFallback {
            let segs: Vec<Segment> = pieces.into_iter().map(|(text, c)| Segment { text, content: c.is_some(), learned: false }).collect();
            return Ok(encode_runs(tok, &segs)?.0);
        }
        let mut ids = Vec::new();
        for (text, content) in pieces {
            ids.extend(if content.is_some() { tok.encode(&text) } else { tok.encode_chat(&text) });
        }
        Ok(ids)
    }
}

/// Segments encoded as `transformers` encodes the whole rendered text, for SentencePiece
/// tokenizers: the template's special tokens (found in its markup only, never in a message's
/// content) split the text into runs, and each run is encoded in one piece, content and markup
/// together, with special-token strings in it as plain text. Segment by segment would differ:
/// a SentencePiece normalizer writes a `▁` before every text it encodes (Llama 2's
/// `[INST] Hi` would gain one before `Hi`), and a merge may span markup and content (`▁Hi`).
/// A token is learned where its first byte is (a `▁` the normalizer added: where its run starts).
fn encode_runs(tok: &Tokenizer, segs: &[Segment]) -> Result<(Vec<u32>, Vec<bool>)> {
    let hf = tok.hf();
    let mut specials: Vec<(String, u32)> = hf
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special && !t.content.is_empty())
        .map(|(id, t)| (t.content, id))
        .collect();
    // Longest first, so that a special token that contains another is matched whole.
    specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    // The full text, its learned byte ranges, and the template's special tokens (start, end, id).
    let (mut full, mut learned, mut cuts) = (String::new(), Vec::new(), Vec::new());
    for s in segs {
        let at = full.len();
        if s.learned {
            learned.push((at, at + s.text.len()));
        }
        let mut i = 0;
        while !s.content && i < s.text.len() {
            match specials.iter().find(|(t, _)| s.text[i..].starts_with(t.as_str())) {
                Some((t, id)) => {
                    cuts.push((at + i, at + i + t.len(), *id));
                    i += t.len();
                }
                None => i += s.text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        full.push_str(&s.text);
    }
    let is_learned = |b: usize| learned.iter().any(|&(s, e)| b >= s && b < e);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    let run = |from: usize, to: usize, ids: &mut Vec<u32>, mask: &mut Vec<bool>| -> Result<()> {
        if from < to {
            let enc = hf.encode(&full[from..to], false).map_err(|e| Error::Tokenizer(format!("encoding a chat turn: {e}")))?;
            for (&id, &(s, _)) in enc.get_ids().iter().zip(enc.get_offsets()) {
                ids.push(id);
                mask.push(is_learned(from + s.min(to - from - 1)));
            }
        }
        Ok(())
    };
    let mut at = 0;
    for (s, e, id) in cuts {
        run(at, s, &mut ids, &mut mask)?;
        ids.push(id);
        mask.push(is_learned(s));
        at = e;
    }
    run(at, full.len(), &mut ids, &mut mask)?;
    Ok((ids, mask))
}

/// Python's `datetime.now().strftime(fmt)` (UTC) for the codes templates use: %d %m %y %Y %b %B
/// %a %A %H %M %S %j %%; others are copied as they are.
pub fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    strftime(fmt, secs)
}

fn strftime(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // The proleptic Gregorian date of a day count (the civil-from-days formula, eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (index 3)
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('Y') => out.push_str(&year.to_string()),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// A message in OpenAI's shape, as `transformers` templates read it, with `content` given.
fn message_value(m: &Message, content: &str) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("role".into(), m.role.as_str().into());
    map.insert("content".into(), content.into());
    if !m.tool_calls.is_empty() {
        let calls: Vec<serde_json::Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                let args: serde_json::Value =
                    serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| c.function.arguments.clone().into());
                serde_json::json!({"id": c.id, "type": c.kind, "function": {"name": c.function.name, "arguments": args}})
            })
            .collect();
        map.insert("tool_calls".into(), calls.into());
    }
    if let (Role::Tool, Some(id)) = (m.role, &m.tool_call_id) {
        map.insert("tool_call_id".into(), id.clone().into());
    }
    Value::from(Serde(serde_json::Value::Object(map)))
}

/// Python's `json.dumps(v, ensure_ascii=False, indent=indent)`.
fn python_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let (item_sep, key_sep) = if indent.is_some() { (",", ": ") } else { (", ", ": ") };
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                // Python writes floats with a decimal point (1.0) and its shortest repr.
                let s = format!("{f:?}");
                out.push_str(&s);
            }
        }
        ValueKind::String => {
            out.push('"');
            for c in v.as_str().unwrap_or_default().chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map | ValueKind::Plain => {
            let keys: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            if keys.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (k, key) in keys.iter().enumerate() {
                if k > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                python_json(&Value::from(key.to_string()), indent, depth + 1, out);
                out.push_str(key_sep);
                python_json(&v.get_item(key).unwrap_or_default(), indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        _ => python_json(&Value::from(v.to_string()), indent, depth, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_python() {
        // datetime.fromtimestamp(t, timezone.utc).strftime(...) for these instants.
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        assert_eq!(strftime("%A %d %B %Y %H:%M:%S %j", 1_721_952_000 + 3_723), "Friday 26 July 2024 01:02:03 208");
        assert_eq!(strftime("%a %y-%m-%d %%", 951_782_400), "Tue 00-02-29 %");
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let v = Value::from(Serde(serde_json::json!({"a": [1, 2.5, "x\"y"], "b": {"c": null, "d": true}, "é": "ü\n"})));
        let mut out = String::new();
        python_json(&v, None, 0, &mut out);
        assert_eq!(out, r#"{"a": [1, 2.5, "x\"y"], "b": {"c": null, "d": true}, "é": "ü\n"}"#);
        let mut out = String::new();
        python_json(&Value::from(Serde(serde_json::json!({"a": [1]}))), Some(2), 0, &mut out);
        assert_eq!(out, "{\n  \"a\": [\n    1\n  ]\n}");
    }
}
