//! The tokenizer: byte-level BPE, as GPT-2 introduced it, trained and run by HF `tokenizers`.
//!
//! Text becomes UTF-8 bytes; every byte is one of the first 256 tokens, so any string encodes
//! without an "unknown" token. Training then merges the most frequent adjacent pair of tokens,
//! again and again, until the vocabulary has the requested size. Before merging, a regex splits
//! text into words, numbers, punctuation runs and whitespace (the ByteLevel pre-tokenizer), so
//! merges never cross those boundaries. There is no normaliser: what you encode is what you get back.
//!
//! Three special tokens sit at ids 0, 1, 2 (the trainer places them before the 256 bytes):
//! `<|endoftext|>` separates documents, `<|im_start|>` and `<|im_end|>` frame the turns of the
//! ChatML chat template.
//!
//! Special tokens and untrusted text. `encode` treats text as data: the string `<|im_end|>` typed
//! by a user becomes ordinary byte-level tokens (`<|`, `im`, `_end`, `|>`), never the special
//! token, so no one can close a turn or forge a system message by typing it. (Left to itself,
//! `tokenizers` would match added special tokens anywhere in the input, even with
//! `add_special_tokens = false`; we switch that off with `set_encode_special_tokens(true)`.)
//! `encode_chat` recognises the special-token strings; use it only on text the program wrote
//! itself, such as the template's own markers, and encode user content with `encode`.
//!
//! The file format is HF's `tokenizer.json`: Python `tokenizers` and `transformers` load it.
//!
//! An imported model (`chatforge import`) brings its own tokenizer, special tokens
//! and chat template: `tokenizer_config.json` beside `tokenizer.json` holds its `chat_template`,
//! `bos_token`, `eos_token` and `chatforge_stop_tokens` (the tokens that end a turn). Then
//! [`Tokenizer::template`] is the model's [`ChatTemplate`], and `chat::encode_prompt` and
//! `chat::encode_for_training` follow it instead of ChatML; [`Tokenizer::eot_id`] is its EOS and
//! [`Tokenizer::im_end_id`] its end of turn. Its tokenizer may be byte-level (GPT-2's, as ours:
//! Llama 3, Qwen, SmolLM2) or SentencePiece's BPE with byte fallback (Llama 2, Mistral,
//! TinyLlama): tokens are UTF-8 text with `▁` for a space, and a character the vocabulary lacks
//! is written as its UTF-8 bytes, tokens `<0x00>` .. `<0xFF>` ([`Pieces`]). `tokenizers` encodes
//! and decodes both; what differs here is only [`Tokenizer::token_bytes`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::template::ChatTemplate;
use crate::{Error, Result};

/// The file beside `tokenizer.json` that holds an imported model's chat template.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Separates documents; the model learns to emit it when a text is finished.
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Opens a chat turn: `<|im_start|>user\n...`.
pub const IM_START: &str = "<|im_start|>";
/// Closes a chat turn; generation stops when the assistant emits it.
pub const IM_END: &str = "<|im_end|>";
/// The special tokens, in id order (0, 1, 2 in a tokenizer trained here).
pub const SPECIAL_TOKENS: [&str; 3] = [ENDOFTEXT, IM_START, IM_END];
/// The smallest vocabulary: the 3 special tokens and the 256 bytes, no merges.
pub const MIN_VOCAB_SIZE: usize = SPECIAL_TOKENS.len() + 256;

/// A byte-level BPE tokenizer with the three chatforge special tokens.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    /// Special-token strings in the input are plain text (see the module docs).
    plain: tokenizers::Tokenizer,
    /// The same tokenizer, but special-token strings become special tokens.
    chat: tokenizers::Tokenizer,
    /// Cached ids of the special tokens.
    eot: u32,
    im_start: u32,
    im_end: u32,
    /// An imported model's own chat template (`None`: our ChatML) and the ids that end a turn.
    template: Option<ChatTemplate>,
    stops: Vec<u32>,
    pieces: Pieces,
}

/// How a vocabulary's tokens stand for bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pieces {
    /// GPT-2's byte-level BPE: each character of a token is one byte (`BYTE_CHARS`).
    ByteLevel,
    /// SentencePiece's BPE with byte fallback: a token is UTF-8 text with `▁` (U+2581) for a
    /// space, or one byte written `<0xHH>`.
    ByteFallback,
}

