//! Reading the input: which files are documents (by name, with their compression), and each file
//! decompressed and decoded into raw documents (one per `.txt`, one per JSONL line), in path order.
//! A failure to read is kept as the document's error, for the `unreadable` rule, not raised.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Codec {
    Plain,
    Gz,
    Zst,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Text,
    Jsonl,
}

/// How to read a file, from its name; `None` for files that are not documents.
fn classify(name: &str) -> Option<(Kind, Codec)> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.split('.').next().unwrap_or("");
    if ["copying", "license", "licence", "notice", "attribution"].contains(&stem) {
        return None;
    }
    let (inner, codec) = if let Some(s) = lower.strip_suffix(".gz") {
        (s, Codec::Gz)
    } else if let Some(s) = lower.strip_suffix(".zst") {
        (s, Codec::Zst)
    } else {
        (lower.as_str(), Codec::Plain)
    };
    if inner.ends_with(".txt") {
        Some((Kind::Text, codec))
    } else if inner.ends_with(".jsonl") {
        Some((Kind::Jsonl, codec))
    } else {
        None
    }
}

/// A document as read, before cleaning: its text or why it could not be read.
pub(super) struct RawDoc {
    pub source: String,
    pub bytes: u64,
    pub text: std::result::Result<String, String>,
}

fn decompress(path: &Path, codec: Codec) -> std::result::Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut reader: Box<dyn Read> = match codec {
        Codec::Plain => Box::new(file),
        Codec::Gz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Codec::Zst => Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| format!("zstd: {e}"))?),
    };
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).map_err(|e| match codec {
        Codec::Plain => e.to_string(),
        Codec::Gz => format!("gzip: {e}"),
        Codec::Zst => format!("zstd: {e}"),
    })?;
    Ok(buf)
}

fn utf8(bytes: Vec<u8>) -> std::result::Result<String, String> {
    String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

pub(super) fn read_file(path: &Path, rel: &str, kind: Kind, codec: Codec) -> Vec<RawDoc> {
    let on_disk = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bytes = match decompress(path, codec) {
        Ok(b) => b,
        Err(msg) => return vec![RawDoc { source: rel.to_string(), bytes: on_disk, text: Err(msg) }],
    };
    match kind {
        Kind::Text => {
            let n = bytes.len() as u64;
            vec![RawDoc { source: rel.to_string(), bytes: n, text: utf8(bytes) }]
        }
        Kind::Jsonl => bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(i, line)| {
                let text = std::str::from_utf8(line)
                    .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))
                    .and_then(|l| serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("bad JSON: {e}")))
                    .and_then(|v| match v.get("text") {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        _ => Err("no string field \"text\"".to_string()),
                    });
                let bytes = match &text {
                    Ok(t) => t.len() as u64,
                    Err(_) => line.len() as u64,
                };
                RawDoc { source: format!("{rel}:{}", i + 1), bytes, text }
            })
            .collect(),
    }
}

/// A file to read: its path, its path relative to the input (the documents' `source`), and how.
pub(super) type InputFile = (PathBuf, String, Kind, Codec);

/// The files under `input` in path order: those to read, and the relative paths of those skipped.
/// Files under `exclude` (the output folder, should it lie inside the input) are passed over.
pub(super) fn list_files(input: &Path, exclude: &Path) -> Result<(Vec<InputFile>, Vec<String>)> {
    let exclude = exclude.canonicalize().ok();
    let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut consider = |path: PathBuf, rel: String| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match classify(&name) {
            Some((kind, codec)) => files.push((path, rel, kind, codec)),
            None => skipped.push(rel),
        }
    };
    if meta.is_file() {
        let rel = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        consider(input.to_path_buf(), rel);
    } else {
        let walk = walkdir::WalkDir::new(input).sort_by_file_name().into_iter().filter_entry(|e| {
            let own = exclude.as_ref().zip(e.path().canonicalize().ok());
            !own.is_some_and(|(out, p)| p.starts_with(out))
        });
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(input).to_path_buf();
                Error::io(&path, e.into())
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(input).unwrap_or(entry.path());
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            consider(entry.path().to_path_buf(), rel);
        }
    }
    Ok((files, skipped))
}
