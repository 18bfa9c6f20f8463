//! Stages 1–4 on one document: normalisation, boilerplate stripping, the blocklist and the quality
//! rules, in that order (the order of the module documentation of [`crate::clean`]), then
//! [`clean_one`], which applies them and records the first rule a document fails. The quality
//! measures ([`symbol_ratio`], [`repeated_line_fraction`], [`archaic_rate`]) are public for tests
//! and tools; the progress bar helper shared by the stage is here too.

use std::path::Path;
use std::sync::LazyLock;

use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use super::read::RawDoc;
use super::{CleanConfig, Reason};
use crate::minhash;
use crate::{Error, Result};

/// Normalisation: BOM, line endings, control characters, NFC, trailing whitespace.
fn normalize(raw: &str) -> String {
    let s = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let nfc: String = s.nfc().filter(|&c| c == '\n' || c == '\t' || !c.is_control()).collect();
    let mut out = String::with_capacity(nfc.len());
    for line in nfc.split('\n') {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Cuts runs of blank lines to two, and blank lines at the start and end.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blanks = 0;
    for line in text.split('\n') {
        if line.trim().is_empty() {
            blanks += 1;
            continue;
        }
        if !out.is_empty() {
            for _ in 0..(blanks.min(2) + 1) {
                out.push('\n');
            }
        }
        blanks = 0;
        out.push_str(line);
    }
    out
}

static SCAN_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:#{3} (?:START|END): \S+ #{3}|#{4} Source: \S+|p\.\d+:\d+|\[(?:Pg|Page) ?[0-9ivxlcIVXLC]+\])\s*$")
        .expect("valid regex")
});

const LICENSE_MARKERS: [&str; 10] = [
    "spdx-license-identifier",
    "all rights reserved",
    "copyright (c)",
    "copyright ©",
    "(c) copyright",
    "permission is hereby granted",
    "licensed under the",
    "this program is free software",
    "this work is licensed under",
    "this file is distributed under",
];

/// Cuts boilerplate lines; returns the text and the bytes cut by kind.
fn strip_boilerplate(text: &str) -> (String, Vec<(&'static str, u64)>) {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut keep = vec![true; lines.len()];
    let mut cut: Vec<(&'static str, u64)> = Vec::new();
    let mut drop = |keep: &mut [bool], range: std::ops::Range<usize>, kind: &'static str| {
        let mut bytes = 0;
        for i in range {
            if keep[i] {
                keep[i] = false;
                bytes += lines[i].len() as u64 + 1;
            }
        }
        if bytes > 0 {
            match cut.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, b)) => *b += bytes,
                None => cut.push((kind, bytes)),
            }
        }
    };

    // Project Gutenberg header and footer.
    let upper = |l: &str| l.trim().to_ascii_uppercase();
    let start = lines.iter().take(600).position(|l| {
        let u = upper(l);
        (u.starts_with("***") && u.contains("START OF") && u.contains("GUTENBERG")) || u.starts_with("*END*THE SMALL PRINT")
    });
    if let Some(s) = start {
        drop(&mut keep, 0..s + 1, "gutenberg_header");
    }
    let from = start.map_or(0, |s| s + 1);
    let end = lines.iter().enumerate().skip(from).find_map(|(i, l)| {
        let u = upper(l);
        let hit = (u.starts_with("***") && u.contains("END OF") && u.contains("GUTENBERG"))
            || u.starts_with("END OF THE PROJECT GUTENBERG")
            || u.starts_with("END OF THIS PROJECT GUTENBERG")
            || u.starts_with("END OF PROJECT GUTENBERG");
        hit.then_some(i)
    });
    if let Some(e) = end {
        drop(&mut keep, e..lines.len(), "gutenberg_footer");
    }

    // Licence paragraphs among the first five paragraphs (within the first 80 lines).
    let mut i = from;
    let mut paragraphs = 0;
    while i < lines.len().min(from + 80) && paragraphs < 5 {
        if lines[i].trim().is_empty() || !keep[i] {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < lines.len() && !lines[j].trim().is_empty() {
            j += 1;
        }
        paragraphs += 1;
        let para = lines[i..j].join("\n").to_lowercase();
        if j - i <= 40 && LICENSE_MARKERS.iter().any(|m| para.contains(m)) {
            drop(&mut keep, i..j, "license_header");
        }
        i = j;
    }

    // Scan and page markers, anywhere.
    for (i, l) in lines.iter().enumerate() {
        if keep[i] && SCAN_MARKER.is_match(l) {
            drop(&mut keep, i..i + 1, "scan_markers");
        }
    }

    let mut out = String::with_capacity(text.len());
    for (l, k) in lines.iter().zip(&keep) {
        if *k {
            out.push_str(l);
            out.push('\n');
        }
    }
    (out, cut)
}

/// Characters that ordinary prose uses besides letters, digits and spaces.
fn is_prose_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | '\''
            | '"'
            | '('
            | ')'
            | '['
            | ']'
            | '-'
            | '&'
            | '_'
            | '*'
            | '/'
            | '\u{2013}'
            | '\u{2014}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
    )
}