impl Tokenizer {
    /// Trains a byte-level BPE on in-memory texts. `vocab_size` counts the 3 special tokens and
    /// the 256 bytes, so it must be at least 259 (259 gives [`Tokenizer::bytes`]). A corpus too
    /// small to supply enough distinct merges gives a smaller vocabulary; check `vocab_size()`.
    pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send,
        S: AsRef<str> + Send,
    {
        let (mut tok, mut trainer) = untrained(vocab_size, false)?;
        tok.train(&mut trainer, texts.into_iter()).map_err(|e| Error::Tokenizer(format!("training failed: {e}")))?;
        Tokenizer::from_hf(tok)
    }

    /// Trains on text files, streaming them line by line; with `show_progress`, draws progress
    /// bars on stderr (reading, counting pairs, merging).
    pub fn train_from_files(files: &[PathBuf], vocab_size: usize, show_progress: bool) -> Result<Tokenizer> {
        // `tokenizers` reports a missing file without its name; check first to name it.
        for file in files {
            std::fs::metadata(file).map_err(|e| Error::io(file, e))?;
        }
        let (mut tok, mut trainer) = untrained(vocab_size, show_progress)?;
        let names = files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
        tok.train_from_files(&mut trainer, names)
            .map_err(|e| Error::Tokenizer(format!("training on {} files failed: {e}", files.len())))?;
        Tokenizer::from_hf(tok)
    }

    /// The pure byte tokenizer: 256 byte tokens and the 3 specials, no merges. One token per
    /// byte, for character-level experiments. Identical to training with `vocab_size = 259`.
    pub fn bytes() -> Tokenizer {
        Tokenizer::train(std::iter::empty::<&str>(), MIN_VOCAB_SIZE).expect("training with no merges cannot fail")
    }

