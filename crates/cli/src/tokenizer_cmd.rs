//! `chatforge tokenizer ...`: train a byte-level BPE, and look at what it does to text.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use chatforge_data::tokenizer::{Tokenizer, MIN_VOCAB_SIZE};

#[derive(clap::Subcommand, Debug)]
pub enum TokenizerCmd {
    /// Train a byte-level BPE tokenizer on text files and save it as tokenizer.json.
    Train {
        /// Text files, or folders searched recursively for .txt files.
        #[arg(long, num_args = 1.., required_unless_present = "bytes")]
        input: Vec<PathBuf>,
        /// Vocabulary size, counting the 256 bytes and the 3 special tokens (at least 259).
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        /// Where to write the tokenizer (e.g. runs/R/tokenizer.json).
        #[arg(long)]
        out: PathBuf,
        /// Skip training: one token per byte (vocab 259), for character-level experiments.
        #[arg(long, conflicts_with = "input")]
        bytes: bool,
    },
    /// Print the token ids of a text, separated by spaces.
    Encode {
        #[arg(long)]
        tokenizer: PathBuf,
        /// The text (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Read the text from this file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Recognise <|endoftext|>, <|im_start|>, <|im_end|> as special tokens
        /// (by default they are encoded as plain text).
        #[arg(long)]
        special: bool,
    },
    /// Print the text of token ids.
    Decode {
        #[arg(long)]
        tokenizer: PathBuf,
        /// Token ids, e.g. `decode --tokenizer t.json 72 101 108`.
        #[arg(required = true)]
        ids: Vec<u32>,
        /// Leave special tokens out instead of printing them as text.
        #[arg(long)]
        skip_special: bool,
    },
    /// Show how a text splits into tokens (colours on a terminal, `[a|b|c]` otherwise).
    Show {
        #[arg(long)]
        tokenizer: PathBuf,
        /// The text (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Read the text from this file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// No colours: list the tokens as `[str|aw|berry]`.
        #[arg(long)]
        plain: bool,
        /// Recognise special-token strings as special tokens.
        #[arg(long)]
        special: bool,
    },
}

pub fn run(cmd: TokenizerCmd) -> anyhow::Result<()> {
    match cmd {
        TokenizerCmd::Train { input, vocab_size, out, bytes } => train(&input, vocab_size, &out, bytes),
        TokenizerCmd::Encode { tokenizer, text, file, special } => {
            let tok = Tokenizer::load(&tokenizer)?;
            let text = read_text(text, file.as_deref())?;
            let ids = if special { tok.encode_chat(&text) } else { tok.encode(&text) };
            let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            println!("{}", ids.join(" "));
            Ok(())
        }
        TokenizerCmd::Decode { tokenizer, ids, skip_special } => {
            let tok = Tokenizer::load(&tokenizer)?;
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= tok.vocab_size()) {
                bail!("id {bad} is outside the vocabulary (0..{})", tok.vocab_size());
            }
            println!("{}", tok.decode(&ids, skip_special));
            Ok(())
        }
        TokenizerCmd::Show { tokenizer, text, file, plain, special } => {
            let tok = Tokenizer::load(&tokenizer)?;
            let text = read_text(text, file.as_deref())?;
            let ids = if special { tok.encode_chat(&text) } else { tok.encode(&text) };
            // Colour only for a person at a terminal who has not asked for none.
            let colour = !plain && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            println!("{}", tok.show_ids(&ids, colour));
            Ok(())
        }
    }
}

/// Trains (or builds the bytes tokenizer), reports size and time, and saves.
fn train(input: &[PathBuf], vocab_size: usize, out: &Path, bytes: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let tok = if bytes {
        Tokenizer::bytes()
    } else {
        let files = text_files(input)?;
        let size: u64 = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
        eprintln!("training a {vocab_size}-token BPE on {} files ({:.1} MB)", files.len(), size as f64 / 1e6);
        Tokenizer::train_from_files(&files, vocab_size, true)?
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tok.save(out)?;
    println!("vocab size {} in {:.1} s, saved to {}", tok.vocab_size(), start.elapsed().as_secs_f64(), out.display());
    if !bytes && tok.vocab_size() < vocab_size {
        eprintln!(
            "warning: asked for {vocab_size} tokens, the text only supports {} merges ({} tokens); give it more text",
            tok.vocab_size() - MIN_VOCAB_SIZE,
            tok.vocab_size()
        );
    }
    println!("{}", tok.show_plain("How many r's are in strawberry?"));
    Ok(())
}

/// The files named, and the .txt files under the folders named, sorted within each folder.
fn text_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            collect_txt(input, &mut files)?;
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        bail!("no .txt files in {}", inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(files)
}

/// Appends the .txt files under `dir` (recursively, in name order) to `files`.
fn collect_txt(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_txt(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "txt") {
            files.push(path);
        }
    }
    Ok(())
}

/// The text argument, or the contents of `--file`.
fn read_text(text: Option<String>, file: Option<&Path>) -> anyhow::Result<String> {
    match (text, file) {
        (Some(text), _) => Ok(text),
        (None, Some(file)) => std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display())),
        (None, None) => bail!("give a text or --file"),
    }
}