/// Fraction of non-space characters that are symbols (not letters, digits or prose punctuation).
pub fn symbol_ratio(text: &str) -> f64 {
    let (mut total, mut sym) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        total += 1;
        if !c.is_alphanumeric() && !is_prose_punct(c) {
            sym += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        sym as f64 / total as f64
    }
}

/// Fraction of the characters of non-blank lines that sit in lines repeating an earlier line
/// (lines compared after trimming).
pub fn repeated_line_fraction(text: &str) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut dup) = (0usize, 0usize);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        total += line.len();
        if !seen.insert(line) {
            dup += line.len();
        }
    }
    if total == 0 {
        0.0
    } else {
        dup as f64 / total as f64
    }
}

/// Fraction of words spelt the early-modern way: a word-initial `v` before a consonant (`vnto`,
/// `vs`, `vpon`) or a `u` written for `v` between vowels (`haue`, `loue`, `euer`). About 3–4 % of
/// the words of a First Folio text, under 0.2 % of modern English.
pub fn archaic_rate(text: &str) -> f64 {
    let words = minhash::words(text, false);
    if words.is_empty() {
        return 0.0;
    }
    let vowel = |c: u8| matches!(c, b'a' | b'e' | b'i' | b'o' | b'u' | b'y');
    let archaic = words
        .iter()
        .filter(|w| {
            let b = w.as_bytes();
            (b.len() >= 2 && b[0] == b'v' && b[1].is_ascii_alphabetic() && !vowel(b[1]))
                || b.windows(3).any(|t| matches!(t[0], b'a' | b'e' | b'i' | b'o') && t[1] == b'u' && vowel(t[2]) && t[2] != b'y')
        })
        .count();
    archaic as f64 / words.len() as f64
}

/// The user's blocklist as one case-insensitive regex of whole terms.
pub(super) fn load_blocklist(path: &Path) -> Result<Option<Regex>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let terms: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|t| {
            let words: Vec<String> = t.split_whitespace().map(regex::escape).collect();
            let body = words.join(r"\s+");
            let word_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            let pre = if word_char(t.chars().next()) { r"\b" } else { "" };
            let post = if word_char(t.chars().last()) { r"\b" } else { "" };
            format!("{pre}{body}{post}")
        })
        .collect();
    if terms.is_empty() {
        return Ok(None);
    }
    let re = Regex::new(&format!("(?i)(?:{})", terms.join("|")))
        .map_err(|e| Error::Config(format!("{}: bad blocklist: {e}", path.display())))?;
    Ok(Some(re))
}

/// One document through stages 1–4.
pub(super) struct Item {
    pub source: String,
    pub bytes_in: u64,
    pub text: String,
    pub cut: Vec<(&'static str, u64)>,
    pub verdict: Option<(Reason, String)>,
    pub hash: [u8; 32],
    pub archaic: f64,
}

pub(super) fn clean_one(raw: RawDoc, cfg: &CleanConfig, blocklist: Option<&Regex>) -> Item {
    let mut item =
        Item { source: raw.source, bytes_in: raw.bytes, text: String::new(), cut: Vec::new(), verdict: None, hash: [0; 32], archaic: 0.0 };
    let text = match raw.text {
        Ok(t) => t,
        Err(msg) => {
            item.verdict = Some((Reason::Unreadable, msg));
            return item;
        }
    };
    let mut text = normalize(&text);
    if cfg.strip_boilerplate {
        let (t, cut) = strip_boilerplate(&text);
        text = t;
        item.cut = cut;
    }
    item.text = collapse_blank_lines(&text);
    let t = &item.text;
    item.verdict = if t.trim().is_empty() {
        Some((Reason::Empty, "no text left after normalisation and boilerplate stripping".into()))
    } else if let Some(m) = blocklist.and_then(|re| re.find(t)) {
        Some((Reason::Blocklist, format!("matched {:?}", m.as_str())))
    } else {
        let n = t.split_whitespace().count();
        let sym = symbol_ratio(t);
        let rep = repeated_line_fraction(t);
        if n < cfg.min_words {
            Some((Reason::TooShort, format!("{n} words < {}", cfg.min_words)))
        } else if sym > cfg.max_symbol_ratio {
            Some((Reason::SymbolRatio, format!("symbol ratio {sym:.3} > {}", cfg.max_symbol_ratio)))
        } else if rep > cfg.max_repeated_line_fraction {
            Some((Reason::RepeatedLines, format!("repeated-line fraction {rep:.3} > {}", cfg.max_repeated_line_fraction)))
        } else {
            None
        }
    };
    if item.verdict.is_none() {
        item.hash = Sha256::digest(item.text.as_bytes()).into();
        item.archaic = archaic_rate(&item.text);
    }
    item
}

pub(super) fn bar(show: bool, len: u64, template: &str, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    pb.set_message(msg);
    pb
}