    /// Loads a `tokenizer.json`. Errors name the path: a missing file, a file that is not a
    /// tokenizer, or a tokenizer that is not byte-level or lacks the special tokens.
    /// With a `tokenizer_config.json` beside it that has a `chat_template`, the tokenizer
    /// is an imported model's (see the module docs).
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let json = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let named = |e| match e {
            Error::Tokenizer(msg) | Error::Format(msg) => Error::Format(format!("{}: {msg}", path.display())),
            other => other,
        };
        let cfg_path = path.with_file_name(TOKENIZER_CONFIG);
        if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", cfg_path.display())))?;
            if cfg.get("chat_template").is_some() {
                let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes())
                    .map_err(|e| Error::Format(format!("{}: not a tokenizer.json: {e}", path.display())))?;
                return Tokenizer::imported(hf, &cfg).map_err(|e| match e {
                    Error::Tokenizer(msg) | Error::Format(msg) => Error::Format(format!("{}: {msg}", cfg_path.display())),
                    other => other,
                });
            }
        }
        Tokenizer::from_json(&json).map_err(named)
    }

    /// An imported model's tokenizer: its `tokenizer.json` and its `tokenizer_config.json`
    /// (`chat_template`, `bos_token`, `eos_token`, and our `chatforge_stop_tokens`).
    pub fn imported(mut plain: tokenizers::Tokenizer, cfg: &serde_json::Value) -> Result<Tokenizer> {
        let pieces = pieces_of(&plain)?;
        // A token may be written as a string or as an AddedToken object {"content": ...}.
        let token = |key: &str| -> Option<String> {
            let v = cfg.get(key)?;
            v.as_str().map(String::from).or_else(|| v.get("content").and_then(|c| c.as_str()).map(String::from))
        };
        let source = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            // A list of named templates: the "default" one.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .ok_or_else(|| Error::Format("chat_template lists no \"default\" template".into()))?
                .to_string(),
            _ => return Err(Error::Format("chat_template is not a string".into())),
        };
        let eos = token("eos_token").ok_or_else(|| Error::Format("no eos_token".into()))?;
        let bos = token("bos_token").unwrap_or_default();
        let mut stop_names: Vec<String> = cfg
            .get("chatforge_stop_tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if !stop_names.contains(&eos) {
            stop_names.push(eos.clone());
        }
        let id = |name: &str| {
            plain.token_to_id(name).ok_or_else(|| Error::Tokenizer(format!("special token {name:?} is not in the vocabulary")))
        };
        let stops = stop_names.iter().map(|n| id(n)).collect::<Result<Vec<u32>>>()?;
        let eot = id(&eos)?;
        let im_end = stops[0];
        let im_start = plain.token_to_id(IM_START).unwrap_or(eot);
        let template = ChatTemplate::new(&source, &bos, &eos, stop_names)?;
        let mut chat = plain.clone();
        chat.set_encode_special_tokens(false);
        plain.set_encode_special_tokens(true);
        Ok(Tokenizer { plain, chat, eot, im_start, im_end, template: Some(template), stops, pieces })
    }

    /// The imported model's chat template (`None`: ChatML).
    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Parses the contents of a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| Error::Format(format!("not a tokenizer.json: {e}")))?;
        Tokenizer::from_hf(tok)
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        self.plain.to_string(true).expect("a tokenizer always serialises")
    }

    /// Saves as `tokenizer.json`, atomically: a crash leaves the old file or the new one, never half.
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(chatforge_rundir::fs::write_atomic(path, self.to_json().as_bytes())?)
    }

    /// Number of tokens, special tokens included. Ids run from 0 to `vocab_size() - 1`.
    pub fn vocab_size(&self) -> usize {
        self.plain.get_vocab_size(true)
    }

    /// The id of a token, given as it is stored: a special token (`"<|im_end|>"`) or a byte-level
    /// string, in which a space is written `Ġ` (`"Ġthe"` is " the").
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.plain.token_to_id(token)
    }

    /// The stored string of a token (byte-level: `Ġ` for space, `Ċ` for newline, ...).
    /// See [`Tokenizer::token_bytes`] for the bytes it stands for.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.plain.id_to_token(id)
    }

    /// The raw bytes a token stands for; a token may hold part of a UTF-8 character.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let token = self.id_to_token(id)?;
        if self.pieces == Pieces::ByteFallback {
            return Some(match fallback_byte(&token) {
                Some(b) => vec![b],
                None => token.replace('\u{2581}', " ").into_bytes(),
            });
        }
        // Map each character back to its byte, as the ByteLevel decoder does; a token that is
        // not made of byte characters (a special token written with other symbols) stays UTF-8.
        let bytes: Option<Vec<u8>> = token.chars().map(|c| CHAR_TO_BYTE.get(&c).copied()).collect();
        Some(bytes.unwrap_or_else(|| token.into_bytes()))
    }

    /// Encodes text as data: special-token strings inside it stay ordinary text.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        encode_with(&self.plain, text)
    }

    /// Encodes trusted text in which `<|endoftext|>`, `<|im_start|>` and `<|im_end|>` are the
    /// special tokens. Never pass user-written text here (see the module docs).
    pub fn encode_chat(&self, text: &str) -> Vec<u32> {
        encode_with(&self.chat, text)
    }

    /// Encodes many texts in parallel (rayon), as `encode` does one.
    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        let encodings = self.plain.encode_batch_fast(texts.to_vec(), false).expect("a byte-level BPE encodes any string");
        encodings.into_iter().map(|e| e.get_ids().to_vec()).collect()
    }

    /// Decodes ids to text. With `skip_special`, special tokens are left out; otherwise they
    /// appear as their text (`<|im_end|>`). Bytes that do not form valid UTF-8 (a character cut
    /// in half) and ids outside the vocabulary (say, the padding rows of a model whose vocabulary
    /// was rounded up) become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let n = self.vocab_size() as u32;
        let mut text = String::new();
        // Split at unknown ids, which `tokenizers` would silently drop, and mark each with U+FFFD.
        for (i, run) in ids.split(|&id| id >= n).enumerate() {
            if i > 0 {
                text.push(char::REPLACEMENT_CHARACTER);
            }
            let part = self.plain.decode(run, skip_special).expect("the ByteLevel decoder cannot fail");
            text.push_str(&part);
        }
        text
    }

    /// Id of `<|endoftext|>`.
    pub fn eot_id(&self) -> u32 {
        self.eot
    }

    /// Id of `<|im_start|>`.
    pub fn im_start_id(&self) -> u32 {
        self.im_start
    }

    /// Id of `<|im_end|>`.
    /// The tokens that end a chat answer: `<|im_end|>` and `<|endoftext|>` (an imported
    /// model's: its end-of-turn tokens and EOS).
    pub fn chat_stop_ids(&self) -> Vec<u32> {
        if self.template.is_some() {
            return self.stops.clone();
        }
        vec![self.im_end_id(), self.eot_id()]
    }
    pub fn im_end_id(&self) -> u32 {
        self.im_end
    }

    /// Whether `id` is one of the special tokens.
    pub fn is_special(&self, id: u32) -> bool {
        if self.template.is_some() {
            return self.plain.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special);
        }
        id == self.eot || id == self.im_start || id == self.im_end
    }

    /// How the vocabulary's tokens stand for bytes (byte-level, or SentencePiece's byte fallback).
    pub fn pieces(&self) -> Pieces {
        self.pieces
    }

    /// The underlying HF tokenizer (special-token strings in input are plain text).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.plain
    }

    /// `text` with each token on an alternating ANSI background colour, then a line with the
    /// token count and characters per token. Shows why "how many r's in strawberry?" is hard:
    /// the model sees `str|aw|berry`, not letters.
    pub fn show(&self, text: &str) -> String {
        self.show_ids(&self.encode(text), true)
    }

    /// The same as [`Tokenizer::show`] without colours, for files and pipes: `[str|aw|berry]`.
    pub fn show_plain(&self, text: &str) -> String {
        self.show_ids(&self.encode(text), false)
    }

    /// Shows already-encoded ids, in colour or plain.
    pub fn show_ids(&self, ids: &[u32], colour: bool) -> String {
        let pieces: Vec<String> = ids.iter().map(|&id| self.piece(id, !colour)).collect();
        let mut out = if colour { coloured(&pieces) } else { format!("[{}]", pieces.join("|")) };
        let chars = self.decode(ids, false).chars().count();
        let per_token = if ids.is_empty() { 0.0 } else { chars as f64 / ids.len() as f64 };
        let _ = write!(out, "\n{} tokens, {chars} characters, {per_token:.2} characters/token", ids.len());
        out
    }

    /// How one token looks on its own: its text with control characters escaped, or `\xNN`
    /// escapes for bytes that are only part of a UTF-8 character (an emoji is often 2 to 4
    /// tokens). For the `plain` listing, `\n`, `|` and `\` are escaped too.
    fn piece(&self, id: u32, plain: bool) -> String {
        let Some(bytes) = self.token_bytes(id) else {
            return format!("<unknown id {id}>");
        };
        match std::str::from_utf8(&bytes) {
            Ok(s) => escape(s, plain),
            Err(_) => bytes.iter().map(|b| format!("\\x{b:02X}")).collect(),
        }
    }

    /// Wraps a `tokenizers::Tokenizer`, after checking it is one we can use.
    fn from_hf(mut plain: tokenizers::Tokenizer) -> Result<Tokenizer> {
        check_byte_level(&plain)?;
        let special_id = |name: &str| special_token_id(&plain, name).ok_or_else(|| Error::Tokenizer(format!("no special token {name}")));
        let (eot, im_start, im_end) = (special_id(ENDOFTEXT)?, special_id(IM_START)?, special_id(IM_END)?);
        let mut chat = plain.clone();
        chat.set_encode_special_tokens(false);
        plain.set_encode_special_tokens(true);
        Ok(Tokenizer { plain, chat, eot, im_start, im_end, template: None, stops: vec![], pieces: Pieces::ByteLevel })
    }
}

/// An empty byte-level BPE tokenizer and a trainer that fills it.
fn untrained(vocab_size: usize, show_progress: bool) -> Result<(tokenizers::Tokenizer, TrainerWrapper)> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(Error::Tokenizer(format!("vocab_size {vocab_size} is below {MIN_VOCAB_SIZE} (3 special tokens + 256 bytes)")));
    }
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    // No normaliser. Pre-tokenizer: bytes to printable characters, then GPT-2's split regex.
    let byte_level = ByteLevel::default().add_prefix_space(false).use_regex(true);
    tok.with_pre_tokenizer(Some(byte_level));
    // The decoder maps the byte characters back to bytes (its options only matter for offsets).
    tok.with_decoder(Some(byte_level));
    let specials = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .special_tokens(specials)
        // All 256 bytes, whether or not the corpus has them: nothing is ever unknown.
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
        .show_progress(show_progress)
        .build();
    Ok((tok, trainer.into()))
}

/// Encodes with one of our two `tokenizers` instances; no post-processor specials are added.
fn encode_with(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    // `from_hf` checked that every byte has a token, so encoding cannot fail.
    let encoding = tok.encode_fast(text, false).expect("a byte-level BPE encodes any string");
    encoding.get_ids().to_vec()
}

/// The id of `name` if it is an added token marked special.
fn special_token_id(tok: &tokenizers::Tokenizer, name: &str) -> Option<u32> {
    let id = tok.token_to_id(name)?;
    let decoder = tok.get_added_tokens_decoder();
    decoder.get(&id).filter(|t| t.special).map(|_| id)
}

/// The byte a SentencePiece byte-fallback token stands for: `<0x0A>` is 0x0A.
fn fallback_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok()).flatten()
}

/// Which kind of tokenizer an imported `tok` is, after checking that `encode` and `decode`
/// cannot fail and round-trip any string: byte-level, or SentencePiece with byte fallback
/// (all 256 `<0xHH>` tokens in the vocabulary). Anything else is refused, naming what is missing.
fn pieces_of(tok: &tokenizers::Tokenizer) -> Result<Pieces> {
    let Err(byte_level) = check_byte_level(tok) else { return Ok(Pieces::ByteLevel) };
    let missing = (0..=255u8).filter(|b| tok.token_to_id(&format!("<0x{b:02X}>")).is_none()).count();
    if missing > 0 {
        return Err(Error::Tokenizer(format!(
            "{byte_level}; nor is it SentencePiece with byte fallback: {missing} of the 256 tokens <0x00>..<0xFF> are missing"
        )));
    }
    check_round_trip(tok)?;
    Ok(Pieces::ByteFallback)
}

/// Checks that `tok` is byte-level with contiguous ids, so that `encode` and `decode` cannot fail
/// and round-trip any string.
fn check_byte_level(tok: &tokenizers::Tokenizer) -> Result<()> {
    let missing = BYTE_CHARS.iter().filter(|c| tok.token_to_id(&c.to_string()).is_none()).count();
    if missing > 0 {
        return Err(Error::Tokenizer(format!("not a byte-level tokenizer: {missing} of the 256 byte tokens are missing")));
    }
    check_round_trip(tok)
}

/// Checks that `tok`'s ids are contiguous and that a string of every kind of character decodes
/// back as itself.
fn check_round_trip(tok: &tokenizers::Tokenizer) -> Result<()> {
    let n = tok.get_vocab_size(true) as u32;
    if let Some(hole) = (0..n).find(|&id| tok.id_to_token(id).is_none()) {
        return Err(Error::Tokenizer(format!("ids are not contiguous: no token has id {hole}")));
    }
    let probe = "Hi there!\n\t  ÉCOLE café 中文 🙂 x=1+2;\r\n\0";
    let round_trip = tok
        .encode_fast(probe, false)
        .and_then(|e| tok.decode(e.get_ids(), false))
        .map_err(|e| Error::Tokenizer(format!("cannot encode a test string: {e}")))?;
    if round_trip != probe {
        return Err(Error::Tokenizer(format!("encode and decode do not round-trip: {probe:?} decodes back as {round_trip:?}")));
    }
    Ok(())
}

/// GPT-2's byte-to-character table: the ByteLevel pre-tokenizer shows each byte as a printable
/// character. Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, ...)
/// take the characters from U+0100 on, in byte order, so space (0x20) becomes `Ġ` (U+0120).
static BYTE_CHARS: LazyLock<[char; 256]> = LazyLock::new(|| {
    let mut table = ['\0'; 256];
    let mut next = 256;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100..U+0143 are characters")
        };
    }
    table
});

/// The inverse of `BYTE_CHARS`.
static CHAR_TO_BYTE: LazyLock<HashMap<char, u8>> = LazyLock::new(|| BYTE_CHARS.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect());

/// Background colours (xterm-256) to cycle through, with black text on top.
const BACKGROUNDS: [u8; 4] = [153, 223, 194, 225];

/// Each piece on its own background colour. Line breaks are shown as `↵` and the colour is
/// closed before the real newline, so it does not bleed to the end of the line.
fn coloured(pieces: &[String]) -> String {
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        let on = format!("\x1b[38;5;16;48;5;{}m", BACKGROUNDS[i % BACKGROUNDS.len()]);
        let off = "\x1b[0m";
        for (j, line) in piece.split('\n').enumerate() {
            if j > 0 {
                let _ = writeln!(out, "{on}↵{off}");
            }
            if !line.is_empty() {
                let _ = write!(out, "{on}{line}{off}");
            }
        }
    }
    out
}

/// Makes control characters visible (`\t`, `\r`, `\u{1b}`); when `plain`, also `\n` and the
/// characters the `[a|b]` listing uses, `|` and `\`.
fn escape(s: &str, plain: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' if plain => out.push_str("\\n"),
            '|' | '\\' if plain => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push('\n'),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_chars_match_gpt2() {
        assert_eq!(BYTE_CHARS[b'a' as usize], 'a');
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_CHARS[0], 'Ā');
        let ours: HashSet<char> = BYTE_CHARS.iter().copied().collect();
        let theirs: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn escapes_controls() {
        assert_eq!(escape("a\tb\nc\u{1b}|\\", true), "a\\tb\\nc\\u{1b}\\|\\\\");
        assert_eq!(escape("a\nb|\\", false), "a\nb|\\");
    }
}
